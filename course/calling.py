"""How a check calls a learner's function: the same protocol for visible checks, the grader's
hidden probes and a self-learner's `judge`.

One call (`Call`) names its arguments and a mode:
- "value": the return value is compared;
- "grad": the gradient of `sum(out * w)` (w random, seeded) with respect to *every*
  floating-point tensor argument is compared, computed under autograd's anomaly detection so
  that a NaN anywhere in the backward pass is reported even when it is masked out later.

Around every call `call_function` also:
- copies the arguments (the learner's code never sees the probe's own tensors);
- resolves `FnRef` arguments (non-secret test subjects such as a layer to probe for leaks);
- replaces learner functions named in `stand_ins` by built-in equivalents, so that an exercise
  is judged on its own and not through an earlier one that is wrong;
- counts calls of the learner functions named in `must_call` (an exercise that teaches an
  algorithm checks that the algorithm was used);
- watches for forbidden built-ins at the ATen level (`ForbiddenOps`), whatever Python name
  reached them, and at the Python level (`ForbiddenFunctions`) for built-ins that have no
  ATen operator of their own on this build (F.rms_norm decomposes into pow, mean and rsqrt on
  the CPU), and optionally records every ATen operation (`trace.Recorder`);
- checks that the arguments were not modified in place (unless the exercise allows it);
- enforces a time limit.

The outcome is plain data (`course.compare.to_plain`) or an error message.
"""

from __future__ import annotations

import importlib
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from course.compare import to_plain

__all__ = [
    "Call",
    "FnRef",
    "Outcome",
    "call_function",
    "ForbiddenCall",
    "ForbiddenFunctions",
    "friendly_op",
]

_TENSOR = torch.Tensor
_detach = torch.Tensor.detach
_clone = torch.Tensor.clone
_equal = torch.equal

# Modules a FnRef may name: built-ins and the course's own non-secret test subjects
# (course.probe_lm: lesson 08's inspectors of the assembled language model).
_FN_MODULES = ("torch", "course.probe_layers", "course.probe_lm", "course.stand_ins")


@dataclass(frozen=True)
class FnRef:
    """An argument that is a function, named "module:attr" (never pickled, never secret)."""

    ref: str

    def resolve(self) -> Callable:
        module, _, attr = self.ref.partition(":")
        if not (module in _FN_MODULES or module.startswith("torch.")):
            raise ValueError(f"a FnRef may only name {', '.join(_FN_MODULES)}, not {module}")
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj


@dataclass
class Call:
    """One call of the learner's function: positional `args`, `kwargs`, and what is compared."""

    name: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    mode: str = "value"  # "value" or "grad"
    grad_seed: int = 0
    # Learner functions this call must use at least so often (e.g. once per block).
    min_calls: dict[str, int] = field(default_factory=dict)
    # "module:fn" of an inspector run after a value call: fn(learner_fn, args, kwargs, out) -> a
    # problem (str) or None. It sees the arguments as the call left them (a buffer the function
    # had to write into, a view it had to return) and may call the function again.
    inspect: str = ""


@dataclass
class Outcome:
    """What happened: `plain` (the result as plain data) or `error` (a message), and what was
    observed on the way (forbidden built-ins used, calls of learner functions)."""

    plain: Any = None
    error: str | None = None
    forbidden: list[str] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    trace: Any = None

    @property
    def ok(self) -> bool:
        return self.error is None


class ForbiddenCall(RuntimeError):
    """The function used a built-in that the exercise asks the learner to write themselves."""


class ProbeTimeout(RuntimeError):
    pass


