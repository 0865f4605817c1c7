"""Function arguments as JSON: how a check's inputs travel (fixtures of visible checks, hidden
probes from the grader to a sandboxed kernel).

Tensors keep their exact dtype (bfloat16 included); `FnRef`s and `torch.dtype`s (an argument such
as `dtype=torch.bfloat16`) travel by name; numbers, strings,
None, tuples, lists and string-keyed dicts are kept as they are. Decoding never evaluates code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from course.calling import FnRef
from course.compare import decode, encode, plain_dtype

__all__ = ["dump_value", "load_value"]

_DTYPES = {
    plain_dtype(d): d
    for d in (
        torch.float64,
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
    )
}


def dump_value(value: Any) -> Any:
    """An argument (or structure of arguments) as JSON-safe data."""
    if type(value) is torch.Tensor:
        data = value.detach().cpu()
        if data.dtype == torch.bfloat16:
            data = data.float()  # bfloat16 values are exactly representable in float32
        array = {"dtype": plain_dtype(value.dtype), "array": data.contiguous().numpy()}
        return {"tensor": encode(array)}
    if isinstance(value, FnRef):
        return {"fn": value.ref}
    if isinstance(value, torch.dtype) and plain_dtype(value) in _DTYPES:
        return {"torch_dtype": plain_dtype(value)}
    if value is None or type(value) in (bool, int, str):
        return value
    if type(value) is float:
        return {"float": repr(value)}  # keeps inf, -inf and nan exactly
    if type(value) is tuple:
        return {"tuple": [dump_value(v) for v in value]}
    if type(value) is list:
        return [dump_value(v) for v in value]
    if type(value) is dict:
        return {"dict": {str(k): dump_value(v) for k, v in value.items()}}
    raise TypeError(f"cannot send an argument of type {type(value).__qualname__}")


def load_value(data: Any) -> Any:
    """The inverse of `dump_value`; raises ValueError for anything malformed."""
    if data is None or type(data) in (bool, int, str):
        return data
    if type(data) is list:
        return [load_value(v) for v in data]
    if type(data) is not dict or len(data) != 1:
        raise ValueError("malformed argument")
    ((kind, body),) = data.items()
    if kind == "tensor":
        plain = decode(body)
        dtype = _DTYPES.get(plain.get("dtype", ""))
        if dtype is None or "array" not in plain:
            raise ValueError("malformed tensor argument")
        return torch.from_numpy(np.array(plain["array"])).to(dtype)
    if kind == "fn":
        return FnRef(str(body))
    if kind == "torch_dtype":
        if str(body) not in _DTYPES:
            raise ValueError("malformed dtype argument")
        return _DTYPES[str(body)]
    if kind == "float":
        return float(str(body))
    if kind == "tuple":
        return tuple(load_value(v) for v in body)
    if kind == "dict":
        return {str(k): load_value(v) for k, v in dict(body).items()}
    raise ValueError(f"unknown argument kind {kind!r}")
