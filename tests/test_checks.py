"""The visible-check runner: one line on success, a specific message on failure."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from course import checks


def test_passing_check_prints_one_line(capsys):
    x = torch.tensor([1.0, 2.0])
    assert (
        checks.run("demo", [checks.close("double", lambda: x * 2, torch.tensor([2.0, 4.0]))])
        is None
    )
    assert capsys.readouterr().out == "✔ demo: all 1 checks passed\n"


def test_failure_names_case_input_expected_got_and_hint():
    x = torch.tensor([1.0, 2.0])
    cases = [
        checks.close("first", lambda: x, x),
        checks.close("second", lambda: x + 1, x, inputs=x, hint="do not add one"),
    ]
    with pytest.raises(checks.CheckFailed) as info:
        checks.run("demo", cases)
    message = str(info.value)
    for part in [
        "case 2/2 'second'",
        "input:",
        "expected:",
        "got:",
        "hint:     do not add one",
        "largest |error| 1",
    ]:
        assert part in message


@pytest.mark.parametrize(
    "case, fragment",
    [
        (
            checks.close("c", lambda: torch.zeros(3), torch.zeros(2)),
            r"shape \(3,\), expected \(2,\)",
        ),
        (
            checks.close("c", lambda: torch.zeros(2).double(), torch.zeros(2)),
            "dtype float64, expected float32",
        ),
        (checks.close("c", lambda: torch.tensor([float("nan"), 0.0]), torch.zeros(2)), "NaN"),
        (checks.close("c", lambda: "text", torch.zeros(2)), "expected a float32 tensor"),
        (checks.close("c", lambda: 1 / 0, torch.zeros(2)), "raised ZeroDivisionError"),
        (checks.equal("c", lambda: torch.tensor([1, 2]), torch.tensor([1, 3])), "not equal"),
        (checks.true("c", lambda: False, message="nope"), "nope"),
        (checks.true("c", lambda: "a custom reason"), "a custom reason"),
        (checks.raises("c", lambda: 1, ValueError), "expected ValueError"),
    ],
)
def test_each_failure_kind_has_a_specific_message(case, fragment):
    with pytest.raises(checks.CheckFailed, match=fragment):
        checks.run("demo", [case])


def test_unwritten_exercise_gets_a_clear_message():
    def softmax(x):
        raise NotImplementedError()

    with pytest.raises(checks.NotWrittenYet, match="not written yet"):
        checks.run("softmax", [checks.close("c", lambda: softmax(1), torch.zeros(1))])


def test_raises_passes_on_the_right_exception(capsys):
    checks.run("demo", [checks.raises("bad input", lambda: int("x"), ValueError)])
    assert "✔" in capsys.readouterr().out


def test_works_in_plain_python():
    code = (
        "import torch\nfrom course import checks\n"
        "checks.run('plain', [checks.close('c', lambda: torch.ones(2), torch.ones(2))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "✔ plain: all 1 checks passed"


def test_abbrev_keeps_a_tuple_of_big_tensors_short():
    big = torch.randn(8, 4, 64, 16)
    text = checks.abbrev((big, big * 2, big.half(), big.numpy(), list(range(500)), "x" * 900))
    assert len(text) <= checks._MAX_CHARS + 60, len(text)
    assert text.startswith("(") and "float16" in text


def test_abbrev_keeps_big_tensors_short():
    text = checks.abbrev(torch.arange(10_000.0))
    assert len(text) < 200 and "shape (10000,)" in text
