"""Hidden verdicts, decided in the grader's own process from what a kernel sent back.

`plan_lesson(folder, seed)` prepares a grading run once for the whole class: every exercise's
hidden probes (drawn afresh from the run's seed), the reference's output on each, what every
known mistake outputs on each (to name the mistake a wrong answer looks like), and, for
exercises that forbid built-ins, slightly changed inputs with the reference's output on them
(to replay the learner's recorded computation, see `autograder.replay`).

`judge_exercise(plan, raw)` turns the kernel's raw report for one exercise into an
`ExerciseVerdict`. Nothing in `raw` is trusted: it is validated, decoded with size limits and
compared with the shared comparator (`course.compare`); sympy answers are compared in a child
process with a time limit, since an expression can be made arbitrarily expensive to simplify.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import torch

from autograder.lesson import load_lesson, mistake_function
from autograder.replay import (
    ReplayError,
    constant_refs,
    forbidden_used,
    output_refs,
    replay,
)
from autograder.results import ExerciseVerdict, ProbeVerdict
from course.calling import Watch, call_function, friendly_op
from course.compare import compare, decode, to_plain
from course.diagnose import diagnose, known_mistake
from course.lesson import Exercise, Lesson, Probe
from course.wire import dump_value

SYMPY_TIMEOUT_S = 20.0
# How long the sympy child may take to start (Python, sympy, torch), before its time limit runs.
SYMPY_STARTUP_S = 300.0
SYMPY_MEMORY_BYTES = 2 * 2**30
# How much the inputs of a replayed probe are moved (relative): far above rounding, far below
# anything that changes a branch a correct implementation takes.
PERTURBATION = 1e-3


@dataclass
class ProbePlan:
    probe: Probe
    want: Any
    mistakes: dict[str, dict] = field(default_factory=dict)
    # (args, kwargs) slightly changed: the kernel runs these too, and the recording made on the
    # probe's own inputs must reproduce what the learner's function returned on them.
    moved: tuple | None = None


@dataclass
class ExercisePlan:
    exercise: Exercise
    probes: list[ProbePlan]

    def payload(self) -> dict:
        """What the sandboxed kernel receives: calls and what to watch; no reference, no
        expected value."""
        ex = self.exercise
        return {
            "exercise": ex.full_id,
            "function": ex.function,
            "forbidden": ex.forbidden,
            "forbidden_hint": ex.forbidden_hint,
            "must_call": list(ex.must_call),
            "must_not_call": list(ex.must_not_call),
            "stand_ins": ex.stand_ins,
            "mutates": list(ex.mutates),
            "time_limit_s": ex.time_limit_s,
            "traced": ex.traced,
            "probes": [_call_payload(p.probe, p.probe.args, p.probe.kwargs) for p in self.probes]
            + [
                _call_payload(p.probe, p.moved[0], p.moved[1], moved_of=i)
                for i, p in enumerate(self.probes)
                if p.moved is not None
            ],
        }

    def moved_index(self) -> dict[int, int]:
        """{probe index: index of its moved copy in the payload's probes}."""
        index, found = len(self.probes), {}
        for i, p in enumerate(self.probes):
            if p.moved is not None:
                found[i] = index
                index += 1
        return found


def _call_payload(probe: Probe, args, kwargs, moved_of: int | None = None) -> dict:
    entry = {
        "name": probe.name,
        "args": dump_value(tuple(args)),
        "kwargs": dump_value(dict(kwargs)),
        "mode": probe.mode,
        "grad_seed": probe.grad_seed,
        "min_calls": probe.min_calls,
        **({"inspect": probe.inspect} if probe.inspect else {}),
    }
    if moved_of is not None:
        entry["moved_of"] = moved_of
    return entry


def _reference(exercise: Exercise, probe: Probe, args=None, kwargs=None) -> Any:
    if probe.expected is not None and args is None:
        return to_plain(probe.expected)
    call = probe.call()
    call.min_calls = {}  # a reference kernel calls no learner function
    if args is not None:
        call.args, call.kwargs = args, kwargs
    outcome = call_function(
        exercise.reference, call, Watch(mutates=exercise.mutates, time_limit_s=600)
    )
    if not outcome.ok:
        raise RuntimeError(
            f"reference of {exercise.full_id} failed on {probe.name}: {outcome.error}"
        )
    return outcome.plain


def _moved(value: Any, g: torch.Generator) -> Any:
    if type(value) is torch.Tensor and value.is_floating_point():
        noise = torch.randn(value.shape, generator=g, dtype=torch.float64)
        base = value.double()
        moved = base + PERTURBATION * (base.abs() + 1) * noise
        return torch.where(torch.isfinite(base), moved, base).to(value.dtype)
    if type(value) in (tuple, list):
        return type(value)(_moved(v, g) for v in value)
    if type(value) is dict:
        return {k: _moved(v, g) for k, v in value.items()}
    return value


def _moved_probe(exercise: Exercise, probe: Probe, want: Any, seed: int) -> tuple | None:
    if not exercise.traced or probe.mode != "value" or probe.expected is not None:
        return None
    g = torch.Generator().manual_seed(seed)
    args, kwargs = _moved(tuple(probe.args), g), _moved(dict(probe.kwargs), g)
    moved_want = _reference(exercise, probe, args, kwargs)
    if compare(want, moved_want, probe.tolerance) is None:
        return None  # the output does not move with the inputs: nothing to learn from a replay
    return args, kwargs


def plan_exercise(
    lesson: Lesson, exercise: Exercise, seed: int, mistakes: bool = True
) -> ExercisePlan:
    probes = exercise.hidden_probes(seed)
    fns = (
        {m.id: mistake_function(lesson, exercise, m) for m in exercise.mistakes} if mistakes else {}
    )
    plans = []
    for i, probe in enumerate(probes):
        want = _reference(exercise, probe)
        outcomes = {}
        for mid, fn in fns.items():
            out = call_function(fn, probe.call(), exercise.watch())
            outcomes[mid] = {"out": out.plain} if out.ok else {"error": out.error}
        plans.append(
            ProbePlan(probe, want, outcomes, _moved_probe(exercise, probe, want, seed + i))
        )
    return ExercisePlan(exercise, plans)


def plan_lesson(folder: str, seed: int) -> dict[str, ExercisePlan]:
    """Every exercise of `folder`, planned for a grading run with seed `seed`."""
    lesson = load_lesson(folder)
    return {e.full_id: plan_exercise(lesson, e, seed) for e in lesson.exercises}


# ---------------------------------------------------------------- judging


class BadReport(ValueError):
    """The kernel's report for an exercise is malformed (never a learner's honest mistake)."""


def _decode_results(plan: ExercisePlan, raw: Any) -> list[dict]:
    if not isinstance(raw, dict) or raw.get("exercise") != plan.exercise.full_id:
        raise BadReport("the results do not belong to this exercise")
    results = raw.get("results")
    expected = len(plan.probes) + len(plan.moved_index())
    if not isinstance(results, list) or len(results) != expected:
        raise BadReport("the results do not match the probes")
    decoded = []
    for item in results:
        if not isinstance(item, dict):
            raise BadReport("malformed result")
        if "error" in item:
            decoded.append({"error": str(item["error"])[:2000]})
            continue
        try:
            entry = {"ok": decode(item.get("ok"))}
        except ValueError as exc:
            raise BadReport(f"malformed result: {exc}") from None
        entry["trace"] = item.get("trace")
        decoded.append(entry)
    return decoded


def judge_exercise(plan: ExercisePlan, raw: Any, missing_reason: str = "") -> ExerciseVerdict:
    """The verdict on one exercise from the kernel's raw report (None when none came)."""
    ex = plan.exercise
    verdict = ExerciseVerdict(ex.full_id, ex.title)
    if raw is None:
        verdict.probes = [ProbeVerdict("ran", False, missing_reason or "no results came back")]
        return verdict
    try:
        results = _decode_results(plan, raw)
    except BadReport as exc:
        verdict.probes = [
            ProbeVerdict("results", False, str(exc), tampering="malformed results from the kernel")
        ]
        return verdict
    moved = plan.moved_index()
    comparisons = [
        _probe_verdict(ex, p, results[i], results[moved[i]] if i in moved else None)
        for i, p in enumerate(plan.probes)
    ]
    verdict.probes = _settle_sympy(plan, results, comparisons)
    verdict.looks_like = _looks_like(ex, plan, results, verdict.probes)
    return verdict


def _same_outcome(mistake: dict, result: dict, passed: bool, want: Any, tol) -> bool:
    """Whether a known mistake behaved like the learner on one probe."""
    if passed:
        return "out" in mistake and compare(want, mistake["out"], tol) is None
    if "error" in result:
        return (
            "error" in mistake and known_mistake(None, result["error"], {"m": mistake}, tol) == "m"
        )
    return "out" in mistake and compare(mistake["out"], result.get("ok"), tol) is None


def _looks_like(ex: Exercise, plan: ExercisePlan, results: list, verdicts: list) -> str:
    """The hint of the known mistake that behaves like the learner on every probe."""
    if all(v.passed for v in verdicts) or any(v.tampering for v in verdicts):
        return ""
    for mistake in ex.mistakes:
        if all(
            _same_outcome(
                p.mistakes.get(mistake.id, {}),
                results[i],
                verdicts[i].passed,
                p.want,
                p.probe.tolerance,
            )
            for i, p in enumerate(plan.probes)
        ):
            return mistake.hint
    return ""


def _probe_verdict(
    ex: Exercise, plan: ProbePlan, result: dict, moved: dict | None
) -> ProbeVerdict | None:
    """The verdict on one probe, or None when it needs sympy (settled in a child process)."""
    name = plan.probe.name
    if "error" in result:
        return ProbeVerdict(name, False, result["error"])
    got = result["ok"]
    if ex.traced and plan.probe.mode == "value" and plan.probe.expected is None:
        problem = _trace_problem(ex, plan, result, moved)
        if problem:
            return problem
    if _has_sympy(plan.want):
        return None
    return _value_verdict(ex, plan, got)


def _value_verdict(ex: Exercise, plan: ProbePlan, got: Any) -> ProbeVerdict:
    mismatch = compare(plan.want, got, plan.probe.tolerance)
    if mismatch is None:
        return ProbeVerdict(plan.probe.name, True)
    hint = diagnose(plan.want, got, mismatch, plan.probe.args) or ""
    return ProbeVerdict(plan.probe.name, False, mismatch.redacted(), hint)


def _trace_problem(
    ex: Exercise, plan: ProbePlan, result: dict, moved: dict | None
) -> ProbeVerdict | None:
    name, trace = plan.probe.name, result.get("trace")
    if not isinstance(trace, dict):
        return ProbeVerdict(
            name,
            False,
            "the result could not be verified: no recording of the computation reached the "
            "grader (its recorder was switched off or replaced in this notebook)",
            tampering="the recording of the learner's operations was missing",
        )
    if trace.get("untraceable"):
        return ProbeVerdict(
            name, False, f"the computation cannot be verified: {str(trace['untraceable'])[:200]}"
        )
    used = forbidden_used(trace, set(ex.forbidden))
    if used:
        names = ", ".join(friendly_op(u, ex.forbidden) for u in used)
        message = (
            f"uses {names}, which this exercise asks you to write yourself. {ex.forbidden_hint}"
        )
        return ProbeVerdict(name, False, message.strip())
    try:
        if set(output_refs(trace)) & constant_refs(trace) or not output_refs(trace):
            return _tampered(
                name, "the returned value was not computed by operations the grader saw"
            )
        stand_ins = ex.watch().stand_ins
        replayed = to_plain(
            replay(trace, tuple(plan.probe.args), dict(plan.probe.kwargs), stand_ins)
        )
        if compare(replayed, result["ok"], plan.probe.tolerance) is not None:
            return _tampered(name, "the recorded operations do not reproduce the returned value")
        if plan.moved is not None:
            args, kwargs = plan.moved
            again = to_plain(replay(trace, args, kwargs, stand_ins))
            if moved is None or "ok" not in moved:
                return None  # the function failed on the changed inputs: judged on its own
            if compare(moved["ok"], again, plan.probe.tolerance) is not None:
                return _tampered(
                    name,
                    "the result does not follow the inputs when they change slightly (values "
                    "taken out of tensors with .item()/.tolist(), or computed where the grader "
                    "could not see, cannot be verified)",
                )
    except ReplayError as exc:
        return _tampered(name, f"the recorded operations could not be replayed: {exc}")
    except TypeError as exc:
        return _tampered(name, f"the replay returned something unexpected: {exc}")
    return None


def _tampered(name: str, why: str) -> ProbeVerdict:
    return ProbeVerdict(name, False, f"could not be verified: {why}", tampering=why)


def _has_sympy(plain: Any) -> bool:
    if isinstance(plain, list):
        return any(_has_sympy(p) for p in plain)
    return isinstance(plain, dict) and plain.get("dtype") == "sympy"


# ---------------------------------------------------------------- sympy, with a time limit


def _settle_sympy(
    plan: ExercisePlan, results: list[dict], verdicts: list[ProbeVerdict | None]
) -> list[ProbeVerdict]:
    pending = [i for i, v in enumerate(verdicts) if v is None]
    if not pending:
        return verdicts
    jobs = [{"want": _wire(plan.probes[i].want), "got": _wire(results[i]["ok"])} for i in pending]
    answers = compare_sympy_isolated(jobs)
    for i, answer in zip(pending, answers, strict=True):
        name = plan.probes[i].probe.name
        if answer is None:
            verdicts[i] = ProbeVerdict(name, True)
        else:
            verdicts[i] = ProbeVerdict(name, False, answer)
    return verdicts


def _wire(plain: Any) -> Any:
    from course.compare import encode

    return encode(plain)


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (SYMPY_MEMORY_BYTES, SYMPY_MEMORY_BYTES))


