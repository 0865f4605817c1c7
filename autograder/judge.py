"""The one API every hidden test goes through: `judge("01-softmax/stable", softmax)`.

A verdict is computed in three steps that never share objects, only plain data:

1. `exercise.probes(seed)` makes the inputs (fresh random tensors and edge cases) and
   says how to compare, on the grader's side;
2. `run_probe(fn, probe)` calls the learner's function on a copy of the inputs, watches
   for forbidden shortcuts and a time limit, and turns what came back into plain numpy
   arrays after checking its exact type (a tensor subclass with a lying `__eq__` never
   reaches a comparison);
3. `compare(probe, plain)` checks dtype, shape, NaN pattern and values against the
   reference kernel's output for the same inputs.

In a notebook all three run in the kernel, which is what a learner validating their
work needs. The class grader (`autograder.grading`) runs step 2 in a sandboxed worker
and steps 1 and 3 in its own process, so a submission cannot forge its verdict.
"""

from __future__ import annotations

import importlib
import os
import signal
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["judge", "grade", "Probe", "Exercise", "Verdict", "JudgeFailed"]

# Captured at import so that later monkeypatching of these names changes nothing here.
_TENSOR = torch.Tensor
_detach = torch.Tensor.detach
_to = torch.Tensor.to
_cpu = torch.Tensor.cpu
_contiguous = torch.Tensor.contiguous
_numpy = torch.Tensor.numpy
_clone = torch.Tensor.clone


class JudgeFailed(AssertionError):
    """Raised by `judge` when a hidden test fails; nbgrader scores the cell zero."""


class ForbiddenCall(RuntimeError):
    """The learner's function used a built-in the exercise asks them to write themselves."""


class ProbeTimeout(RuntimeError):
    """The learner's function ran past the per-probe time limit."""


@dataclass
class Probe:
    """One call of the learner's function and how its result is judged.

    `call` is `"value"` (compare the return value) or `"grad"` (compare the gradient of
    `sum(out * weight)` with respect to the first argument, which tests that the function
    is differentiable and that its backward pass is right).
    """

    name: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    atol: float = 1e-5
    rtol: float = 1e-4
    call: str = "value"
    grad_weight_seed: int = 0
    check_dtype: bool = True
    # A fixed target (a tensor, number or sympy expression) instead of the reference's output,
    # e.g. the theoretical value a Monte Carlo estimate must approach.
    expected: Any = None


@dataclass(frozen=True)
class Fn:
    """A probe argument that is a function: named by "module:attr", never pickled.

    Only non-secret helpers may be named (`torch...` or `autograder.probe_helpers...`), so the
    sandboxed worker, which cannot read `solutions/`, can rebuild the same argument.
    """

    ref: str

    def resolve(self) -> Callable:
        module, _, attr = self.ref.partition(":")
        if not (module == "torch" or module.startswith(("torch.", "autograder.probe_helpers"))):
            raise ValueError(f"Fn may only name torch or autograder.probe_helpers, not {module}")
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj


@dataclass
class Exercise:
    """A graded exercise: where its inputs come from, the reference, what is forbidden."""

    id: str
    title: str
    function: str
    reference: Callable[..., Any]
    probes: Callable[[torch.Generator], list[Probe]]
    forbidden_ops: frozenset[str] = frozenset()
    forbidden_hint: str = ""
    time_limit_s: float = 10.0

    def make_probes(self, seed: int | None = None) -> list[Probe]:
        return self.probes(torch.Generator().manual_seed(exercise_seed(self.id, seed)))


@dataclass
class ProbeVerdict:
    name: str
    passed: bool
    message: str = ""


@dataclass
class Verdict:
    exercise_id: str
    title: str
    probes: list[ProbeVerdict]

    @property
    def passed(self) -> bool:
        return bool(self.probes) and all(p.passed for p in self.probes)

    def report(self) -> str:
        failed = [p for p in self.probes if not p.passed]
        head = "✔" if self.passed else "✘"
        lines = [
            f"{head} {self.exercise_id} ({self.title}): "
            f"{len(self.probes) - len(failed)}/{len(self.probes)} hidden checks passed"
        ]
        shown: set[str] = set()
        for probe in failed:
            if probe.message in shown:
                lines.append(f"  ✘ {probe.name}: (same reason)")
            else:
                lines.append(f"  ✘ {probe.name}: {probe.message}")
            shown.add(probe.message)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "exercise": self.exercise_id,
            "title": self.title,
            "passed": self.passed,
            "probes": [vars(p) for p in self.probes],
        }


def exercise_seed(exercise_id: str, seed: int | None = None) -> int:
    """A per-exercise seed: the same inputs for every student, so that runs are reproducible."""
    if seed is None:
        seed = int(os.environ.get("AUTOGRADER_SEED", "20261125"))
    return (zlib.crc32(exercise_id.encode()) ^ seed) & 0x7FFFFFFF


# ---------------------------------------------------------------- the learner's side


