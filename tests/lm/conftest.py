import importlib.abc
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# The test model lives beside the tests; subprocesses find it through PYTHONPATH.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def tiny_config():
    from course.lm.presets import get_preset

    return get_preset("cpu-tiny")


@pytest.fixture
def small_corpus():
    """A few kB of repetitive text: enough for the loss to fall in a few steps."""
    from course.lm.corpus import split_bytes

    text = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(400)).encode()
    return split_bytes(text, "small")


@pytest.fixture
def without_solutions(monkeypatch):
    """The student bundle's situation: the `solutions` package cannot be imported."""

    class HideSolutions(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "solutions" or name.startswith("solutions."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    for name in [m for m in sys.modules if m == "solutions" or m.startswith("solutions.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [HideSolutions(), *sys.meta_path])


def subprocess_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("NBGRADER_EXECUTION", None)
    env.update(extra)
    return env
