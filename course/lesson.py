"""The declaration of a lesson's exercises: plain data, shared by the grader and the tests.

A lesson folder `solutions/NN-topic/` holds its source notebook and `exercises.py`, which
defines `LESSON = Lesson(...)` from the classes here (see `autograder.lesson` for how lessons
are found, and the README's "How to add a lesson"). Nothing here is secret: the references
are passed in by `solutions/`, which the student bundle does not have.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from course.calling import Call, FnRef, Watch
from course.compare import Tolerance

__all__ = [
    "Probe",
    "Mistake",
    "Exercise",
    "Lesson",
    "UnknownExercise",
    "exercise_seed",
    "randn",
    "seeded",
]


class UnknownExercise(KeyError):
    pass


@dataclass(kw_only=True)
class Probe:
    """One call of the learner's function and how its result is judged.

    `mode="grad"` compares the gradients with respect to every floating-point tensor argument.
    `tolerance` overrides the shared table (say why in `Tolerance.why`); `expected` replaces the
    reference's output by a fixed target (e.g. the theoretical value a Monte Carlo estimate
    approaches).
    """

    name: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    mode: str = "value"
    grad_seed: int = 0
    tolerance: Tolerance | None = None
    expected: Any = None
    min_calls: dict[str, int] = field(default_factory=dict)
    # "module:fn" (course.probe_layers) checking what the call left behind: see `Call.inspect`.
    inspect: str = ""

    def call(self) -> Call:
        return Call(
            self.name,
            self.args,
            dict(self.kwargs),
            self.mode,
            self.grad_seed,
            dict(self.min_calls),
            self.inspect,
        )


@dataclass(kw_only=True)
class Mistake:
    """A typical mistake: what a learner would type in the answer cell, and the hint it earns.

    `graded=False` marks a mistake that is measured or shown but not graded (it keeps its
    points, e.g. a cache that re-allocates); `visible=False` one that only the hidden tests
    catch (say why in `why_hidden`).
    """

    id: str
    hint: str
    source: str
    graded: bool = True
    visible: bool = True
    why_hidden: str = ""


@dataclass(kw_only=True)
class Exercise:
    id: str
    title: str
    function: str
    signature: str
    reference: Callable[..., Any]
    answer_cell: str
    test_cell: str
    points: float
    visible: Callable[[], list[Probe]]
    hidden: Callable[[torch.Generator], list[Probe]]
    mistakes: list[Mistake] = field(default_factory=list)
    forbidden: dict[str, str] = field(default_factory=dict)
    forbidden_hint: str = ""
    must_call: tuple[str, ...] = ()
    must_not_call: tuple[str, ...] = ()
    stand_ins: dict[str, str] = field(default_factory=dict)
    uses: tuple[str, ...] = ()
    mutates: tuple[int, ...] = ()
    time_limit_s: float = 10.0
    lesson: str = ""

    @property
    def full_id(self) -> str:
        return f"{self.lesson}/{self.id}"

    @property
    def traced(self) -> bool:
        """Value probes are recorded and replayed by the grader when built-ins are forbidden."""
        return bool(self.forbidden)

    def watch(self, stand_ins: bool = True) -> Watch:
        return Watch(
            forbidden=dict(self.forbidden),
            forbidden_hint=self.forbidden_hint,
            must_call=self.must_call,
            must_not_call=self.must_not_call,
            stand_ins={k: FnRef(v).resolve() for k, v in self.stand_ins.items()}
            if stand_ins
            else {},
            mutates=self.mutates,
            time_limit_s=self.time_limit_s,
        )

    def hidden_probes(self, seed: int) -> list[Probe]:
        return self.hidden(torch.Generator().manual_seed(exercise_seed(self.full_id, seed)))

    def mistake(self, mistake_id: str) -> Mistake:
        for m in self.mistakes:
            if m.id == mistake_id:
                return m
        raise KeyError(mistake_id)


@dataclass(kw_only=True)
class Lesson:
    folder: str
    notebook: str
    exercises: list[Exercise]
    # Locked cells (besides every answer cell) a learner's namespace needs: setup, helpers.
    context_cells: tuple[str, ...] = ("setup",)
    time_limit_s: float = 60.0

    def __post_init__(self) -> None:
        for exercise in self.exercises:
            exercise.lesson = self.folder

    @property
    def total_points(self) -> float:
        return sum(e.points for e in self.exercises)

    def exercise(self, short_or_full_id: str) -> Exercise:
        short = short_or_full_id.rpartition("/")[2]
        for exercise in self.exercises:
            if exercise.id == short:
                return exercise
        raise UnknownExercise(f"no exercise '{short_or_full_id}' in lesson '{self.folder}'")


def exercise_seed(full_id: str, seed: int) -> int:
    """The seed of one exercise's probes in a grading run whose seed is `seed`."""
    return (zlib.crc32(full_id.encode()) ^ seed) & 0x7FFFFFFF


def randn(g: torch.Generator, *shape: int, scale: float = 1.0, dtype=torch.float32) -> torch.Tensor:
    """Normal entries times `scale`, drawn in float64 and then cast: the same draw in every
    dtype, so a float16 probe holds the float32 probe's values, rounded."""
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def seeded(seed: int) -> torch.Generator:
    """A CPU generator with a fixed seed (visible cases are the same for every learner)."""
    return torch.Generator().manual_seed(seed)


def inspected(probes: list[Probe], inspector: str) -> list[Probe]:
    """`probes` with `inspector` ("module:function", see `Probe.inspect`) run after every value
    call; a gradient call checks its own result's type."""
    return [dataclasses.replace(p, inspect=inspector) if p.mode == "value" else p for p in probes]


def inspected_by(inspector: str) -> Callable:
    """Decorates a function that makes probes: its probes are `inspected(..., inspector)`."""

    def decorate(make: Callable[..., list[Probe]]) -> Callable[..., list[Probe]]:
        @functools.wraps(make)
        def made(*args) -> list[Probe]:
            return inspected(make(*args), inspector)

        return made

    return decorate