class _ForbiddenOps(TorchDispatchMode):
    """Catches forbidden operators at the ATen level, whatever Python name reached them."""

    def __init__(self, names: frozenset[str]):
        super().__init__()
        self.names = names

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in self.names:
            raise ForbiddenCall(name)
        return func(*args, **(kwargs or {}))


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """SIGALRM-based limit; only possible on the main thread (a kernel's cells run there)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(signum, frame):
        raise ProbeTimeout(f"took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _copy_arg(value: Any) -> Any:
    if type(value) is _TENSOR:
        return _clone(_detach(value))
    if isinstance(value, Fn):
        return value.resolve()
    if type(value) in (tuple, list):
        return type(value)(_copy_arg(v) for v in value)
    return value


def to_plain(value: Any) -> Any:
    """The result as plain data: numpy arrays (with their torch dtype name), numbers, tuples.

    Only exact `torch.Tensor`s, Python numbers and tuples/lists of them are accepted: any
    other type is reported by name, so a lying object never gets compared.
    """
    if type(value) is _TENSOR:
        dtype = str(value.dtype).removeprefix("torch.")
        tensor = _contiguous(_cpu(_detach(value)))
        if value.dtype == torch.bfloat16:
            tensor = _to(tensor, torch.float32)
        return {"dtype": dtype, "array": np.array(_numpy(tensor), copy=True)}
    if type(value) in (bool, int, float):
        return {"dtype": type(value).__name__, "array": np.array(value)}
    if type(value) in (tuple, list):
        return [to_plain(v) for v in value]
    if type(value).__module__.startswith("sympy."):
        import sympy

        if isinstance(value, sympy.Basic):
            return {"dtype": "sympy", "srepr": sympy.srepr(value)}
    raise TypeError(f"returned a {type(value).__module__}.{type(value).__qualname__}")


_FRIENDLY = {
    "softmax": "softmax (torch.softmax / F.softmax / Tensor.softmax)",
    "log_softmax": "log_softmax (torch.log_softmax / F.log_softmax)",
    "logsumexp": "logsumexp (torch.logsumexp)",
    "nll_loss": "nll_loss (F.nll_loss / F.cross_entropy)",
    "cross_entropy_loss": "cross_entropy (F.cross_entropy)",
}


def _friendly_op(aten_name: str) -> str:
    base = aten_name.lstrip("_").removeprefix("safe_").removesuffix("_nd").removesuffix("2d")
    return _FRIENDLY.get(base, f"`{aten_name}`")


def _output_for(fn: Callable, probe: Probe, forbidden: frozenset[str]) -> Any:
    args = tuple(_copy_arg(a) for a in probe.args)
    if probe.call == "grad":
        args = (args[0].requires_grad_(True), *args[1:])
    with _ForbiddenOps(forbidden):
        out = fn(*args, **probe.kwargs)
    if probe.call != "grad":
        return out
    if type(out) is not _TENSOR:
        raise TypeError(f"returned a {type(out).__qualname__}, not a torch.Tensor")
    weight = _grad_weight(tuple(out.shape), out.dtype, probe.grad_weight_seed)
    (grad,) = torch.autograd.grad((out * weight).sum(), args[0], allow_unused=True)
    if grad is None:
        raise RuntimeError("the output does not depend on the input through autograd")
    return grad


def _grad_weight(shape: tuple, dtype: torch.dtype, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def run_probe(fn: Callable, probe: Probe, exercise: Exercise) -> dict:
    """Call the learner's `fn` on `probe`; return `{"ok": plain}` or `{"error": message}`."""
    try:
        with _time_limit(exercise.time_limit_s):
            out = _output_for(fn, probe, exercise.forbidden_ops)
        return {"ok": to_plain(out)}
    except ForbiddenCall as exc:
        return {
            "error": f"uses the built-in {_friendly_op(str(exc))}, which this exercise "
            f"asks you to write yourself. {exercise.forbidden_hint}".strip()
        }
    except NotImplementedError:
        return {"error": "not written yet (raises NotImplementedError)"}
    except ProbeTimeout as exc:
        return {"error": f"timed out: {exc}"}
    except Exception as exc:  # noqa: BLE001 - anything the learner's code raises is a verdict
        return {"error": f"raised {type(exc).__name__}: {_short(str(exc))}"}


# ---------------------------------------------------------------- the grader's side


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(array: np.ndarray) -> str:
    with np.printoptions(precision=4, threshold=8, edgeitems=2, linewidth=80):
        return _short(str(array), 120)


def _compare_sympy(want: dict, got: dict) -> str | None:
    from autograder.safe_sympy import parse_srepr

    if got.get("dtype") != "sympy":
        return "expected a sympy expression"
    import sympy

    try:
        w, g = parse_srepr(want["srepr"]), parse_srepr(got["srepr"])
    except ValueError as exc:
        return f"could not read the expression: {exc}"
    if sympy.simplify(g - w) != 0:
        return f"not equivalent to the expected expression: got {_short(str(g), 120)}"
    return None


