"""Plain-data files between the trusted grader and the sandboxed kernel.

Probes go in as `probes/<exercise>.pt`, written with `torch.save` and read with
`torch.load(weights_only=True)`: tensors, numbers, strings and containers only, and
functions as `{"__fn__": "module:attr"}` names. Results come back as JSON (structure,
dtypes, error messages) next to an `.npz` of arrays read with `allow_pickle=False`, so
nothing the learner's code produced is ever unpickled or executed on the grader's side.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

MAX_RESULT_BYTES = 64 * 2**20
MAX_MESSAGE_CHARS = 2000


def file_stem(exercise_id: str) -> str:
    return exercise_id.replace("/", "__")


# ------------------------------------------------------------------ probes (grader -> kernel)


def _encode_arg(value: Any) -> Any:
    from autograder.judge import Fn

    if isinstance(value, Fn):
        return {"__fn__": value.ref}
    if isinstance(value, tuple | list):
        return [_encode_arg(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode_arg(v) for k, v in value.items()}
    return value


def _decode_arg(value: Any, tuples: bool = True) -> Any:
    from autograder.judge import Fn

    if isinstance(value, dict) and set(value) == {"__fn__"}:
        return Fn(value["__fn__"])
    if isinstance(value, list):
        items = [_decode_arg(v) for v in value]
        return tuple(items) if tuples else items
    if isinstance(value, dict):
        return {k: _decode_arg(v) for k, v in value.items()}
    return value


def write_probes(path: Path, exercise, probes: list) -> None:
    payload = {
        "exercise": exercise.id,
        "function": exercise.function,
        "forbidden_ops": sorted(exercise.forbidden_ops),
        "forbidden_hint": exercise.forbidden_hint,
        "time_limit_s": float(exercise.time_limit_s),
        "probes": [
            {
                "name": p.name,
                "args": _encode_arg(list(p.args)),
                "kwargs": _encode_arg(dict(p.kwargs)),
                "call": p.call,
                "grad_weight_seed": int(p.grad_weight_seed),
            }
            for p in probes
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)


def read_probes(path: Path) -> dict:
    payload = torch.load(path, weights_only=True)
    for probe in payload["probes"]:
        probe["args"] = _decode_arg(probe["args"])
        probe["kwargs"] = {k: _decode_arg(v) for k, v in probe["kwargs"].items()}
    return payload


# ------------------------------------------------------------------ results (kernel -> grader)


def _split_arrays(plain: Any, arrays: dict[str, np.ndarray], prefix: str) -> Any:
    if isinstance(plain, list):
        return [_split_arrays(v, arrays, f"{prefix}_{i}") for i, v in enumerate(plain)]
    if isinstance(plain, dict) and "array" in plain:
        arrays[prefix] = plain["array"]
        return {"dtype": plain["dtype"], "array": prefix}
    return plain


def write_results(folder: Path, exercise_id: str, results: list[dict]) -> None:
    arrays: dict[str, np.ndarray] = {}
    manifest = []
    for i, result in enumerate(results):
        if "ok" in result:
            manifest.append({"ok": _split_arrays(result["ok"], arrays, f"p{i}")})
        else:
            manifest.append({"error": str(result["error"])[:MAX_MESSAGE_CHARS]})
    folder.mkdir(parents=True, exist_ok=True)
    stem = file_stem(exercise_id)
    np.savez(folder / f"{stem}.npz", **arrays)
    (folder / f"{stem}.json").write_text(json.dumps({"exercise": exercise_id, "results": manifest}))


class BadResults(ValueError):
    """The results file is missing, oversized or not in the expected shape."""


def _join_arrays(plain: Any, arrays) -> Any:
    if isinstance(plain, list):
        return [_join_arrays(v, arrays) for v in plain]
    if isinstance(plain, dict) and "array" in plain:
        key, dtype = plain.get("array"), plain.get("dtype")
        if not isinstance(key, str) or key not in arrays.files or not isinstance(dtype, str):
            raise BadResults(f"array {key!r} missing")
        return {"dtype": dtype, "array": arrays[key]}
    if isinstance(plain, dict) and plain.get("dtype") == "sympy":
        if not isinstance(plain.get("srepr"), str):
            raise BadResults("sympy result without text")
        return {"dtype": "sympy", "srepr": plain["srepr"]}
    raise BadResults("unexpected result structure")


def read_results(folder: Path, exercise_id: str, n_probes: int) -> list[dict]:
    stem = file_stem(exercise_id)
    manifest_path, arrays_path = folder / f"{stem}.json", folder / f"{stem}.npz"
    if not manifest_path.exists() or not arrays_path.exists():
        raise FileNotFoundError(exercise_id)
    for path in (manifest_path, arrays_path):
        if path.stat().st_size > MAX_RESULT_BYTES:
            raise BadResults(f"{path.name} is larger than {MAX_RESULT_BYTES} bytes")
    try:
        manifest = json.loads(manifest_path.read_text())
        entries = manifest["results"]
        if manifest.get("exercise") != exercise_id or len(entries) != n_probes:
            raise BadResults("results do not belong to this exercise")
        with np.load(arrays_path, allow_pickle=False) as arrays:
            return [
                {"error": str(e["error"])[:MAX_MESSAGE_CHARS]}
                if "error" in e
                else {"ok": _join_arrays(e["ok"], arrays)}
                for e in entries
            ]
    except (KeyError, TypeError, ValueError, OSError) as exc:
        if isinstance(exc, BadResults):
            raise
        raise BadResults(f"unreadable results: {type(exc).__name__}: {exc}") from None
