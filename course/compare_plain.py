"""The torch-free half of the comparator (`course.compare`): plain data, its JSON-safe wire
form, and `compare`. It imports numpy only (sympy when an expression is compared), so a process
that only compares plain data (the grader's sympy child) does not pay for importing torch.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Tolerance",
    "TOLERANCES",
    "tolerance_for",
    "Mismatch",
    "compare",
    "describe",
    "encode",
    "decode",
    "MAX_WIRE_ELEMENTS",
]


@dataclass(frozen=True)
class Tolerance:
    """|got - want| <= atol + rtol * |want|, elementwise (numpy's `allclose` rule)."""

    atol: float
    rtol: float
    why: str = ""

    def __str__(self) -> str:
        return f"atol={self.atol:g}, rtol={self.rtol:g}"


# The precision each dtype is judged at, for every exercise of every lesson. A float32 result
# is compared with a reference computed in float32 by other code, so a few ulps of rounding
# (about 1e-7 relative) must pass; a float64 result is expected to be right to ~1e-10, which a
# computation done in float32 and cast to float64 never is.
TOLERANCES: dict[str, Tolerance] = {
    "float64": Tolerance(1e-10, 1e-8),
    "float32": Tolerance(1e-5, 1e-4),
    "bfloat16": Tolerance(1e-2, 2e-2),
    "float16": Tolerance(2e-3, 1e-2),
    # Integers, booleans and Python ints must be exact.
    "int": Tolerance(0.0, 0.0),
    "float": Tolerance(1e-10, 1e-8),
}
_EXACT = Tolerance(0.0, 0.0)


def tolerance_for(dtype: str) -> Tolerance:
    """The tolerance a result of `dtype` (a torch dtype name, or int/float/bool) is judged at."""
    return TOLERANCES.get(dtype, _EXACT)


@dataclass
class Mismatch:
    """Why `got` is not `want`: `kind` is one of type, length, dtype, shape, nan, inf, values,
    sympy, text; `path` locates the item inside a tuple ("item 1"); `index` is the first
    differing position of an array."""

    kind: str
    message: str
    path: str = ""
    index: tuple | None = None
    # The same without any expected value: what feedback on a hidden probe may show.
    brief: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def redacted(self) -> str:
        text = self.brief or self.message
        return f"{self.path}: {text}" if self.path else text


# ---------------------------------------------------------------- plain data


# JSON-safe form of plain data (what travels from a sandboxed kernel to the grader).
_WIRE_DTYPES = {
    "float64": "<f8",
    "float32": "<f4",
    "bfloat16": "<f4",
    "float16": "<f2",
    "int64": "<i8",
    "int32": "<i4",
    "int16": "<i2",
    "int8": "i1",
    "uint8": "u1",
    "bool": "?",
    "int": "<i8",
    "float": "<f8",
}
MAX_WIRE_ELEMENTS = 16 * 2**20


def encode(plain: Any) -> Any:
    """Plain data -> JSON-safe data (arrays as base64 of little-endian bytes)."""
    if isinstance(plain, list):
        return [encode(p) for p in plain]
    if isinstance(plain, dict) and "array" in plain:
        wire = _WIRE_DTYPES.get(plain["dtype"])
        if wire is None:
            raise TypeError(f"cannot send dtype {plain['dtype']}")
        array = np.asarray(plain["array"], dtype=np.dtype(wire))  # 0-d stays 0-d
        encoded = {
            "dtype": plain["dtype"],
            "shape": list(array.shape),
            "b64": base64.b64encode(array.tobytes(order="C")).decode("ascii"),
        }
        if plain.get("python") is True:
            encoded["python"] = True
        return encoded
    return plain


def decode(wire: Any, depth: int = 0) -> Any:
    """JSON data from an untrusted kernel -> plain data; raises ValueError when malformed.

    Sizes are checked *before* anything is allocated: the declared shape must match the number
    of bytes actually sent, and no array may exceed MAX_WIRE_ELEMENTS.
    """
    if depth > 8:
        raise ValueError("results nested too deeply")
    if isinstance(wire, list):
        if len(wire) > 64:
            raise ValueError("a result tuple longer than 64 items")
        return [decode(w, depth + 1) for w in wire]
    if not isinstance(wire, dict) or not isinstance(wire.get("dtype"), str):
        raise ValueError("unexpected result structure")
    dtype = wire["dtype"]
    if dtype == "none":
        return {"dtype": "none"}
    if dtype == "str":
        return {"dtype": "str", "text": str(wire.get("text", ""))[:10_000]}
    if dtype == "sympy":
        if not isinstance(wire.get("srepr"), str) or len(wire["srepr"]) > 100_000:
            raise ValueError("a sympy result without (or with too much) text")
        return {"dtype": "sympy", "srepr": wire["srepr"]}
    wire_dtype = _WIRE_DTYPES.get(dtype)
    shape = wire.get("shape")
    if wire_dtype is None or not isinstance(shape, list) or len(shape) > 8:
        raise ValueError(f"unexpected array description (dtype {dtype!r})")
    if not all(type(n) is int and 0 <= n <= MAX_WIRE_ELEMENTS for n in shape):
        raise ValueError("unexpected array shape")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    itemsize = np.dtype(wire_dtype).itemsize
    data = wire.get("b64")
    if count > MAX_WIRE_ELEMENTS or not isinstance(data, str):
        raise ValueError(f"array of {count} elements (limit {MAX_WIRE_ELEMENTS})")
    if len(data) > 4 * ((count * itemsize + 2) // 3) + 4:
        raise ValueError("array data longer than its shape says")
    raw = base64.b64decode(data, validate=True)
    if len(raw) != count * itemsize:
        raise ValueError("array data does not match its shape")
    array = np.frombuffer(raw, dtype=np.dtype(wire_dtype)).reshape(shape).copy()
    if wire.get("python") is True and dtype == "bool" and not shape:
        return {"dtype": dtype, "array": array, "python": True}
    return {"dtype": dtype, "array": array}


# ---------------------------------------------------------------- describing values


def describe(array: Any, max_chars: int = 160) -> str:
    """A short text form of plain data or an array; booleans print as True/False."""
    if isinstance(array, dict):
        if "array" in array:
            array = array["array"]
        elif array.get("dtype") == "sympy":
            return _cut(_sympy_text(array["srepr"]), max_chars)
        elif array.get("dtype") == "str":
            return _cut(repr(array["text"]), max_chars)
        else:
            return "None"
    if isinstance(array, list):
        return "(" + ", ".join(describe(a, max_chars // 2) for a in array) + ")"
    array = np.asarray(array)
    with np.printoptions(precision=4, threshold=12, edgeitems=3, linewidth=10_000):
        text = str(array)
    return _cut(" ".join(text.split()), max_chars)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _sympy_text(srepr: str) -> str:
    try:
        from course.safe_sympy import parse_srepr

        return str(parse_srepr(srepr))
    except Exception:  # noqa: BLE001 - only for display
        return srepr


# ---------------------------------------------------------------- comparing


def compare(
    want: Any, got: Any, tolerance: Tolerance | None = None, path: str = ""
) -> Mismatch | None:
    """None when `got` matches `want` (both plain data), else the first `Mismatch`."""
    if isinstance(want, list):
        if not isinstance(got, list):
            return _type_mismatch(want, got, path)
        if len(got) != len(want):
            brief = f"{len(got)} values; the result should have {len(want)}"
            return Mismatch(
                "length", f"expected {len(want)} values, got {len(got)}", path, brief=brief
            )
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            found = compare(w, g, tolerance, f"{path}item {i}" if not path else f"{path}, item {i}")
            if found:
                return found
        return None
    if not isinstance(got, dict):
        return _type_mismatch(want, got, path)
    kind = want.get("dtype")
    if kind == "sympy":
        return _compare_sympy(want, got, path)
    if kind == "str":
        if got.get("dtype") != "str" or got.get("text") != want["text"]:
            return Mismatch(
                "text", f"expected {describe(want)}, got {describe(got)}", path, brief="wrong text"
            )
        return None
    if kind == "none":
        return None if got.get("dtype") == "none" else _type_mismatch(want, got, path)
    return _compare_arrays(want, got, tolerance, path)


def _type_mismatch(want: Any, got: Any, path: str) -> Mismatch:
    message = f"expected {_kind(want)}, got {_kind(got)}"
    return Mismatch("type", message, path, brief=f"got {_kind(got)}; it should be {_kind(want)}")


def _kind(plain: Any) -> str:
    if isinstance(plain, list):
        return f"a tuple of {len(plain)} values"
    if not isinstance(plain, dict):
        return "something else"
    dtype = plain.get("dtype")
    if "array" in plain:
        if dtype == "bool" and "python" not in plain and plain["array"].ndim == 0:
            return "a 0-d bool tensor (bool(...) makes it a Python bool)"
        if dtype in ("int", "float", "bool"):
            return f"a Python {dtype}"
        return f"a {dtype} tensor of shape {tuple(plain['array'].shape)}"
    return {"sympy": "a sympy expression", "str": "a string", "none": "None"}.get(dtype, "?")


_NUMBERS = ("int", "float", "bool")


def _is_python(plain: dict) -> bool:
    """A Python number. A boolean *tensor* is labelled "bool" too; only a 0-d one can be a
    Python bool (a mask of shape (3, 3) returned as float is a dtype mistake, not a type one)."""
    return plain["dtype"] in _NUMBERS and (plain["dtype"] != "bool" or plain["array"].ndim == 0)


def _compare_arrays(
    want: dict, got: dict, tolerance: Tolerance | None, path: str
) -> Mismatch | None:
    if "array" not in got:
        return _type_mismatch(want, got, path)
    w, g = want["array"], got["array"]
    want_python, got_python = _is_python(want), _is_python(got)
    if want_python != got_python:
        return _type_mismatch(want, got, path)
    if not want_python and got["dtype"] != want["dtype"]:
        brief = f"dtype {got['dtype']}; the result's dtype should be {want['dtype']}"
        return Mismatch(
            "dtype", f"dtype {got['dtype']}, expected {want['dtype']}", path, brief=brief
        )
    if want_python and want["dtype"] == "bool" and got["dtype"] != "bool":
        return _type_mismatch(want, got, path)
    if want.get("python") is True and not got.get("python"):
        return _type_mismatch(want, got, path)  # a 0-d bool tensor where a Python bool is asked
    if g.shape != w.shape:
        brief = f"shape {tuple(g.shape)}; the result's shape should be {tuple(w.shape)}"
        return Mismatch(
            "shape", f"shape {tuple(g.shape)}, expected {tuple(w.shape)}", path, brief=brief
        )
    tol = tolerance or tolerance_for(want["dtype"])
    if w.dtype == np.bool_ or g.dtype == np.bool_:
        return _compare_exact(w, g, path)
    w64, g64 = w.astype(np.float64), g.astype(np.float64)
    nan = np.isnan(g64) & ~np.isnan(w64)
    if nan.any():
        return Mismatch(
            "nan",
            f"{int(nan.sum())} NaN value(s) where numbers are expected, first at index "
            f"{_first(nan)}",
            path,
            _first(nan),
        )
    missing_nan = np.isnan(w64) & ~np.isnan(g64)
    with np.errstate(invalid="ignore"):
        inf_differs = (np.isinf(w64) | np.isinf(g64)) & ~(w64 == g64)
    inf_differs &= ~np.isnan(w64)
    if inf_differs.any():
        at = _first(inf_differs)
        return Mismatch(
            "inf",
            f"infinities differ at index {at}: expected {w64[at]:g}, got {g64[at]:g}",
            path,
            at,
            brief=f"an infinity where none is expected, or a number where one is, at index {at}",
        )
    if missing_nan.any():
        return Mismatch(
            "nan", f"a number where NaN is expected, at index {_first(missing_nan)}", path
        )
    finite = np.isfinite(w64)
    with np.errstate(invalid="ignore", over="ignore"):
        bad = finite & ~(np.abs(g64 - w64) <= tol.atol + tol.rtol * np.abs(w64))
    if bad.any():
        at = _first(bad)
        err = float(np.max(np.abs(g64[bad] - w64[bad])))
        return Mismatch(
            "values",
            f"{int(bad.sum())} of {w64.size} values differ (largest |error| {err:.3g}, allowed "
            f"{tol}); first at index {at}: expected {w64[at]:.6g}, got {g64[at]:.6g}",
            path,
            at,
            brief=f"{int(bad.sum())} of {w64.size} values differ (largest |error| {err:.3g}, "
            f"allowed {tol}); first at index {at}",
        )
    return None


def _compare_exact(w: np.ndarray, g: np.ndarray, path: str) -> Mismatch | None:
    bad = w != g
    if bad.any():
        at = _first(bad)
        return Mismatch(
            "values",
            f"{int(bad.sum())} of {w.size} entries differ; first at index {at}: expected "
            f"{w[at].item()!r}, got {g[at].item()!r}",
            path,
            at,
            brief=f"{int(bad.sum())} of {w.size} entries differ; first at index {at}",
        )
    return None


def _first(mask: np.ndarray) -> tuple:
    if mask.ndim == 0:
        return ()
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _compare_sympy(want: dict, got: dict, path: str) -> Mismatch | None:
    import sympy

    from course.safe_sympy import parse_srepr

    if got.get("dtype") != "sympy":
        return Mismatch("type", f"expected a sympy expression, got {_kind(got)}", path)
    try:
        w, g = parse_srepr(want["srepr"]), parse_srepr(got["srepr"])
    except ValueError as exc:
        return Mismatch("sympy", f"could not read the expression: {exc}", path)
    if _equivalent(w, g, sympy):
        return None
    if _same_names_other_assumptions(w, g):
        return Mismatch(
            "sympy",
            f"{g} uses symbols with the same names but other assumptions than the notebook's "
            "(e.g. made without positive=True): use the symbols defined in the setup cell",
            path,
        )
    return Mismatch(
        "sympy",
        f"got {_cut(str(g), 120)}, which is not equivalent to the expected expression",
        path,
    )


def _equivalent(w, g, sympy) -> bool:
    try:
        difference = sympy.simplify(g - w)
    except Exception:  # noqa: BLE001 - sympy raises many kinds on odd input
        return False
    return difference == 0


def _same_names_other_assumptions(w, g) -> bool:
    """True when `g` equals `w` once symbols of the same name are identified."""
    import sympy

    wf = {s.name: s for s in getattr(w, "free_symbols", set())}
    gf = {s.name: s for s in getattr(g, "free_symbols", set())}
    if set(wf) != set(gf) or all(wf[n] == gf[n] for n in wf):
        return False
    return _equivalent(w.subs({wf[n]: gf[n] for n in wf}), g, sympy)
