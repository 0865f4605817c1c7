"""The one comparator behind every visible check and every hidden verdict.

Both sides turn what a function returned into *plain data* first (`to_plain`): numpy arrays
labelled with their torch dtype, numbers, strings, sympy expressions as text, and lists of
those. Only exact `torch.Tensor`s and Python builtins are accepted, so an object with a lying
`__eq__` never reaches a comparison. `compare(want, got)` then applies the same rules
everywhere, in this order:

1. type and structure (a tensor, a number, a tuple of the right length);
2. dtype (a float16 input gives a float16 output unless the exercise says otherwise);
3. shape;
4. NaN where the expected value is a number; +-inf exactly where expected;
5. values, within the tolerance of the expected dtype (`TOLERANCES`), unless an exercise states
   its own (a Monte Carlo estimate, say) with the reason.

The result is `None` (equal) or a `Mismatch` that says what differs and where: the first
differing index, how many entries differ, expected and got, abbreviated. Boolean arrays print
as True/False.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from course.compare_plain import (
    MAX_WIRE_ELEMENTS,
    TOLERANCES,
    Mismatch,
    Tolerance,
    compare,
    decode,
    describe,
    encode,
    tolerance_for,
)

__all__ = [
    "Tolerance",
    "TOLERANCES",
    "tolerance_for",
    "Mismatch",
    "to_plain",
    "compare",
    "describe",
    "encode",
    "decode",
    "plain_dtype",
    "MAX_WIRE_ELEMENTS",
]

# Captured at import: later monkeypatching of these names changes nothing here.
_TENSOR = torch.Tensor
_detach = torch.Tensor.detach
_to = torch.Tensor.to
_cpu = torch.Tensor.cpu
_contiguous = torch.Tensor.contiguous
_numpy = torch.Tensor.numpy


def plain_dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def to_plain(value: Any) -> Any:
    """What a function returned, as plain data; raises TypeError for anything else.

    Tensor -> {"dtype": "float32", "array": ndarray} (bfloat16 is carried as float32 values);
    bool/int/float -> {"dtype": "bool"|"int"|"float", "array": 0-d ndarray}; str -> {"dtype":
    "str", "text"}; None -> {"dtype": "none"}; sympy expression -> {"dtype": "sympy",
    "srepr"}; tuple/list -> list of those.
    """
    if type(value) is _TENSOR:
        tensor = _contiguous(_cpu(_detach(value)))
        if value.dtype == torch.bfloat16:
            tensor = _to(tensor, torch.float32)
        if value.is_complex() or value.dtype in (torch.uint16, torch.uint32, torch.uint64):
            raise TypeError(f"returned a tensor of dtype {value.dtype}")
        return {"dtype": plain_dtype(value.dtype), "array": np.array(_numpy(tensor), copy=True)}
    if type(value) is bool:
        # Marked, so that a 0-d bool tensor is not taken for the Python bool a spec asks for.
        return {"dtype": "bool", "array": np.array(value), "python": True}
    if type(value) in (int, float):
        return {"dtype": type(value).__name__, "array": np.array(value)}
    if type(value) is str:
        return {"dtype": "str", "text": value[:10_000]}
    if value is None:
        return {"dtype": "none"}
    if type(value) in (tuple, list) or type(value).__module__ == "torch.return_types":
        return [to_plain(v) for v in value]
    if type(value).__module__.startswith("sympy."):
        import sympy

        if isinstance(value, sympy.Basic):
            return {"dtype": "sympy", "srepr": sympy.srepr(value)}
    raise TypeError(f"returned a {type(value).__module__}.{type(value).__qualname__}")
