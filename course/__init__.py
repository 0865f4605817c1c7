"""Student-side helpers of the Transformer course.

Nothing in this package contains an answer: it must stay shippable to learners
without `solutions` or `autograder` (a test enforces that it imports neither).

Imported inside a notebook kernel, it makes an unsolved exercise (a function that still
raises NotImplementedError) show one clear sentence instead of a traceback; see
`course.unsolved`.
"""

from course import unsolved as _unsolved

__all__ = ["checks"]

_unsolved.install()