def _compare_arrays(want: dict, got: Any, probe: Probe) -> str | None:
    if isinstance(want, dict) and want.get("dtype") == "sympy":
        return _compare_sympy(want, got if isinstance(got, dict) else {})
    if not isinstance(got, dict) or "array" not in got:
        return (
            f"expected a tensor, got {'a sequence' if isinstance(got, list) else 'something else'}"
        )
    w, g = want["array"], got["array"]
    if probe.check_dtype and got["dtype"] != want["dtype"]:
        return f"dtype {got['dtype']}, expected {want['dtype']} (keep the input's dtype)"
    if not isinstance(g, np.ndarray) or g.shape != w.shape:
        return f"shape {getattr(g, 'shape', '?')}, expected {w.shape}"
    if not np.issubdtype(g.dtype, np.number) and g.dtype != np.bool_:
        return f"array of {g.dtype}, expected numbers"
    w64, g64 = w.astype(np.float64), g.astype(np.float64)
    if (np.isnan(g64) & ~np.isnan(w64)).any():
        return f"NaN where the reference is {'finite' if np.isfinite(w64).any() else 'defined'}"
    with np.errstate(invalid="ignore"):
        same_inf = (np.isinf(w64) == np.isinf(g64)) & (~np.isinf(w64) | (w64 == g64))
    if not same_inf.all():
        return "infinities differ from the reference"
    finite = np.isfinite(w64) & np.isfinite(g64)
    if not np.allclose(g64[finite], w64[finite], atol=probe.atol, rtol=probe.rtol):
        err = np.abs(g64[finite] - w64[finite]).max()
        return (
            f"values differ (largest |error| {err:.3g}, allowed atol={probe.atol:g}, "
            f"rtol={probe.rtol:g}); expected {_describe(w)}, got {_describe(g)}"
        )
    return None


def compare(want: Any, got: Any, probe: Probe) -> str | None:
    """None when `got` (plain data) matches `want` (the reference's plain data), else why not."""
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return f"expected a tuple of {len(want)} values"
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            problem = _compare_arrays(w, g, probe)
            if problem:
                return f"item {i}: {problem}"
        return None
    return _compare_arrays(want, got, probe)


def reference_output(exercise: Exercise, probe: Probe) -> Any:
    if probe.expected is not None:
        return to_plain(probe.expected)
    return to_plain(_output_for(exercise.reference, probe, frozenset()))


def verdict_for(exercise: Exercise, probes: list[Probe], results: list[dict]) -> Verdict:
    verdicts = []
    for probe, result in zip(probes, results, strict=True):
        if "error" in result:
            verdicts.append(ProbeVerdict(probe.name, False, result["error"]))
            continue
        problem = compare(reference_output(exercise, probe), result["ok"], probe)
        verdicts.append(ProbeVerdict(probe.name, problem is None, problem or ""))
    return Verdict(exercise.id, exercise.title, verdicts)


def grade(exercise_id: str, fn: Callable, seed: int | None = None) -> Verdict:
    """Run every hidden probe of `exercise_id` on `fn` in this process and return the verdict."""
    from autograder.exercises import get_exercise

    exercise = get_exercise(exercise_id)
    if not callable(fn):
        return Verdict(
            exercise.id,
            exercise.title,
            [ProbeVerdict("callable", False, f"`{exercise.function}` is not a function")],
        )
    probes = exercise.make_probes(seed)
    return verdict_for(exercise, probes, [run_probe(fn, p, exercise) for p in probes])


RECORD_DIR_ENV = "AUTOGRADER_RECORD_DIR"


def record(exercise_id: str, fn: Callable, folder: Path) -> None:
    """Sandbox side of class grading: run the probes the grader wrote, save plain results.

    No reference and no verdict exist here; the grader compares the results afterwards.
    """
    from autograder.transport import file_stem, read_probes, write_results

    payload = read_probes(folder / "probes" / f"{file_stem(exercise_id)}.pt")
    exercise = Exercise(
        exercise_id,
        "",
        payload["function"],
        reference=None,
        probes=None,
        forbidden_ops=frozenset(payload["forbidden_ops"]),
        forbidden_hint=payload["forbidden_hint"],
        time_limit_s=payload["time_limit_s"],
    )
    probes = [
        Probe(
            p["name"],
            tuple(p["args"]),
            p["kwargs"],
            call=p["call"],
            grad_weight_seed=p["grad_weight_seed"],
        )
        for p in payload["probes"]
    ]
    if callable(fn):
        results = [run_probe(fn, probe, exercise) for probe in probes]
    else:
        results = [{"error": f"`{exercise.function}` is not a function"}] * len(probes)
    write_results(folder / "results", exercise_id, results)
    print(f"{exercise_id}: {len(probes)} hidden checks run; the grader computes the verdict.")


def judge(exercise_id: str, fn: Callable, seed: int | None = None) -> None:
    """The hidden-test entry point: print the verdict; raise `JudgeFailed` unless it passed.

    Under the class grader (`AUTOGRADER_RECORD_DIR` set) it only records plain results.
    Returns None: nbgrader would read a number left as a cell's last value as a score.
    """
    if os.environ.get(RECORD_DIR_ENV):
        record(exercise_id, fn, Path(os.environ[RECORD_DIR_ENV]))
        return
    verdict = grade(exercise_id, fn, seed)
    report = verdict.report()
    if not verdict.passed:
        raise JudgeFailed(report)
    print(report)
