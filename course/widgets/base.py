"""The widget toolkit: controls on the left, a matplotlib figure and readouts on the right.

Figures are drawn with matplotlib's object API onto an Agg canvas and shown as PNG in an
`ipywidgets.Image`. That avoids depending on which matplotlib backend the front end has
(an inline backend inside an Output widget shows nothing in some front ends), and it makes
each update observable: the image's bytes change when the picture does.
"""

from __future__ import annotations

import html
import io
import os
import traceback
from collections.abc import Callable

import ipywidgets as W
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# ipywidgets gives HTML the line height of one control row (28px): prose and readouts that
# wrap look double-spaced. Scoped to the explorers.
_STYLE = "<style>.course-explorer .widget-html-content { line-height: 1.45; }</style>"


def is_grading() -> bool:
    """True under `nbgrader autograde`/`validate`, where widgets must not render or block."""
    return bool(os.environ.get("NBGRADER_EXECUTION"))


def figure_png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


class Explorer:
    """Base class: subclasses declare `controls()`, `compute()` and `draw(fig, state)`.

    `update()` recomputes on every control change. An exception from the learner's code
    is shown in the widget (as text, with the failing line) instead of killing it.
    """

    figsize = (8.0, 3.2)

    def __init__(self) -> None:
        self.state: dict = {}
        self.error: str | None = None
        self.updates = 0
        self.image = W.Image(format="png", layout=W.Layout(width="100%", max_width="760px"))
        self.readout = W.HTML()
        # Controls keep their own width (sliders are 340px); the picture takes the rest.
        self.controls_box = W.VBox(
            self.controls(), layout=W.Layout(min_width="260px", max_width="380px", flex="0 0 auto")
        )
        for control in self.controls_box.children:
            if hasattr(control, "value"):
                control.observe(lambda _change: self.update(), names="value")
        output = W.VBox([self.image, self.readout], layout=W.Layout(flex="1 1 0%", min_width="0"))
        style = W.HTML(_STYLE, layout=W.Layout(display="none"))
        self.widget = W.HBox([self.controls_box, output, style])
        self.widget.add_class("course-explorer")
        self.update()

    def controls(self) -> list[W.Widget]:
        raise NotImplementedError

    def compute(self) -> dict:
        raise NotImplementedError

    def draw(self, fig: Figure, state: dict) -> None:
        raise NotImplementedError

    def readout_html(self, state: dict) -> str:
        return ""

    def update(self) -> None:
        self.updates += 1
        try:
            self.state = self.compute()
            self.error = None
        except NotImplementedError:
            self.state, self.error = {}, "Your function is not written yet (NotImplementedError)."
        except Exception as exc:  # noqa: BLE001 - the learner's code may raise anything
            self.state, self.error = {}, _describe_exception(exc)
        self._render()

    def _render(self) -> None:
        if self.error:
            self.readout.value = (
                f"<pre style='color:#b00020;white-space:pre-wrap'>{html.escape(self.error)}</pre>"
            )
            self.image.value = b""
            return
        fig = Figure(figsize=self.figsize)
        self.draw(fig, self.state)
        self.image.value = figure_png(fig)
        self.readout.value = self.readout_html(self.state)

    def show(self):
        """The widget to display, or None under nbgrader (nothing renders while grading)."""
        return None if is_grading() else self.widget

    def _repr_mimebundle_(self, **kwargs):
        if is_grading():
            return {"text/plain": f"<{type(self).__name__}: not shown while grading>"}
        return self.widget._repr_mimebundle_(**kwargs)


def _describe_exception(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = ""
    for frame in reversed(frames):
        if "course/widgets" not in frame.filename.replace(os.sep, "/"):
            where = f"\n  at line {frame.lineno}: {frame.line}"
            break
    return f"Your function raised {type(exc).__name__}: {exc}{where}"


# Every explorer's controls: labels in one column, sliders one width.
CONTROL_STYLE = {"description_width": "110px"}
SLIDER_LAYOUT = {"width": "340px"}


def _slider_options(description: str) -> dict:
    return dict(
        description=description,
        style=CONTROL_STYLE,
        layout=W.Layout(**SLIDER_LAYOUT),
        continuous_update=False,
    )


def slider(
    description: str, value: float, low: float, high: float, step: float, log: bool = False
) -> W.Widget:
    """A float slider (log-scaled on request: `low` and `high` are then powers of ten)."""
    if log:
        return W.FloatLogSlider(
            value=value, base=10, min=low, max=high, step=step, **_slider_options(description)
        )
    return W.FloatSlider(value=value, min=low, max=high, step=step, **_slider_options(description))


def int_slider(description: str, value: int, low: int, high: int) -> W.IntSlider:
    return W.IntSlider(value=value, min=low, max=high, **_slider_options(description))


def choice_slider(description: str, options: list, value) -> W.SelectionSlider:
    return W.SelectionSlider(options=options, value=value, **_slider_options(description))


def call_quietly(fn: Callable, *args, **kwargs):
    """Call learner code with floating-point warnings silenced (overflow is the point here)."""
    import numpy as np

    with np.errstate(all="ignore"):
        return fn(*args, **kwargs)
