"""Finding a model class from a `MODULE:CLASS` string (the CLI's --model).

The default, the course's reference model, lives in the instructor-side `solutions` package,
which a student bundle does not ship; it is therefore only ever imported by name, on demand.
"""

from __future__ import annotations

import importlib

from course.lm.errors import ModelSpecError

DEFAULT_MODEL = "solutions.kernels.model:TransformerLM"


def load_model_class(spec: str | None = None) -> type:
    """Import `MODULE:CLASS` (default: the reference model) with a one-line error if it fails."""
    spec = spec or DEFAULT_MODEL
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ModelSpecError(
            f"--model must look like MODULE:CLASS (e.g. mypkg.model:GPT), got {spec!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if spec == DEFAULT_MODEL and (exc.name or "").split(".")[0] == "solutions":
            raise ModelSpecError(
                f"the default model {DEFAULT_MODEL} is not available (the instructor-side "
                f"`solutions` package is not installed); pass --model MODULE:CLASS"
            ) from exc
        raise ModelSpecError(f"cannot import {module_name!r} for --model: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - the user's module may fail in any way on import
        raise ModelSpecError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ModelSpecError(f"module {module_name!r} has no attribute {attr!r}")
    if not isinstance(obj, type):
        raise ModelSpecError(f"{spec} is a {type(obj).__name__}, not a class")
    return obj
