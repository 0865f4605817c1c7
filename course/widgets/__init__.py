"""Widgets that run the learner's own functions (ipywidgets + matplotlib).

Every explorer builds and updates without a display (its state is inspectable, which is
how the tests drive it) and shows nothing under `nbgrader autograde`, where
`NBGRADER_EXECUTION` is set.
"""

from course.widgets.attention import AttentionExplorer, attention_explorer
from course.widgets.base import Explorer, is_grading
from course.widgets.masking import MaskingExplorer, masking_explorer
from course.widgets.positions import PositionsExplorer, positions_explorer
from course.widgets.softmax import SoftmaxExplorer, softmax_explorer

__all__ = [
    "Explorer",
    "is_grading",
    "SoftmaxExplorer",
    "softmax_explorer",
    "AttentionExplorer",
    "attention_explorer",
    "MaskingExplorer",
    "masking_explorer",
    "PositionsExplorer",
    "positions_explorer",
]

from course.widgets.heads import HeadsExplorer, heads_explorer  # noqa: E402

__all__ += ["HeadsExplorer", "heads_explorer"]

from course.widgets.normalization import (  # noqa: E402
    NormalizationExplorer,
    normalization_explorer,
)

__all__ += ["NormalizationExplorer", "normalization_explorer"]
from course.widgets.kv_cache import KVCacheExplorer, kv_cache_explorer  # noqa: E402

__all__ += ["KVCacheExplorer", "kv_cache_explorer"]
