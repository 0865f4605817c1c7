"""Record every ATen operation of one call, as plain data the grader can replay.

Why: an exercise that forbids a built-in (write the softmax yourself) cannot be judged by a
watcher inside the learner's own process, because code in that process can switch any watcher
off. So the learner's kernel only *records* what its operations were; the grader, in its own
process, replays the recording on the same inputs and on slightly changed ones. A recording
that leaves out a forbidden call no longer reproduces the result, and a result baked in as a
constant no longer follows the inputs: either way the probe fails, so tampering costs the
points it was meant to win.

A recording is JSON-safe:

    {"inputs": [ref, ...],               # the tensor arguments, in the order `_tensors` walks them
     "constants": {ref: plain, ...},     # tensors from outside (e.g. torch.tensor(...))
     "ops": [{"op": "aten.exp.default", "args": [...], "kwargs": {...},
              "out": leaf-structure, "meta": [[dtype, shape], ...]}, ...],
     "output": leaf-structure,           # the returned value, in refs
     "untraceable": null | "why"}

Leaves: {"t": ref} for a tensor, numbers, booleans, None, {"f": "inf"} for a float that is
not finite (JSON has no infinities), {"s": text}, {"dtype": name},
{"device": name}, {"layout": name}, {"memory_format": name}, lists.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from course.compare import encode, plain_dtype

__all__ = ["Recorder", "Untraceable", "MAX_OPS", "MAX_CONSTANT_ELEMENTS"]

MAX_OPS = 50_000
MAX_CONSTANT_ELEMENTS = 1_000_000
_TENSOR = torch.Tensor


class Untraceable(Exception):
    """The call did something a recording cannot represent (the reason is the message)."""


class _Mode(TorchDispatchMode):
    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Nothing here runs under torch.compile; PyTorch's default wraps __torch_dispatch__ for
        # dynamo, which imports torch._dynamo on first use (seconds in every kernel).
        return False

    def __init__(self, recorder: Recorder):
        super().__init__()
        self.recorder = recorder

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rec = self.recorder
        entry = None
        if rec.reason is None:
            try:
                entry = {
                    "op": str(func),
                    "args": rec.leaf(args),
                    "kwargs": {str(k): rec.leaf(v) for k, v in kwargs.items()},
                }
            except Untraceable as exc:
                rec.reason = str(exc)
        out = func(*args, **kwargs)
        if entry is not None and rec.reason is None:
            entry["out"], entry["meta"] = rec.register_outputs(out)
            rec.ops.append(entry)
            if len(rec.ops) > MAX_OPS:
                rec.reason = f"more than {MAX_OPS} tensor operations"
        return out


class Recorder:
    """Records the ATen operations of one call; `result()` is the recording."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.ops: list[dict] = []
        self.refs: dict[int, int] = {}
        self.keep: list[Any] = []  # holds every seen tensor, so that ids are never reused
        self.constants: dict[str, Any] = {}
        self.constant_elements = 0
        self.inputs: list[int] = []
        self.output: Any = None
        self.reason: str | None = None

    @contextmanager
    def recording(self, args: tuple, kwargs: dict) -> Iterator[None]:
        self._reset()
        for tensor in _walk_tensors((args, kwargs)):
            self.inputs.append(self._new_ref(tensor))
        with _Mode(self):
            yield

    def _new_ref(self, tensor: torch.Tensor) -> int:
        ref = len(self.keep)
        self.keep.append(tensor)
        self.refs[id(tensor)] = ref
        return ref

    def ref_of(self, tensor: torch.Tensor) -> int:
        ref = self.refs.get(id(tensor))
        if ref is not None and self.keep[ref] is tensor:
            return ref
        # A tensor the recording has not seen produced: it came from outside (a constant made
        # with torch.tensor, a global, or a value computed while no one was watching).
        if tensor.is_complex() or tensor.device.type != "cpu":
            raise Untraceable(f"a {tensor.dtype} tensor on {tensor.device} entered the computation")
        self.constant_elements += tensor.numel()
        if self.constant_elements > MAX_CONSTANT_ELEMENTS:
            raise Untraceable("too much constant data entered the computation")
        ref = self._new_ref(tensor)
        data = tensor.detach()
        if data.dtype == torch.bfloat16:
            data = data.float()
        self.constants[str(ref)] = encode(
            {"dtype": plain_dtype(tensor.dtype), "array": data.contiguous().numpy().copy()}
        )
        return ref

    def leaf(self, value: Any) -> Any:
        if type(value) is _TENSOR:
            return {"t": self.ref_of(value)}
        if isinstance(value, _TENSOR):
            raise Untraceable(
                f"a tensor subclass ({type(value).__qualname__}) entered the computation"
            )
        if value is None or type(value) in (bool, int):
            return value
        if type(value) is float:
            return value if math.isfinite(value) else {"f": repr(value)}
        if type(value) is str:
            return {"s": value}
        if isinstance(value, torch.dtype):
            return {"dtype": plain_dtype(value)}
        if isinstance(value, torch.device):
            return {"device": str(value)}
        if isinstance(value, torch.layout):
            return {"layout": str(value).removeprefix("torch.")}
        if isinstance(value, torch.memory_format):
            return {"memory_format": str(value).removeprefix("torch.")}
        if isinstance(value, list | tuple):  # torch.return_types are tuples too
            return [self.leaf(v) for v in value]
        raise Untraceable(f"an argument of type {type(value).__qualname__}")

    def register_outputs(self, out: Any) -> tuple[Any, list]:
        meta: list = []

        def walk(value: Any) -> Any:
            if type(value) is _TENSOR:
                ref = self.refs.get(id(value))
                if ref is None or self.keep[ref] is not value:
                    ref = self._new_ref(value)
                meta.append([plain_dtype(value.dtype), list(value.shape)])
                return {"t": ref}
            if isinstance(value, list | tuple):
                return [walk(v) for v in value]
            if value is None or type(value) in (bool, int):
                return {"v": value}
            if type(value) is float:
                return {"v": value if math.isfinite(value) else repr(value)}
            raise Untraceable(f"an operation returned a {type(value).__qualname__}")

        return walk(out), meta

    def call_stand_in(self, name: str, fn, args: tuple, kwargs: dict) -> Any:
        """Run the grader's stand-in for the learner's `name` unwatched; record it as one step
        (`"standin:<name>"`) that the grader replays with the same stand-in."""
        entry = None
        if self.reason is None:
            try:
                entry = {
                    "op": f"standin:{name}",
                    "args": self.leaf(args),
                    "kwargs": {str(k): self.leaf(v) for k, v in kwargs.items()},
                }
            except Untraceable as exc:
                self.reason = str(exc)
        with _disable_current_modes():
            out = fn(*args, **kwargs)
        if entry is not None and self.reason is None:
            try:
                entry["out"], entry["meta"] = self.register_outputs(out)
                self.ops.append(entry)
            except Untraceable as exc:
                self.reason = str(exc)
        return out

    def set_output(self, out: Any) -> None:
        if self.reason is not None:
            return
        try:
            self.output = self.leaf(out)
        except Untraceable as exc:
            self.reason = str(exc)

    def result(self) -> dict:
        return {
            "inputs": self.inputs,
            "constants": self.constants if self.reason is None else {},
            "ops": self.ops if self.reason is None else [],
            "output": self.output,
            "untraceable": self.reason,
        }


def _walk_tensors(value: Any) -> Iterator[torch.Tensor]:
    """Tensors in args/kwargs, in a fixed order (the grader walks its copy the same way)."""
    if type(value) is _TENSOR:
        yield value
    elif type(value) in (list, tuple):
        for v in value:
            yield from _walk_tensors(v)
    elif type(value) is dict:
        for key in sorted(value):
            yield from _walk_tensors(value[key])