class ForbiddenOps(TorchDispatchMode):
    """Raises `ForbiddenCall` at the first forbidden ATen operator, whatever Python name (or
    alias, or functional form) reached it. Advisory inside a learner's kernel: the class grader
    decides from a recorded trace instead (see `course.trace`)."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Nothing here runs under torch.compile; PyTorch's default wraps __torch_dispatch__ for
        # dynamo, which imports torch._dynamo on first use (seconds in every kernel).
        return False

    def __init__(self, names: frozenset[str]):
        super().__init__()
        self.names = names

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in self.names:
            raise ForbiddenCall(name)
        return func(*args, **(kwargs or {}))


class ForbiddenFunctions(TorchFunctionMode):
    """Raises `ForbiddenCall` at the first call of a forbidden *Python-level* built-in.

    A `forbidden` entry whose key is "module:attr" (a torch module, as in `FnRef`) names a
    function (`"torch.nn.functional:rms_norm"`, `"torch:rms_norm"`, `"torch:Tensor.softmax"`)
    or an `nn.Module` class (`"torch.nn:RMSNorm"`, whose `forward` is watched while the call
    runs). This catches a built-in whatever it decomposes into: on the CPU, F.rms_norm reaches
    no ATen operator of its own, so `ForbiddenOps` alone sees only pow, mean and rsqrt. Calls
    through `torch.ops.aten.<name>` of a forbidden ATen name are caught here too (a composite
    operator decomposes before a dispatch mode sees it). Names this build lacks are skipped.
    Advisory like `ForbiddenOps`: code in the learner's process could switch it off."""

    def __init__(self, forbidden: dict[str, str]):
        super().__init__()
        self.functions: dict[Any, str] = {}
        self.classes: dict[type, str] = {}
        for key in forbidden:
            if ":" not in key:
                continue
            found = _resolve_builtin(key)
            if isinstance(found, type):
                self.classes[found] = key
            elif found is not None:
                self.functions[found] = key
        self.aten = frozenset(k for k in forbidden if ":" not in k)
        self._saved: list[tuple[type, Any]] = []

    def __enter__(self):
        for cls, key in self.classes.items():
            self._saved.append((cls, cls.__dict__.get("forward", _MISSING)))
            cls.forward = _refusing(cls.forward, key)
        return super().__enter__()

    def __exit__(self, *exc_info):
        try:
            return super().__exit__(*exc_info)
        finally:
            for cls, forward in reversed(self._saved):
                if forward is _MISSING:
                    del cls.forward
                else:
                    cls.forward = forward
            self._saved.clear()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if not _GUARD_PAUSED[0]:
            try:
                key = self.functions.get(func)
            except TypeError:  # an unhashable callable is none of ours
                key = None
            if key is None and isinstance(func, _ATEN_CALLABLES):
                name = getattr(func, "overloadpacket", func).__name__
                key = name if name in self.aten else None
            if key is not None:
                raise ForbiddenCall(key)
        return func(*args, **(kwargs or {}))


# Every ATen operator F.scaled_dot_product_attention reaches, on every backend (its math path on
# the CPU with a mask calls _safe_softmax first): what an exercise forbidding it lists.
SDPA_ATEN_OPS = (
    "_safe_softmax",
    "scaled_dot_product_attention",
    "_scaled_dot_product_attention_math",
    "_scaled_dot_product_attention_math_for_mps",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable",
)
_MISSING = object()
_ATEN_CALLABLES = (torch._ops.OpOverload, torch._ops.OpOverloadPacket)
# > 0 while the grader's own code (a stand-in) runs inside a learner's call.
_GUARD_PAUSED = [0]


def _resolve_builtin(key: str) -> Any:
    module = key.partition(":")[0]
    if not (module == "torch" or module.startswith("torch.")):
        raise ValueError(f"a forbidden Python-level name must be in a torch module, not {module}")
    try:
        return FnRef(key).resolve()
    except (ImportError, AttributeError):
        return None  # not in this build of PyTorch: nothing to call, nothing to forbid


def _refusing(forward: Callable, key: str) -> Callable:
    def refused(self, *args, **kwargs):
        if _GUARD_PAUSED[0]:
            return forward(self, *args, **kwargs)
        raise ForbiddenCall(key)

    return refused


@contextmanager
def _guard_paused() -> Iterator[None]:
    _GUARD_PAUSED[0] += 1
    try:
        yield
    finally:
        _GUARD_PAUSED[0] -= 1


def friendly_op(aten_name: str, names: dict[str, str]) -> str:
    """The Python-level name a learner would recognise for the ATen operator (or the
    "module:attr" Python-level entry) `aten_name`."""
    return names.get(aten_name) or f"the built-in `{aten_name}`"


# ---------------------------------------------------------------- argument handling


def copy_args(value: Any) -> Any:
    """A deep copy of probe arguments: tensors cloned, FnRefs resolved, containers rebuilt."""
    if type(value) is _TENSOR:
        return _clone(_detach(value))
    if isinstance(value, FnRef):
        return value.resolve()
    if type(value) in (tuple, list):
        return type(value)(copy_args(v) for v in value)
    if type(value) is dict:
        return {k: copy_args(v) for k, v in value.items()}
    return value


