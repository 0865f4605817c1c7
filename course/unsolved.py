"""A clear message, instead of a traceback, where a learner meets an unsolved exercise.

Every exercise starts as `raise NotImplementedError()`. A learner who runs a lesson top to
bottom (JupyterLab's *Run All* stops at the first error) should see, at the first unsolved
exercise, one sentence saying what to do, not a wall of frames. `install()` (called when
`course` is imported inside IPython) registers an IPython handler for NotImplementedError
that shows such a message. The exception still propagates as an error: the cell fails,
*Run All* stops there, and nbgrader still counts the cell as failed.

Failed visible checks (`course.checks.CheckFailed`, which include "not written yet") are
already messages: they render as their text alone (see `CheckFailed._render_traceback_`).
"""

from __future__ import annotations

import sys
import types

_MARK = "_course_unsolved_handler"


def _cell_frames(shell, tb: types.TracebackType | None) -> list[tuple[str, int | None]]:
    """(function name, input number) for each traceback frame that lies in a notebook cell."""
    cells = getattr(getattr(shell, "compile", None), "_filename_map", {})
    frames = []
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename in cells or filename.startswith("<ipython-input"):
            frames.append((tb.tb_frame.f_code.co_name, cells.get(filename)))
        else:
            frames.append(("", None))
        tb = tb.tb_next
    return frames


def message(shell, tb: types.TracebackType | None) -> list[str] | None:
    """The lines to show for a NotImplementedError, or None when it did not come from a cell.

    A NotImplementedError raised inside a library (not by an exercise stub) keeps its usual
    traceback: it is not the learner's unsolved exercise.
    """
    frames = _cell_frames(shell, tb)
    if not frames or not frames[-1][0]:
        return None
    name, number = frames[-1]
    if name == "<module>":
        return [
            "✘ Exercise not written yet: replace `raise NotImplementedError()` in this cell "
            "with your code, then run the cell again."
        ]
    where = f" (In [{number}])" if number is not None else ""
    return [
        f"✘ Exercise not written yet: `{name}` still raises NotImplementedError.",
        f"  Replace `raise NotImplementedError()` in the exercise cell that defines "
        f"`{name}`{where}",
        "  with your code, run that cell, then run this one again.",
    ]


def _handler(shell, etype, value, tb, tb_offset=None):
    lines = message(shell, tb)
    if lines is None:
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
        return None
    value._render_traceback_ = lambda: list(lines)
    # showtraceback sends an ordinary error output (ename NotImplementedError) with these
    # lines as its traceback; the execution reply is still an error, so Run All stops here.
    shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
    return list(lines)


def install(shell=None) -> bool:
    """Register the handler in `shell` (default: the running IPython, if any).

    Returns True when it is installed. It does nothing outside IPython, and it leaves alone
    a shell that already has another custom exception handler.
    """
    if shell is None:
        if "IPython" not in sys.modules:
            return False
        try:
            from IPython import get_ipython
        except ImportError:
            return False
        shell = get_ipython()
    if shell is None or not hasattr(shell, "set_custom_exc"):
        return False
    if getattr(shell, _MARK, False):
        return True
    if tuple(getattr(shell, "custom_exceptions", ())):
        return False
    shell.set_custom_exc((NotImplementedError,), _handler)
    setattr(shell, _MARK, True)
    return True


def uninstall(shell=None) -> None:
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
    if shell is not None and getattr(shell, _MARK, False):
        shell.set_custom_exc((), None)
        setattr(shell, _MARK, False)
