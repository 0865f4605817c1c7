# nbgrader (and its JupyterLab extensions) read this file. In the instructor's checkout the
# settings live in autograder/. A student's bundle has no autograder/ and needs none of them:
# the Validate button works with nbgrader's defaults, and a shared server's exchange is set up
# by the instructor in a system-wide nbgrader_config.py (see the README).
from importlib.util import find_spec

if find_spec("autograder") is not None:
    from autograder.nbgrader_config import configure

    configure(get_config())  # noqa: F821 - provided by traitlets when it loads this file