def _tensors(value: Any, path: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    if type(value) is _TENSOR:
        yield path, value
    elif type(value) in (tuple, list):
        for i, v in enumerate(value):
            yield from _tensors(v, f"{path}[{i}]")


def _differentiable(args: tuple) -> list[tuple[str, torch.Tensor]]:
    return [
        (f"argument {i}{sub}", t)
        for i, a in enumerate(args)
        for sub, t in _tensors(a)
        if t.is_floating_point()
    ]


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """SIGALRM-based limit; only on the main thread (where a kernel's cells run)."""
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


@contextmanager
def swapped_globals(fn: Callable, replacements: dict[str, Callable]) -> Iterator[None]:
    """Temporarily rebind names in the learner's namespace (the function's globals)."""
    namespace = getattr(fn, "__globals__", None)
    if not isinstance(namespace, dict) or not replacements:
        yield
        return
    missing = object()
    saved = {name: namespace.get(name, missing) for name in replacements}
    namespace.update(replacements)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is missing:
                namespace.pop(name, None)
            else:
                namespace[name] = value


def _stand_in(name: str, fn: Callable, watch: Watch) -> Callable:
    """The grader's built-in equivalent of the learner's `name`: exempt from the watch for
    forbidden built-ins (it is ours, not the learner's), and recorded as one step."""

    def stand_in(*args, **kwargs):
        with _guard_paused():
            if watch.recorder is not None:
                return watch.recorder.call_stand_in(name, fn, args, kwargs)
            with _disable_current_modes():
                return fn(*args, **kwargs)

    stand_in.__name__ = name
    return stand_in


def _counting(name: str, fn: Callable, counts: dict[str, int]) -> Callable:
    def counted(*args, **kwargs):
        counts[name] = counts.get(name, 0) + 1
        return fn(*args, **kwargs)

    counted.__wrapped__ = fn
    return counted


# ---------------------------------------------------------------- the call


@dataclass
class Watch:
    """What to watch during a call (from the exercise's declaration)."""

    # ATen name, or "module:attr" of a Python-level built-in (`ForbiddenFunctions`) -> the
    # friendly name a message shows.
    forbidden: dict[str, str] = field(default_factory=dict)
    forbidden_hint: str = ""
    must_call: tuple[str, ...] = ()
    must_not_call: tuple[str, ...] = ()
    stand_ins: dict[str, Callable] = field(default_factory=dict)
    mutates: tuple[int, ...] = ()  # argument positions the function may write into
    time_limit_s: float = 10.0
    recorder: Any = None  # a course.trace.Recorder, or None


def call_function(fn: Callable, call: Call, watch: Watch | None = None) -> Outcome:
    """Call the learner's `fn` as `call` says, watching as `watch` says; never raises for
    anything the learner's code does (NotImplementedError is reported as "not written yet")."""
    watch = watch or Watch()
    outcome = Outcome()
    if not callable(fn):
        outcome.error = f"is not a function (got a {type(fn).__name__})"
        return outcome
    if watch.forbidden or watch.recorder is not None:
        _warm_up_dispatch()
    try:
        with time_limit(watch.time_limit_s):
            outcome.plain = _watched_call(fn, call, watch, outcome)
    except ForbiddenCall as exc:
        name = friendly_op(str(exc), watch.forbidden)
        outcome.forbidden.append(str(exc))
        outcome.error = (
            f"uses {name}, which this exercise asks you to write yourself. {watch.forbidden_hint}"
        ).strip()
    except NotImplementedError:
        outcome.error = "not written yet (raises NotImplementedError)"
    except ProbeTimeout as exc:
        outcome.error = f"timed out: {exc}"
    except _Problem as exc:
        outcome.error = str(exc)
    except RecursionError:
        outcome.error = "raised RecursionError (a function that calls itself without end?)"
    except Exception as exc:  # noqa: BLE001 - anything the learner's code raises is a verdict
        outcome.error = f"raised {type(exc).__name__}: {_short(str(exc))}"
    return outcome


_WARMED_UP = False


def _warm_up_dispatch() -> None:
    """Pay, once and outside any time limit, for what the first operation under a dispatch mode
    imports (torch._dynamo: seconds on a slow or busy machine), so that a learner's first
    check never times out because of it."""
    global _WARMED_UP
    if not _WARMED_UP:
        with ForbiddenOps(frozenset()):
            torch.zeros(1).add(1)
        _WARMED_UP = True


class _Problem(Exception):
    """A verdict found while calling (not an exception of the learner's code)."""


def _watched_call(fn: Callable, call: Call, watch: Watch, outcome: Outcome) -> Any:
    args = copy_args(call.args)
    kwargs = copy_args(call.kwargs)
    before = [
        (p, _clone(t))
        for i, a in enumerate(args)
        if i not in watch.mutates
        for p, t in _tensors(a, f"argument {i}")
    ]
    namespace = getattr(fn, "__globals__", {}) or {}
    swaps = {name: _stand_in(name, f, watch) for name, f in watch.stand_ins.items()}
    for name in {*watch.must_call, *watch.must_not_call, *call.min_calls}:
        if name in swaps:
            swaps[name] = _counting(name, swaps[name], outcome.calls)
        elif name in namespace:
            swaps[name] = _counting(name, namespace[name], outcome.calls)
    with ExitStack() as stack:
        stack.enter_context(swapped_globals(fn, swaps))
        if call.mode == "grad":
            result = _gradients(fn, args, kwargs, call, watch, stack)
        else:
            if watch.recorder is not None:
                stack.enter_context(watch.recorder.recording(args, kwargs))
            _watch_forbidden(watch, stack)
            out = fn(*args, **kwargs)
            if watch.recorder is not None:
                watch.recorder.set_output(out)
            if call.inspect:
                problem = FnRef(call.inspect).resolve()(fn, args, kwargs, out)
                if problem:
                    raise _Problem(problem)
            result = out
    _check_calls(call, watch, outcome.calls)
    _check_unmodified(before, args)
    try:
        return to_plain(result)
    except TypeError as exc:
        raise _Problem(str(exc)) from None


def _watch_forbidden(watch: Watch, stack: ExitStack) -> None:
    if watch.forbidden:
        stack.enter_context(ForbiddenOps(frozenset(watch.forbidden)))
    if any(":" in key for key in watch.forbidden):
        stack.enter_context(ForbiddenFunctions(watch.forbidden))


def _check_calls(call: Call, watch: Watch, calls: dict[str, int]) -> None:
    for name in watch.must_call:
        if not calls.get(name):
            raise _Problem(f"never calls your `{name}`: this exercise is about building on it")
    for name, least in call.min_calls.items():
        if calls.get(name, 0) < least:
            raise _Problem(
                f"calls your `{name}` {calls.get(name, 0)} time(s) on this input, where the "
                f"algorithm needs {least} (one per block)"
            )
    for name in watch.must_not_call:
        if calls.get(name):
            raise _Problem(f"calls your `{name}`, which this exercise must do without")


def _check_unmodified(before: list, args: tuple) -> None:
    after = dict((p, t) for i, a in enumerate(args) for p, t in _tensors(a, f"argument {i}"))
    for path, saved in before:
        now = after.get(path)
        if now is not None and now.shape == saved.shape and not _equal_nan(now, saved):
            raise _Problem(
                f"modified its input in place ({path}): compute a new tensor instead of writing "
                "into the one you were given"
            )


def _equal_nan(a: torch.Tensor, b: torch.Tensor) -> bool:
    a, b = _detach(a), _detach(b)
    if a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        return bool(((a == b) | (a.isnan() & b.isnan())).all())
    return bool(_equal(a, b))


def _gradients(fn, args, kwargs, call: Call, watch: Watch, stack: ExitStack):
    leaves = _differentiable(args)
    if not leaves:
        raise _Problem("a gradient check needs a floating-point tensor argument")
    for _, tensor in leaves:
        tensor.requires_grad_(True)
    _watch_forbidden(watch, stack)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anomaly mode announces itself on stderr
        with torch.autograd.detect_anomaly(check_nan=True):
            out = fn(*args, **kwargs)
            if type(out) is not _TENSOR:
                raise _Problem(f"returned a {type(out).__qualname__}, not a torch.Tensor")
            if not out.requires_grad:
                raise _Problem(
                    "no gradient flows from the output back to the input: compute with torch "
                    "operations (not NumPy, .item() or .tolist()) so that autograd can follow"
                )
            weight = torch.randn(
                tuple(out.shape), generator=torch.Generator().manual_seed(call.grad_seed)
            ).to(out.dtype)
            try:
                grads = torch.autograd.grad(
                    (out * weight).sum(), [t for _, t in leaves], allow_unused=True
                )
            except RuntimeError as exc:
                if "nan" in str(exc).lower():
                    raise _Problem(
                        "the backward pass produces NaN (autograd's anomaly detection caught it "
                        "in " + _backward_name(str(exc)) + "), even if the forward output looks "
                        "right: a -inf - (-inf) or 0 * inf inside the computation"
                    ) from None
                raise
    out_grads = []
    for (_path, tensor), grad in zip(leaves, grads, strict=True):
        out_grads.append(torch.zeros_like(tensor) if grad is None else grad)
    return tuple(out_grads) if len(out_grads) > 1 else out_grads[0]


def _backward_name(message: str) -> str:
    start = message.find("Function '")
    if start < 0:
        return "the backward pass"
    end = message.find("'", start + 10)
    return f"`{message[start + 10 : end]}`"


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
