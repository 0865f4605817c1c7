"""Model-agnostic language-model machinery: corpora, tokenizer, training, sampling.

    from course.lm import train, sample_text
    result = train(MyModel, "cpu", "stdlib", callback=print)    # or "cpu-tiny", "gpu"
    print(sample_text(result.model, "def ", 200))

Nothing here knows any particular model: a class that follows `course.lm.protocol` will do.
The command line is `python -m course.lm train|sample|bench --help`.
"""

from course.lm.config import ModelConfig
from course.lm.corpus import Corpus, load_corpus
from course.lm.device import pick_device
from course.lm.errors import (
    CheckpointError,
    CorpusError,
    LMError,
    SamplingError,
    TrainingDiverged,
)
from course.lm.presets import PRESETS, TrainConfig, get_preset
from course.lm.protocol import InterfaceError, check_model_interface
from course.lm.report import loss_figure
from course.lm.sample import (
    check_sampling_options,
    filter_logits,
    generate,
    next_token,
    sample_text,
)
from course.lm.tokenizer import ByteTokenizer
from course.lm.train import StopTraining, TrainResult, evaluate, train

__all__ = [
    "PRESETS",
    "SamplingError",
    "TrainingDiverged",
    "ByteTokenizer",
    "CheckpointError",
    "Corpus",
    "CorpusError",
    "InterfaceError",
    "LMError",
    "ModelConfig",
    "StopTraining",
    "TrainConfig",
    "TrainResult",
    "check_model_interface",
    "check_sampling_options",
    "evaluate",
    "filter_logits",
    "generate",
    "get_preset",
    "load_corpus",
    "loss_figure",
    "next_token",
    "pick_device",
    "sample_text",
    "train",
]