def compare_sympy_isolated(jobs: list[dict], timeout: float = SYMPY_TIMEOUT_S) -> list[str | None]:
    """Compare plain (encoded) results holding sympy expressions in a child process.

    Returns, per job, None (equivalent) or the reason. A comparison that runs past `timeout`
    or past the child's memory limit fails with a reason a student understands. The time limit
    starts once the child has started (it says "ready"): starting Python and sympy is
    not the expression's fault, and on a busy machine takes longer than a comparison may.
    """
    command = [sys.executable, "-m", "autograder.sympy_child"]
    with subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=_limit_memory,
    ) as child:
        try:
            if not _child_ready(child, SYMPY_STARTUP_S):
                child.kill()
                return [
                    "the expression could not be compared (the comparison did not start)"
                ] * len(jobs)
            stdout, _ = child.communicate(json.dumps(jobs), timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            return [
                f"the expression took longer than {timeout:g} s to compare (it is far bigger than "
                "the answer needs to be)"
            ] * len(jobs)
    try:
        answers = json.loads(stdout)
        if not isinstance(answers, list) or len(answers) != len(jobs):
            raise ValueError
    except ValueError:
        return ["the expression could not be compared (too large or malformed)"] * len(jobs)
    return [None if a is None else str(a)[:300] for a in answers]


def _child_ready(child: subprocess.Popen, limit_s: float) -> bool:
    """Whether the child printed its "ready" line within `limit_s` seconds."""
    readable, _, _ = select.select([child.stdout], [], [], limit_s)
    return bool(readable) and child.stdout.readline().strip() == "ready"
