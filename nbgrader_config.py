# nbgrader (and its JupyterLab extensions) read this file. In the instructor's checkout the
# settings live in autograder/. A student's bundle has no autograder/ or solutions/ and needs
# none of them: the Validate button works with nbgrader's defaults, and a shared server's
# exchange is set up by the instructor in a system-wide nbgrader_config.py (see the README).
# Only this folder's own autograder/ is used: an environment that can import another checkout's
# (or a stale one) must not configure a bundle.
from pathlib import Path

_HERE = Path(globals().get("__file__", "nbgrader_config.py")).resolve().parent

if (_HERE / "autograder").is_dir() and (_HERE / "solutions").is_dir():
    try:
        from autograder.nbgrader_config import configure
    except ImportError:  # autograder/ here but not importable (no environment set up yet)
        configure = None
    if configure is not None:
        configure(get_config())  # noqa: F821 - provided by traitlets when it loads this file
