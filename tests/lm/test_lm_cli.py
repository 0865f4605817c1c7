"""`python -m course.lm`: a full run end to end, and one clear line (exit 2) for bad input."""

import io
import subprocess
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--model", "lm_tinymodel:TinyLM", "--preset", "cpu-tiny", "--device", "cpu"]


def run_process(*args, timeout=120):
    """`python -m course.lm ARGS` in a process of its own: the real entry point."""
    return subprocess.run(
        [sys.executable, "-m", "course.lm", *args],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_cli(*args):
    """The same command run by `course.lm.cli.main` in this process, with its stdout, stderr and
    exit status as a process would give them (a process start costs seconds of torch imports;
    the end-to-end tests below still run real processes). Thread count and warning filters are
    put back afterwards."""
    import torch

    from course.lm.cli import main

    out, err = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    with warnings.catch_warnings(), redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        finally:
            torch.set_num_threads(threads)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_train_then_sample_end_to_end(tmp_path):
    out = tmp_path / "run"
    proc = run_process("train", *TINY, "--steps", "12", "--out", str(out), "--sample-tokens", "40")
    assert proc.returncode == 0, proc.stderr
    assert "val loss" in proc.stdout and "--- sample" in proc.stdout
    assert {p.name for p in out.iterdir()} >= {"ckpt.pt", "log.json", "loss.png"}
    # The checkpoint remembers the model class, so sample needs no --model.
    proc = run_process(
        "sample",
        "--checkpoint",
        str(out / "ckpt.pt"),
        "--tokens",
        "30",
        "--prompt",
        "x = ",
        "--top-k",
        "20",
        "--top-p",
        "0.9",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("x = ")
    proc = run_process(
        "train",
        *TINY,
        "--steps",
        "16",
        "--out",
        str(out),
        "--sample-tokens",
        "0",
        "--resume",
        str(out / "ckpt.pt"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "step 16" in proc.stdout


def test_unknown_preset():
    assert_one_line_error(run_cli("train", "--preset", "huge"), "unknown preset 'huge'", "cpu-tiny")


def test_missing_corpus_file(tmp_path):
    proc = run_cli("train", *TINY, "--corpus", str(tmp_path / "missing.txt"))
    assert_one_line_error(proc, "corpus file not found")


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "ckpt.pt"
    bad.write_bytes(b"\x00garbage" * 10)
    assert_one_line_error(run_cli("sample", "--checkpoint", str(bad)), "corrupt")
    assert_one_line_error(run_cli("train", *TINY, "--resume", str(bad)), "corrupt")


def test_missing_checkpoint(tmp_path):
    proc = run_cli("sample", "--checkpoint", str(tmp_path / "none.pt"))
    assert_one_line_error(proc, "checkpoint not found")


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("lm_tinymodel", "MODULE:CLASS"),
        ("no_such_module_xyz:Model", "cannot import"),
        ("lm_tinymodel:Missing", "no attribute"),
        ("torch.nn:Linear", "Linear(config) failed"),
        ("lm_tinymodel:rope_tables", "not a class"),
    ],
)
def test_bad_model_spec_or_interface(spec, fragment):
    proc = run_cli("train", "--model", spec, "--preset", "cpu-tiny", "--device", "cpu")
    assert_one_line_error(proc, fragment)


def test_model_returning_wrong_shape(tmp_path):
    (tmp_path / "wrongmodel.py").write_text(
        "import torch\n"
        "class Wrong(torch.nn.Module):\n"
        "    def __init__(self, config):\n"
        "        super().__init__()\n"
        "        self.config = config\n"
        "        self.w = torch.nn.Linear(1, 1)\n"
        "    def forward(self, idx):\n"
        "        return torch.zeros(idx.shape[0], 7)\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "course.lm",
            "train",
            "--model",
            "wrongmodel:Wrong",
            "--preset",
            "cpu-tiny",
            "--device",
            "cpu",
        ],
        cwd=ROOT,
        env=subprocess_env(PYTHONPATH=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_one_line_error(proc, "must return logits of shape")


def test_unknown_flag_and_no_command():
    assert_one_line_error(run_process("train", "--bogus"), "unrecognized arguments")
    proc = run_process()
    assert proc.returncode == 2


def test_bench_rejects_unknown_section():
    proc = run_cli("bench", "--model", "lm_tinymodel:TinyLM", "--only", "warp")
    assert_one_line_error(proc, "unknown bench section")


def test_default_model_without_solutions_is_a_clear_error(without_solutions):
    from course.lm.errors import ModelSpecError
    from course.lm.models import DEFAULT_MODEL, load_model_class

    with pytest.raises(ModelSpecError, match="not installed") as info:
        load_model_class(None)
    assert DEFAULT_MODEL in str(info.value) and "--model" in str(info.value)


def test_course_lm_imports_neither_solutions_nor_autograder():
    code = (
        "import sys, course.lm, course.lm.cli, course.lm.train, course.lm.sample, "
        "course.lm.bench, course.lm.corpus, course.lm.models\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('solutions', 'autograder')]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


# -- sampling flags and diverged runs: one line, exit 2 -----------------------------------------


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--top-p", "-1"], "--top-p must be a number in [0, 1], got -1.0"),
        (["--top-p", "1.5"], "--top-p must be a number in [0, 1], got 1.5"),
        (["--top-p", "nan"], "--top-p must be a number in [0, 1], got nan"),
        (["--top-k", "-5"], "--top-k must be an integer >= 1, got -5"),
        (["--top-k", "0"], "--top-k must be an integer >= 1, got 0"),
        (["--temperature", "-0.5"], "--temperature must be a finite number >= 0, got -0.5"),
        (["--temperature", "nan"], "--temperature must be a finite number >= 0, got nan"),
        (["--temperature", "inf"], "--temperature must be a finite number >= 0, got inf"),
        (["--tokens", "-3"], "--tokens must be >= 0, got -3"),
    ],
)
def test_out_of_range_sampling_flags(flags, fragment, tmp_path, capsys):
    from course.lm.cli import main

    # Checked before the checkpoint is even read: this one does not exist.
    assert main(["sample", "--checkpoint", str(tmp_path / "none.pt"), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == f"python -m course.lm sample: error: {fragment}"


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    proc = run_cli("train", *TINY, "--steps", "10", "--out", str(out), "--sample-tokens", "0")
    assert proc.returncode == 0, proc.stderr
    return out / "ckpt.pt"


def test_top_p_zero_prints_the_greedy_text(trained_checkpoint):
    common = ["sample", "--checkpoint", str(trained_checkpoint), "--tokens", "60"]
    greedy = run_cli(*common, "--temperature", "0")
    nucleus = run_cli(*common, "--top-p", "0", "--seed", "123")
    assert greedy.returncode == nucleus.returncode == 0, (greedy.stderr, nucleus.stderr)
    assert nucleus.stdout == greedy.stdout
    sampled = run_cli(*common, "--top-p", "1", "--temperature", "1.5", "--seed", "123")
    assert sampled.returncode == 0 and sampled.stdout != greedy.stdout


def test_a_non_finite_checkpoint_is_refused_by_sample(trained_checkpoint, tmp_path):
    import torch

    ckpt = torch.load(trained_checkpoint, weights_only=True)
    name = next(iter(ckpt["model"]))
    ckpt["model"][name] = torch.full_like(ckpt["model"][name], float("nan"))
    bad = tmp_path / "nan.pt"
    torch.save(ckpt, bad)
    for flags in ([], ["--temperature", "0"]):
        proc = run_cli("sample", "--checkpoint", str(bad), *flags)
        assert_one_line_error(proc, "non-finite weights", name)
        assert proc.stdout == ""  # no NUL bytes, no garbage


def test_resuming_with_a_diverging_lr_keeps_the_checkpoint(trained_checkpoint, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(trained_checkpoint.read_bytes())
    before = ckpt.read_bytes()
    proc = run_cli(
        "train", *TINY, "--steps", "60", "--out", str(tmp_path), "--resume", str(ckpt),
        "--lr", "100", "--sample-tokens", "0",
    )  # fmt: skip
    assert_one_line_error(proc, "training diverged at step", "lr 100", f"{ckpt} (step 10)")
    assert ckpt.read_bytes() == before
    proc = run_cli("train", *TINY, "--lr", "nan", "--out", str(tmp_path / "x"))
    assert_one_line_error(proc, "lr must be a finite number > 0, got nan")
