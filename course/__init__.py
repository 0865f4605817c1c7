"""Student-side helpers of the Transformer course.

Nothing in this package contains an answer: it must stay shippable to learners
without `solutions` or `autograder` (a test enforces that it imports neither).
"""

__all__ = ["checks"]
