"""Finding a model class from a `MODULE:CLASS` string (the CLI's --model), and the ladder's RoPE
functions from a module name (`ladder --rope`).

The defaults, the course's reference model and its RoPE kernels, live in the instructor-side
`solutions` package, which a student bundle does not ship; they are therefore only ever imported
by name, on demand.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from course.lm.errors import ModelSpecError

DEFAULT_MODEL = "solutions.kernels.model:TransformerLM"


DEFAULT_ROPE = "solutions.kernels.positions"
ROPE_FUNCTIONS = ("rope_cos_sin", "rotate_pairs")


class ReferenceUnavailable(ModelSpecError):  # noqa: N818 - names a state, like a missing file
    """A default spec names the instructor-side `solutions` package, which is not installed."""


def _import(module_name: str, default: str, what: str):
    """Import `module_name` for `what` (a flag's name), with a one-line error if it fails;
    `ReferenceUnavailable` when it is the `default` and `solutions` is missing."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if module_name == default.partition(":")[0] and (exc.name or "").split(".")[0] == (
            "solutions"
        ):
            raise ReferenceUnavailable(
                f"the default {default} is not available (the instructor-side `solutions` "
                f"package is not installed); pass {what}"
            ) from exc
        raise ModelSpecError(f"cannot import {module_name!r} for {what.split()[0]}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - the user's module may fail in any way on import
        raise ModelSpecError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc


def load_model_class(spec: str | None = None) -> type:
    """Import `MODULE:CLASS` (default: the reference model) with a one-line error if it fails
    (`ReferenceUnavailable`, a ModelSpecError, for the default without `solutions`)."""
    spec = spec or DEFAULT_MODEL
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ModelSpecError(
            f"--model must look like MODULE:CLASS (e.g. mypkg.model:GPT), got {spec!r}"
        )
    module = _import(module_name, DEFAULT_MODEL, "--model MODULE:CLASS")
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ModelSpecError(f"module {module_name!r} has no attribute {attr!r}")
    if not isinstance(obj, type):
        raise ModelSpecError(f"{spec} is a {type(obj).__name__}, not a class")
    return obj


def load_rope_functions(spec: str | None = None) -> tuple[Callable, Callable]:
    """`(rope_cos_sin, rotate_pairs)` from the module named `spec` (default: the reference
    kernels, DEFAULT_ROPE), lesson 05's RoPE parts with its signatures:
    `rope_cos_sin(positions (T,) int64, head_dim, theta, dtype=...) -> (cos, sin)`, each
    (T, head_dim / 2) in dtype, and `rotate_pairs(x (..., T, head_dim), cos, sin, layout)`.
    Raises ModelSpecError (one line) when the module cannot be imported or lacks either
    function; `ReferenceUnavailable` for the default without the `solutions` package."""
    spec = spec or DEFAULT_ROPE
    if not all(part.isidentifier() for part in spec.split(".")):
        raise ModelSpecError(f"--rope must be a module name (e.g. mypkg.rope), got {spec!r}")
    module = _import(spec, DEFAULT_ROPE, "--rope MODULE")
    found = []
    for name in ROPE_FUNCTIONS:
        fn = getattr(module, name, None)
        if not callable(fn):
            raise ModelSpecError(f"module {spec!r} has no function {name!r} (--rope)")
        found.append(fn)
    return found[0], found[1]
