"""The student bundle: a clone without solutions/, autograder/ and tests/.

`make lab` must start without a traceback, `make test` must run the student self-test and exit 0,
and a student's JupyterLab shows the Validate button but not the instructor's nbgrader tools (nor
an Assignment List without an exchange). The bundle reuses this checkout's virtual environment;
a `sitecustomize` on PYTHONPATH hides `autograder` and `solutions` from every Python process it
starts (the editable install would otherwise still find them).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from course.lab_profile import exchange_root, write_profile

REPO = Path(__file__).resolve().parent.parent
INSTRUCTOR_ONLY = {"solutions", "autograder", "tests"}
HIDE_INSTRUCTOR_CODE = (
    "import sys\n"
    "# The student bundle has neither: make every import of them fail as it would there.\n"
    "sys.modules['autograder'] = None\n"
    "sys.modules['solutions'] = None\n"
)


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, text=True
        )
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: cannot tell which files a clone would have")
    return [f for f in out.stdout.split("\0") if f]


def make_bundle(dest: Path) -> Path:
    """What a student receives: every tracked file outside solutions/, autograder/, tests/."""
    for name in tracked_files():
        if name.split("/", 1)[0] in INSTRUCTOR_ONLY:
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    return dest


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    root = make_bundle(tmp_path_factory.mktemp("bundle") / "transformer-course")
    (root / ".venv").symlink_to(REPO / ".venv", target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def student_env(tmp_path_factory) -> dict[str, str]:
    hide = tmp_path_factory.mktemp("hide-instructor-code")
    (hide / "sitecustomize.py").write_text(HIDE_INSTRUCTOR_CODE)
    env = {k: v for k, v in os.environ.items() if k not in ("NBGRADER_EXECUTION",)}
    env["PYTHONPATH"] = str(hide)
    env["JUPYTER_RUNTIME_DIR"] = str(hide / "runtime")
    return env


def make(bundle: Path, env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    # -o: the setup stamp is the instructor's (the .venv is shared); never re-run pip here.
    return subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.setup-stamp", *args],
        cwd=bundle,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_bundle_holds_no_answers(bundle):
    assert (bundle / "course" / "01-softmax").is_dir()
    assert not any((bundle / name).exists() for name in INSTRUCTOR_ONLY)
    assert not list(bundle.rglob("exercises.py")), "a lesson declaration holds the references"
    for path in (bundle / "course").rglob("*"):
        if path.is_file():
            text = path.read_text(errors="ignore")
            for marker in ["BEGIN SOLUTION", "BEGIN HIDDEN TESTS"]:
                assert marker not in text, f"{path.relative_to(bundle)} holds {marker!r}"


def test_nbgrader_reads_the_bundles_config_without_autograder(bundle, student_env):
    code = (
        "import sys; sys.modules['autograder'] = None\n"
        "from course.lab_profile import exchange_root\n"
        "print(exchange_root('.'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=bundle, env=student_env, capture_output=True, text=True
    )
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert out.stdout.strip()


@pytest.mark.slow
def test_make_test_in_the_bundle_runs_the_student_self_test(bundle, student_env):
    result = make(bundle, student_env, "test")
    text = result.stdout + result.stderr
    assert result.returncode == 0, text
    assert "belongs to the instructor's checkout" in text
    assert re.search(r"student self-test: all \d+ checks passed", text), text
    assert "Traceback" not in text


@pytest.mark.slow
def test_instructor_commands_stop_with_one_line_in_the_bundle(bundle, student_env):
    result = make(bundle, student_env, "release", timeout=60)
    assert result.returncode != 0
    assert "instructor's command" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except OSError:  # not listening yet
        return 0, b""


@pytest.mark.slow
def test_make_lab_in_the_bundle_starts_cleanly_with_the_student_profile(bundle, student_env):
    port, token = _free_port(), secrets.token_hex(16)
    args = f"--no-browser --port={port} --ServerApp.ip=127.0.0.1 --IdentityProvider.token={token}"
    log = bundle.parent / "lab.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["make", "--no-print-directory", "-o", ".venv/.setup-stamp", "lab", f"ARGS={args}"],
            cwd=bundle,
            env=student_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while _get(f"{base}/api/status", token)[0] != 200:
            if proc.poll() is not None:
                pytest.fail(f"make lab exited:\n{log.read_text()}")
            if time.time() > deadline:
                pytest.fail(f"JupyterLab did not answer within 180 s:\n{log.read_text()}")
            time.sleep(0.5)
        status, page = _get(f"{base}/lab", token)
        assert status == 200
        config = _page_config(page.decode())
        disabled = config["disabledExtensions"]
        for plugin in ["create-assignment", "formgrader", "course-list", "assignment-list"]:
            assert f"@jupyter/nbgrader:{plugin}" in disabled, plugin
        assert "@jupyter/nbgrader:validate-assignment" not in disabled
        # The server side agrees: no assignment list or formgrader handlers, validation on.
        assert _get(f"{base}/assignments", token)[0] == 404
        assert _get(f"{base}/formgrader", token)[0] == 404
        listing = json.loads(_get(f"{base}/api/contents", token)[1])
        assert "01-softmax" in {item["name"] for item in listing["content"]}
    finally:
        _stop(proc)
    text = log.read_text()
    assert "Traceback" not in text and "No module named" not in text, text[-4000:]
    assert "JupyterLab (student)" in text


def _page_config(html: str) -> dict:
    match = re.search(
        r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', html, re.S
    )
    assert match, "no page config in /lab"
    return json.loads(match.group(1))


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


# ---------------------------------------------------------------- the profiles themselves


def _config_with_exchange(folder: Path, exchange: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nbgrader_config.py").write_text(
        f"c = get_config()\nc.Exchange.root = {str(exchange)!r}\n"
    )
    return folder


def test_student_profile_hides_the_assignment_list_without_an_exchange(tmp_path):
    cwd = _config_with_exchange(tmp_path / "course", tmp_path / "no-exchange-here")
    assert exchange_root(cwd) == tmp_path / "no-exchange-here"
    line = write_profile("student", tmp_path / "profile", cwd=cwd)
    assert "no Assignment List" in line and "README" in line
    page = json.loads((tmp_path / "profile" / "labconfig" / "page_config.json").read_text())
    assert page["disabledExtensions"]["@jupyter/nbgrader:assignment-list"]
    assert page["disabledExtensions"]["@jupyter/nbgrader:create-assignment"]
    assert page["disabledExtensions"]["@jupyter/nbgrader:validate-assignment"] is False
    server = json.loads((tmp_path / "profile" / "jupyter_server_config.json").read_text())
    extensions = server["ServerApp"]["jpserver_extensions"]
    assert extensions["nbgrader.server_extensions.validate_assignment"] is True
    assert extensions["nbgrader.server_extensions.assignment_list"] is False


def test_student_profile_shows_the_assignment_list_with_an_exchange(tmp_path):
    (tmp_path / "exchange").mkdir()
    cwd = _config_with_exchange(tmp_path / "course", tmp_path / "exchange")
    line = write_profile("student", tmp_path / "profile", cwd=cwd)
    assert str(tmp_path / "exchange") in line
    page = json.loads((tmp_path / "profile" / "labconfig" / "page_config.json").read_text())
    assert page["disabledExtensions"]["@jupyter/nbgrader:assignment-list"] is False
    assert page["disabledExtensions"]["@jupyter/nbgrader:formgrader"]
    server = json.loads((tmp_path / "profile" / "jupyter_server_config.json").read_text())
    assert server["ServerApp"]["jpserver_extensions"]["nbgrader.server_extensions.assignment_list"]


def test_instructor_profile_enables_every_nbgrader_tool_explicitly(tmp_path):
    # Explicitly, so that it wins over a shared server's system-wide student profile.
    cwd = _config_with_exchange(tmp_path / "course", tmp_path / "none")
    write_profile("student", tmp_path / "profile", cwd=cwd)
    assert "instructor" in write_profile("instructor", tmp_path / "profile", cwd=cwd)
    page = json.loads((tmp_path / "profile" / "labconfig" / "page_config.json").read_text())
    assert page["disabledExtensions"] and not any(page["disabledExtensions"].values())
    server = json.loads((tmp_path / "profile" / "jupyter_server_config.json").read_text())
    assert all(server["ServerApp"]["jpserver_extensions"].values())
    with pytest.raises(ValueError, match="unknown profile"):
        write_profile("teacher", tmp_path / "profile")


def test_the_bundle_config_ignores_an_autograder_the_bundle_does_not_have(tmp_path):
    """nbgrader loads the top-level nbgrader_config.py from the student's bundle (no
    autograder/ or solutions/ next to it), even where Python can import the instructor's
    autograder (an environment installed from the full checkout): nothing of it is used."""
    shutil.copy(REPO / "nbgrader_config.py", tmp_path / "nbgrader_config.py")
    load = (
        "from traitlets.config.loader import PyFileConfigLoader\n"
        f"c = PyFileConfigLoader('nbgrader_config.py', path={str(tmp_path)!r}).load_config()\n"
        "print('loaded', dict(c))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", load], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "loaded {}" in proc.stdout, proc.stdout  # nbgrader's defaults, not the instructor's


def _normalised(line: str) -> str:
    return " ".join(line.split("#", 1)[0].split())


def _solution_lines() -> dict[str, str]:
    """{normalised line: lesson} for every distinctive line inside a ### BEGIN SOLUTION /
    ### END SOLUTION region of the source notebooks (solutions/NN-topic/*.ipynb): exactly the
    code nbgrader strips from what a student receives. A line the student notebooks
    (course/NN-topic/*.ipynb) show anyway, as given code, is public and left out."""
    public = {
        _normalised(line)
        for notebook in (REPO / "course").glob("[0-9][0-9]-*/*.ipynb")
        for cell in json.loads(notebook.read_text())["cells"]
        for line in "".join(cell["source"]).splitlines()
    }
    found: dict[str, str] = {}
    for notebook in sorted((REPO / "solutions").glob("[0-9][0-9]-*/*.ipynb")):
        for cell in json.loads(notebook.read_text())["cells"]:
            inside = False
            for line in "".join(cell["source"]).splitlines():
                if "### BEGIN SOLUTION" in line or "### END SOLUTION" in line:
                    inside = "BEGIN" in line
                    continue
                text = _normalised(line)
                if inside and len(text) >= _DISTINCTIVE_CHARS and text not in public:
                    found.setdefault(text, notebook.parent.name)
    return found


