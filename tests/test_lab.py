"""`make lab` starts JupyterLab on course/ with the nbgrader and ipywidgets extensions."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, token: str) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    port, token = free_port(), secrets.token_hex(16)
    log = tmp_path_factory.mktemp("lab") / "lab.log"
    args = f"--no-browser --port={port} --ServerApp.ip=127.0.0.1 --IdentityProvider.token={token}"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(log.parent / "runtime")}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["make", "--no-print-directory", "lab", f"ARGS={args}"],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                get(f"{base}/api/status", token)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"make lab exited early:\n{log.read_text()}")
                time.sleep(0.5)
        else:
            pytest.fail(f"JupyterLab did not answer within 90 s:\n{log.read_text()}")
        yield base, token
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def test_lab_serves_the_course_notebooks(lab):
    base, token = lab
    model = json.loads(get(f"{base}/api/contents/01-softmax/softmax.ipynb", token))
    assert model["type"] == "notebook"
    assert model["content"]["cells"][0]["source"].startswith("# Lesson 01")
    listing = json.loads(get(f"{base}/api/contents", token))
    assert "01-softmax" in {item["name"] for item in listing["content"]}


def test_lab_page_loads(lab):
    base, token = lab
    assert b"JupyterLab" in get(f"{base}/lab", token)


def test_nbgrader_and_widget_extensions_are_enabled():
    out = subprocess.run(
        [str(BIN / "jupyter"), "labextension", "list"], capture_output=True, text=True, check=True
    )
    text = out.stdout + out.stderr
    for name in ["@jupyter-widgets/jupyterlab-manager", "@jupyter/nbgrader"]:
        line = next((ln for ln in text.splitlines() if name in ln), "")
        assert "enabled" in line and "OK" in line, f"{name} missing or disabled:\n{text}"
    server = subprocess.run(
        [str(BIN / "jupyter"), "server", "extension", "list"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "nbgrader" in server.stdout + server.stderr
