"""Replay a recording of ATen operations (`course.trace`) in the grader's own process.

The recording comes from an untrusted kernel, so it is data, validated before anything runs:
only operators of the `aten` namespace, none that draws random numbers or touches storage or
devices, at most `MAX_ELEMENTS` elements produced in all (checked against the declared shapes
before execution and against the real ones after each operator), and every tensor must be an
input, a constant (sent by value) or the output of an earlier operator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from course.compare import decode
from course.trace import MAX_OPS, _walk_tensors

MAX_ELEMENTS = 50_000_000

# Operators that a recording may not name even though they are in aten: storage, devices,
# memory pinning, printing, files, and anything that synchronises with the outside.
_DENY = {
    "set_",
    "_pin_memory",
    "pin_memory",
    "record_stream",
    "from_file",
    "_copy_from",
    "_copy_from_and_resize",
    "to_mkldnn",
    "_to_cpu",
    "_print",
    "_assert_async",
    "_functional_sym_constrain_range",
    "_make_dep_token",
    "resize_",  # allowed sizes are checked against metadata; resize_ could grow memory silently
}
_DTYPES = {
    name: getattr(torch, name)
    for name in (
        "float64",
        "float32",
        "float16",
        "bfloat16",
        "int64",
        "int32",
        "int16",
        "int8",
        "uint8",
        "bool",
        "complex64",
        "complex128",
    )
}


class ReplayError(Exception):
    """The recording could not be replayed; the message says why (in a learner's words)."""


def forbidden_used(recording: dict, forbidden: set[str]) -> list[str]:
    """ATen operator names (overload packets) of `forbidden` that the recording calls."""
    used = []
    for op in recording.get("ops", []):
        name = _packet(op.get("op", ""))
        if name in forbidden and name not in used:
            used.append(name)
    return used


def _packet(qualified: str) -> str:
    parts = qualified.split(".")
    return parts[1] if len(parts) >= 2 else qualified


def _resolve_op(qualified: str):
    parts = qualified.split(".")
    if len(parts) != 3 or parts[0] != "aten":
        raise ReplayError(f"the recording names an operator outside PyTorch's aten: {qualified!r}")
    _, name, overload = parts
    if name in _DENY:
        raise ReplayError(f"the operator {name} cannot be replayed")
    try:
        op = getattr(getattr(torch.ops.aten, name), overload)
    except AttributeError:
        raise ReplayError(f"unknown operator {qualified!r}") from None
    if torch.Tag.nondeterministic_seeded in op.tags:
        raise ReplayError(
            f"uses random numbers ({name}) inside the function, which cannot be verified"
        )
    return op


def check_sizes(recording: dict) -> None:
    ops = recording.get("ops")
    if not isinstance(ops, list) or len(ops) > MAX_OPS:
        raise ReplayError("the recording is missing or too long")
    total = 0
    for op in ops:
        for meta in op.get("meta", []):
            shape = meta[1] if isinstance(meta, list) and len(meta) == 2 else None
            if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
                raise ReplayError("malformed recording (output shapes)")
            count = 1
            for n in shape:
                count *= n
            total += count
            if total > MAX_ELEMENTS:
                raise ReplayError("the recorded computation is too large to verify")


def replay(
    recording: dict, args: tuple, kwargs: dict, stand_ins: dict[str, Callable] | None = None
) -> Any:
    """Run the recorded operations on `args`/`kwargs` (the probe's inputs, possibly changed);
    return the recorded output structure, with tensors. `stand_ins` are the exercise's own
    built-in equivalents of earlier learner functions (`"standin:<name>"` steps). Raises
    ReplayError."""
    if recording.get("untraceable"):
        raise ReplayError(f"the computation could not be recorded: {recording['untraceable']}")
    check_sizes(recording)
    env: dict[int, Any] = {}
    inputs = list(_walk_tensors((args, kwargs)))
    refs = recording.get("inputs")
    if not isinstance(refs, list) or len(refs) != len(inputs):
        raise ReplayError("the recording does not match the probe's arguments")
    for ref, tensor in zip(refs, inputs, strict=True):
        env[_int(ref)] = tensor.detach().clone()
    for key, plain in (recording.get("constants") or {}).items():
        env[_int(key)] = _constant(plain)
    with torch.no_grad():
        for op in recording["ops"]:
            _run_op(op, env, stand_ins or {})
    return _build(recording.get("output"), env)


def constant_refs(recording: dict) -> set[int]:
    return {_int(k) for k in (recording.get("constants") or {})}


def output_refs(recording: dict) -> list[int]:
    found: list[int] = []

    def walk(leaf):
        if isinstance(leaf, dict) and "t" in leaf:
            found.append(_int(leaf["t"]))
        elif isinstance(leaf, list):
            for item in leaf:
                walk(item)

    walk(recording.get("output"))
    return found


def _int(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ReplayError("malformed recording (a reference is not a number)") from None
    if not 0 <= number < 10 * MAX_OPS:
        raise ReplayError("malformed recording (reference out of range)")
    return number


def _constant(plain: Any) -> torch.Tensor:
    try:
        data = decode(plain)
    except ValueError as exc:
        raise ReplayError(f"malformed constant: {exc}") from None
    dtype = _DTYPES.get(data.get("dtype", ""))
    if dtype is None or "array" not in data:
        raise ReplayError("malformed constant")
    return torch.from_numpy(data["array"]).to(dtype)


def _run_op(op: dict, env: dict, stand_ins: dict[str, Callable]) -> None:
    if not isinstance(op, dict):
        raise ReplayError("malformed recording")
    name = str(op.get("op", ""))
    if name.startswith("standin:"):
        func = stand_ins.get(name.removeprefix("standin:"))
        if func is None:
            raise ReplayError(f"the recording calls a stand-in this exercise does not have: {name}")
    else:
        func = _resolve_op(name)
    raw_args, raw_kwargs = op.get("args", []), op.get("kwargs", {})
    if not isinstance(raw_args, list) or not isinstance(raw_kwargs, dict):
        raise ReplayError("malformed recording (arguments)")
    args = _value(raw_args, env)
    kwargs = {str(k): _value(v, env) for k, v in raw_kwargs.items()}
    try:
        out = func(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a recording that does not replay is a verdict
        raise ReplayError(f"{op.get('op')} failed on replay: {type(exc).__name__}") from None
    _bind(op.get("out"), out, env, list(op.get("meta", [])))


def _bind(leaf: Any, value: Any, env: dict, meta: list) -> None:
    if isinstance(leaf, dict) and "t" in leaf:
        if type(value) is not torch.Tensor:
            raise ReplayError("the replay diverged from the recording (expected a tensor)")
        expected = meta.pop(0) if meta else None
        if expected != [str(value.dtype).removeprefix("torch."), list(value.shape)]:
            raise ReplayError("the replay diverged from the recording (shapes or dtypes differ)")
        env[_int(leaf["t"])] = value
    elif isinstance(leaf, list):
        if type(value) not in (list, tuple) or len(value) != len(leaf):
            raise ReplayError("the replay diverged from the recording (output structure)")
        for item, sub in zip(leaf, value, strict=True):
            _bind(item, sub, env, meta)


def _value(leaf: Any, env: dict) -> Any:
    if leaf is None or type(leaf) in (bool, int, float):
        return leaf
    if isinstance(leaf, list):
        return [_value(v, env) for v in leaf]
    if not isinstance(leaf, dict):
        raise ReplayError("malformed recording (argument)")
    if "t" in leaf:
        ref = _int(leaf["t"])
        if ref not in env:
            raise ReplayError("the recording uses a tensor before it was made")
        return env[ref]
    if "s" in leaf:
        return str(leaf["s"])
    if "f" in leaf:
        if leaf["f"] not in ("inf", "-inf", "nan"):
            raise ReplayError("malformed recording (a number)")
        return float(leaf["f"])
    if "dtype" in leaf:
        return _DTYPES.get(leaf["dtype"]) or _bad("dtype")
    if "device" in leaf:
        return torch.device("cpu") if str(leaf["device"]).startswith("cpu") else _bad("device")
    if "layout" in leaf:
        return torch.strided if leaf["layout"] == "strided" else _bad("layout")
    if "memory_format" in leaf:
        fmt = getattr(torch, str(leaf["memory_format"]), None)
        return fmt if isinstance(fmt, torch.memory_format) else _bad("memory format")
    if "v" in leaf:
        return leaf["v"]
    raise ReplayError("malformed recording (argument)")


def _bad(what: str):
    raise ReplayError(f"the recording names an unsupported {what}")


def _build(leaf: Any, env: dict) -> Any:
    if isinstance(leaf, dict) and "t" in leaf:
        ref = _int(leaf["t"])
        if ref not in env:
            raise ReplayError("the recorded output was never computed")
        return env[ref]
    if isinstance(leaf, list):
        return tuple(_build(v, env) for v in leaf)
    if isinstance(leaf, dict) and "v" in leaf:
        value = leaf["v"]
        return float(value) if value in ("inf", "-inf", "nan") else value
    if isinstance(leaf, dict) and "f" in leaf:
        return _value(leaf, env)
    if leaf is None or type(leaf) in (bool, int, float):
        return leaf
    raise ReplayError("malformed recording (output)")
