"""The widget toolkit: controls on the left, a matplotlib figure and readouts on the right.

Figures are drawn with matplotlib's object API onto an Agg canvas and shown as PNG in an
`ipywidgets.Image`. That avoids depending on which matplotlib backend the front end has
(an inline backend inside an Output widget shows nothing in some front ends), and it makes
each update observable: the image's bytes change when the picture does.

A widget lives only as long as its kernel: reopen a notebook after shutting it down and
JupyterLab shows "Error displaying widget: model not found" where the widget was. So every
explorer is displayed as two outputs: the live widget, and a static copy of it (its last
picture and readout, with "run this cell again"), kept up to date as the widget changes. While
the widget is live, a style inside it hides the static copy; once the widget is gone, so is that
style, and the static copy shows in its place (a style in the copy then hides the error text).
Notebook viewers without a kernel (nbviewer, GitHub) show the static copy too.
"""

from __future__ import annotations

import base64
import html
import io
import os
import traceback
import uuid
from collections.abc import Callable

import ipywidgets as W
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# ipywidgets gives HTML the line height of one control row (28px): prose and readouts that
# wrap look double-spaced. Scoped to the explorers.
_STYLE = "<style>.course-explorer .widget-html-content { line-height: 1.45; }</style>"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
RUN_AGAIN = (
    "This explorer needs its kernel, which is no longer running: run this cell again (after "
    "the cells above it) to use it. Below, a picture of it as it was last drawn."
)


def is_grading() -> bool:
    """True under `nbgrader autograde`/`validate`, where widgets must not render or block."""
    return bool(os.environ.get("NBGRADER_EXECUTION"))


def figure_png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


class BadResult(Exception):
    """A learner's function returned something an explorer cannot use or draw (the explorer's
    words, not a crash of the learner's code): `Explorer.update` shows it as such."""


def checked_tensor(value, what: str, shape: tuple | None = None) -> torch.Tensor:
    """`value` itself, once it is a finite tensor (of `shape`, when given).

    Raises `BadResult` naming `what` (the learner's function) otherwise."""
    if not isinstance(value, torch.Tensor):
        raise BadResult(f"your {what} returned a {type(value).__name__}, expected a torch.Tensor")
    if shape is not None and tuple(value.shape) != shape:
        raise BadResult(f"your {what} returned shape {tuple(value.shape)}, expected {shape}")
    if not torch.isfinite(value.detach()).all():
        raise BadResult(f"your {what} returned NaN or inf: nothing to draw")
    return value


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
        # Names the static copy's outputs: the live widget's style hides exactly this one.
        self.fallback_class = f"course-explorer-static-{uuid.uuid4().hex[:12]}"
        self._fallback_handle = None
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
        hide_static_copy = f"<style>.{self.fallback_class} {{ display: none !important; }}</style>"
        style = W.HTML(_STYLE + hide_static_copy, layout=W.Layout(display="none"))
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

    def not_written_message(self) -> str:
        """What `update` shows when the learner's function raises NotImplementedError (a
        subclass that runs several of them may name the one its current view needs)."""
        return "Your function is not written yet (NotImplementedError)."

    def update(self) -> None:
        self.updates += 1
        try:
            self.state = self.compute()
            self.error = None
        except BadResult as exc:
            self.state, self.error = {}, f"✘ {exc}"
        except NotImplementedError:
            self.state, self.error = {}, self.not_written_message()
        except Exception as exc:  # noqa: BLE001 - the learner's code may raise anything
            self.state, self.error = {}, _describe_exception(exc)
        self._render()

    def _render(self) -> None:
        if self.error:
            self.readout.value = (
                f"<pre style='color:#b00020;white-space:pre-wrap'>{html.escape(self.error)}</pre>"
            )
            self.image.value = b""
        else:
            fig = Figure(figsize=self.figsize)
            self.draw(fig, self.state)
            self.image.value = figure_png(fig)
            self.readout.value = self.readout_html(self.state)
        if self._fallback_handle is not None:
            self._fallback_handle.update(self.static_bundle(), raw=True)

    def show(self):
        """The widget to display, or None under nbgrader (nothing renders while grading)."""
        return None if is_grading() else self.widget

    def _repr_mimebundle_(self, **kwargs):
        if is_grading():
            return {"text/plain": f"<{type(self).__name__}: not shown while grading>"}
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = f"<{type(self).__name__}: run this cell to use it>"
        return bundle

    def _ipython_display_(self) -> None:
        """Display the live widget, then its static copy (see the module's docstring)."""
        from IPython.display import display

        display(self._repr_mimebundle_(), raw=True)
        if not is_grading():
            self._fallback_handle = display(self.static_bundle(), raw=True, display_id=True)

    def settings_text(self) -> str:
        """The controls' values, in words (for the static copy)."""
        parts = []
        for control in self.controls_box.children:
            if isinstance(control, W.ValueWidget) and not isinstance(control, W.HTML):
                label = getattr(control, "description", "") or ""
                value = control.value
                value = f"{value:.4g}" if isinstance(value, float) else str(value)
                parts.append(f"{label} = {value}" if label else value)
        return ", ".join(parts)

    def static_html(self) -> str:
        """The static copy: "run this cell again", the last picture, the settings, the readout."""
        if self.image.value:
            data = base64.b64encode(bytes(self.image.value)).decode("ascii")
            picture = (
                f"<img src='data:image/png;base64,{data}' alt='the explorer as last drawn' "
                "style='width:100%;max-width:760px'>"
            )
        else:
            picture = ""
        # Where the live widget could not be shown, hide JupyterLab's error text in its place.
        # (JupyterLab's widget renderer marks its own node .jupyter-widgets when it fails.)
        hide_error = (
            f"<style>.jp-OutputArea:has(.{self.fallback_class}) "
            ".jp-OutputArea-output.jupyter-widgets:not(:has(.course-explorer))"
            " { display: none; }</style>"
        )
        settings = html.escape(self.settings_text())
        return (
            f"<div class='course-explorer-static {self.fallback_class}' "
            "style='border:1px dashed #999;padding:8px;max-width:780px'>"
            f"{hide_error}<p style='margin:0 0 6px 0'><b>⟳ {RUN_AGAIN}</b></p>{picture}"
            f"<p style='margin:4px 0;color:#555'><small>Settings: {settings}</small></p>"
            f"{self.readout.value}</div>"
        )

    def static_bundle(self) -> dict:
        return {
            "text/html": self.static_html(),
            "text/plain": f"[{type(self).__name__}] {RUN_AGAIN}",
        }


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
