"""`Module`: `nn.Module` whose parameters, buffers and submodules are read without `__getattr__`.

Why. `nn.Module` keeps parameters, buffers and submodules in dicts (`_parameters`, `_buffers`,
`_modules`), so `self.weight` or `self.attn` first fails Python's ordinary attribute lookup and
only then reaches `nn.Module.__getattr__`. Python 3.11 builds a formatted AttributeError for that
failed lookup before throwing it away: about 9,000 machine instructions per read. A cached
decoding step of the `cpu` preset's model makes about 80 such reads, which callgrind put at a
quarter of the whole step (Python 3.12 no longer builds the exception).

How. Whenever a name is registered on an instance, `Module` puts a small non-data descriptor of
that name on the instance's class. The ordinary lookup then finds it and it reads the very same
dicts, so nothing is cached and nothing can go stale: `load_state_dict(assign=True)`,
`torch.func.functional_call` (which writes the dicts directly), `.to()` and reassignment all keep
working. A plain attribute of the same name in an instance's `__dict__` (e.g. `bias = None`)
still wins, as it always did.

Calls. `nn.Module.__call__` runs hooks around `forward`; with none registered it still goes
through two Python frames and a dozen checks before reaching `forward`: callgrind counts about
9,400 machine instructions per call, more than a small tensor's `view` (about 5,700). A cached
decoding step of the `cpu` preset's model makes 17 module calls per token, so `Module.__call__`
makes the same no-hook test in one frame and calls `forward` directly. Whenever a hook is
registered (on this module or globally), under `torch.jit.trace` or for a `module.compile()`d
module it hands over to `nn.Module.__call__`, so hooks and tracing behave exactly as before
(`torch.compile` traces this test like nn.Module's own, guarding on the hook dicts, without
graph breaks).
Everything else is `nn.Module`'s.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules import module as _torch_module

# A private helper of nn.Module (the global-hook test of its own `_call_impl`); without it (another
# torch version) every call takes nn.Module's path.
_any_global_hook = getattr(_torch_module, "_has_any_global_hook", lambda: True)
# Bound once: each module call then skips two attribute lookups.
_tracing_state = torch._C._get_tracing_state


class _Registered:
    """Reads `name` from the nn.Module dict it was registered in (or, if it moved, any of them)."""

    __slots__ = ("name", "store")

    def __init__(self, name: str, store: str) -> None:
        self.name, self.store = name, store

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        try:
            return obj.__dict__[self.store][self.name]
        except KeyError:
            d = obj.__dict__
            for store in (d["_parameters"], d["_modules"], d["_buffers"]):
                if self.name in store:
                    return store[self.name]
        raise AttributeError(f"{type(obj).__name__!r} object has no attribute {self.name!r}")


class Module(nn.Module):
    """`nn.Module` with fast reads of registered names and fast calls (see the module docstring)."""

    def __call__(self, *args, **kwargs):
        if (
            self._forward_pre_hooks
            or self._forward_hooks
            or self._backward_pre_hooks
            or self._backward_hooks
            or self._compiled_call_impl is not None
            or _any_global_hook()
            or _tracing_state()
        ):
            return super().__call__(*args, **kwargs)
        return self.forward(*args, **kwargs)

    def _expose(self, name: str, store: str) -> None:
        cls = type(self)
        if not hasattr(cls, name):
            setattr(cls, name, _Registered(name, store))

    def __setattr__(self, name: str, value) -> None:
        super().__setattr__(name, value)
        for store in ("_modules", "_buffers"):
            if name in self.__dict__.get(store, ()):
                self._expose(name, store)

    def register_parameter(self, name: str, param) -> None:
        super().register_parameter(name, param)
        self._expose(name, "_parameters")

    def register_buffer(self, name: str, tensor, persistent: bool = True) -> None:
        super().register_buffer(name, tensor, persistent)
        self._expose(name, "_buffers")


class Linear(Module, nn.Linear):
    """`nn.Linear` (same parameters, state dict and `isinstance`) with fast reads."""


class Embedding(Module, nn.Embedding):
    """`nn.Embedding` (same parameters, state dict and `isinstance`) with fast reads."""
