# nbgrader (and its JupyterLab extension) read this file; the settings live in autograder/.
from autograder.nbgrader_config import configure

configure(get_config())  # noqa: F821 - provided by traitlets when it loads this file