# Shorter lines ("B, T, D = x.shape", "return torch.softmax(scores, dim=-1)") are idioms, not
# answers; an answer's working line is longer ("return x.repeat_interleave(n_rep, dim=1)").
_DISTINCTIVE_CHARS = 40

# Leaks found by the test below that need their own decision, listed so that they stay visible:
# the test fails as soon as one of them is fixed (remove it here then) or a new one appears.
# Empty: lesson 07's ToyLM now rotates as Meta's Llama code does (float32 angles, which rope_at's
# check rejects), and tests/test_public_not_answers.py holds every public re-implementation to
# the check of the exercise it computes.
KNOWN_LEAKS: dict[str, str] = {}


def test_no_public_module_holds_a_lessons_answer_line():
    """The student bundle ships course/*.py (helpers, inspectors, widgets, the training harness)
    to every learner from lesson 01 on; none of it may hold the code of a lesson's solution.

    Cheap and honest rather than complete: every line of at least 40 characters inside a source
    notebook's solution region (comments dropped, whitespace collapsed; not shown as given code
    in a student notebook) must not appear in any public Python module under course/ (the
    generated student notebooks course/NN-topic/ and the fixtures of expected outputs are not
    modules). A reference rewritten with other names escapes it; a solution line pasted into a
    helper, as `return angles.cos().to(dtype), angles.sin().to(dtype)` once was in
    course/lesson08.py, does not. A helper judges a lesson's function with that lesson's own
    fixture-based check (`checks.check("05-positions/rope-cos-sin", fn)`) instead."""
    answers = _solution_lines()
    assert len(answers) > 50, "found too few solution lines: did the notebooks' layout change?"
    leaks, known = [], set()
    for module in sorted((REPO / "course").rglob("*.py")):
        name = str(module.relative_to(REPO))
        for number, line in enumerate(module.read_text().splitlines(), start=1):
            text = _normalised(line)
            if text not in answers:
                continue
            if KNOWN_LEAKS.get(name) == text:
                known.add(name)
            else:
                leaks.append(f"{name}:{number} holds a line of {answers[text]}'s solution: {text}")
    assert not leaks, "\n".join(leaks)
    assert known == set(KNOWN_LEAKS), f"fixed, remove from KNOWN_LEAKS: {set(KNOWN_LEAKS) - known}"
