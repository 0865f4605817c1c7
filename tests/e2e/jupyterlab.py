"""Driving the course's JupyterLab in Chromium: the server, the browser, and a notebook page.

The server is `make lab` (the learner's command) run from the repository root, so the
nbgrader extensions read the repository's `nbgrader_config.py` exactly as for a learner.
It serves a scratch copy of `course/` and `solutions/` (`LAB_ROOT=...`): running cells,
the Validate button (which saves first) and autosave then never touch the repository.
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
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "tests" / "_artifacts" / "screenshots"

# Debian's Chromium (`make system-deps`); Playwright's own download needs the internet.
BROWSER_CANDIDATES = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# Run All of a solution notebook must finish within this (DESIGN: under 60 s on a CPU; the
# browser adds rendering). Lesson 08 trains for minutes outside grading: raise it then.
RUN_ALL_TIMEOUT_S = 240
VALIDATE_TIMEOUT_S = 240


def lesson_notebooks(kind: str) -> list[Path]:
    """Every lesson notebook of `kind` ('course' or 'solutions'), relative to the repository."""
    return sorted(p.relative_to(REPO) for p in (REPO / kind).glob("[0-9][0-9]-*/*.ipynb"))


def find_browser() -> str | None:
    explicit = os.environ.get("COURSE_E2E_BROWSER")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for candidate in BROWSER_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    for name in ["chromium", "chromium-browser", "google-chrome"]:
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


# --------------------------------------------------------------------------- the server


@dataclass
class LabServer:
    """`make lab` on a free port, serving a scratch copy of the lessons."""

    workdir: Path
    port: int = 0
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    proc: subprocess.Popen | None = None

    @property
    def root(self) -> Path:
        return self.workdir / "root"

    @property
    def log(self) -> Path:
        return self.workdir / "lab.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def prepare(self) -> None:
        """The scratch root: copies of every lesson folder, the shared assets linked in."""
        ignore = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__")
        for kind in ["course", "solutions"]:
            for lesson in sorted((REPO / kind).glob("[0-9][0-9]-*")):
                if lesson.is_dir():
                    shutil.copytree(lesson, self.root / kind / lesson.name, ignore=ignore)
        if (REPO / "assets").is_dir():
            (self.root / "assets").symlink_to(REPO / "assets", target_is_directory=True)
        # Settings a learner would not notice, in a private settings folder: no autosave (the
        # copy is thrown away anyway) and no news pop-up over the screenshots.
        settings = self.workdir / "settings" / "@jupyterlab"
        (settings / "apputils-extension").mkdir(parents=True)
        (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False})
        )
        (settings / "docmanager-extension").mkdir(parents=True)
        (settings / "docmanager-extension" / "plugin.jupyterlab-settings").write_text(
            json.dumps({"autosave": False})
        )

    def start(self, timeout: float = 120) -> None:
        self.prepare()
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between picking and binding it
            self.port = free_port()
            args = " ".join(
                [
                    "--no-browser",
                    f"--port={self.port}",
                    "--ServerApp.port_retries=0",
                    "--ServerApp.ip=127.0.0.1",
                    f"--IdentityProvider.token={self.token}",
                    # window.jupyterapp: lets the tests read kernel status and cell outputs
                    "--LabApp.expose_app_in_browser=True",
                    # a safety net if pytest itself is killed: the server (and its kernels)
                    # stops after 15 minutes without a request
                    "--ServerApp.shutdown_no_activity_timeout=900",
                ]
            )
            env = {
                **os.environ,
                "JUPYTERLAB_SETTINGS_DIR": str(self.workdir / "settings"),
                "JUPYTERLAB_WORKSPACES_DIR": str(self.workdir / "workspaces"),
                "JUPYTER_RUNTIME_DIR": str(self.workdir / "runtime"),
            }
            env.pop("NBGRADER_EXECUTION", None)
            # Lesson 08 trains a language model: Run All in the browser trains the seconds-long
            # preset (the notebook honours this), not the minute-long CPU one.
            env["COURSE_LM_PRESET"] = "cpu-tiny"
            with open(self.log, "w") as out:
                # -o: never re-run `setup` (pip) from inside a test; `make test` did it.
                self.proc = subprocess.Popen(
                    [
                        "make",
                        "--no-print-directory",
                        "-o",
                        ".venv/.setup-stamp",
                        "lab",
                        f"LAB_ROOT={self.root}",
                        f"ARGS={args}",
                    ],
                    cwd=REPO,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            deadline = time.time() + timeout
            while time.time() < deadline:
                try:
                    self.api("GET", "/api/status")
                    return
                except (OSError, urllib.error.URLError):
                    if self.proc.poll() is not None:
                        break
                    time.sleep(0.3)
            last_error = self.log.read_text()
            self.stop()
            if "address already in use" not in last_error.lower():
                break
        raise RuntimeError(f"`make lab` did not start JupyterLab:\n{last_error[-4000:]}")

    def api(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def shutdown_kernels(self) -> None:
        """Each opened notebook started a kernel; stop them between tests."""
        try:
            for session in self.api("GET", "/api/sessions") or []:
                self.api("DELETE", f"/api/sessions/{session['id']}")
            for kernel in self.api("GET", "/api/kernels") or []:
                self.api("DELETE", f"/api/kernels/{kernel['id']}")
        except (OSError, urllib.error.URLError):
            pass

    def url(self, notebook: str, workspace: str) -> str:
        return f"{self.base}/lab/workspaces/{workspace}/tree/{notebook}?reset&token={self.token}"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        self.shutdown_kernels()  # kernels run in their own process groups
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass


# --------------------------------------------------------------------------- the notebook page

NB = "window.jupyterapp.shell.currentWidget"

KERNEL_IDLE = f"""() => {{
  const nb = window.jupyterapp && {NB};
  const kernel = nb && nb.sessionContext && nb.sessionContext.session
                 && nb.sessionContext.session.kernel;
  return !!(nb && nb.content && kernel && kernel.status === 'idle'
            && kernel.connectionStatus === 'connected');
}}"""

# Done: the kernel has handled something since the click (n: idle count before it), is idle,
# no code cell is queued or running (prompt [*]), and at least one cell has an execution
# count (after an error the queue is cleared, so this also holds when Run All stopped early).
RUN_FINISHED = f"""(n) => {{
  const nb = {NB};
  const kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
  if (!kernel || kernel.status !== 'idle' || !(window.__courseIdle > n)) return false;
  let ran = 0;
  for (const cell of nb.content.widgets) {{
    if (cell.model.type !== 'code') continue;
    const state = cell.model.executionState;
    const prompt = cell.promptNode ? cell.promptNode.textContent : '';
    if (state === 'running' || prompt.includes('*')) return false;
    if (cell.model.executionCount !== null) ran++;
  }}
  return ran > 0;
}}"""

CELLS = f"""() => {{
  const nb = {NB};
  return nb.content.widgets.map((cell, index) => {{
    const model = cell.model;
    const out = {{index, type: model.type, source: model.sharedModel.getSource(),
                 nbgrader: (model.getMetadata && model.getMetadata('nbgrader')) || {{}},
                 count: model.type === 'code' ? model.executionCount : null, outputs: []}};
    if (model.type === 'code') {{
      for (let j = 0; j < model.outputs.length; j++) {{
        out.outputs.push(model.outputs.get(j).toJSON());
      }}
    }}
    return out;
  }});
}}"""

# What a widget shows (images and HTML/Output areas), not its controls: compared before and
# after moving a control.
WIDGET_SIGNATURE = """(root) => JSON.stringify([
  [...root.querySelectorAll('img')].map(img => img.src),
  [...root.querySelectorAll('.widget-html-content, .widget-output, .widget-label-basic')]
     .map(el => el.innerHTML),
])"""

IMAGES_LOADED = """(root) => [...root.querySelectorAll('img')].every(
  img => img.complete && img.naturalWidth > 0)"""


# Counts the kernel's returns to idle: each message the front end sends (a widget's new
# value included) makes the kernel busy, then idle once it has been handled.
COUNT_IDLE = f"""() => {{
  window.__courseIdle = 0;
  {NB}.sessionContext.statusChanged.connect((_, status) => {{
    if (status === 'idle') window.__courseIdle++;
  }});
}}"""
IDLE_AFTER = f"""(n) => window.__courseIdle > n
  && {NB}.sessionContext.session.kernel.status === 'idle'"""


def open_notebook(page, lab: LabServer, notebook: str, workspace: str) -> None:
    """Open `notebook` in a fresh workspace and wait for its kernel to be idle."""
    page.goto(lab.url(notebook, workspace))
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90_000)
    page.wait_for_function(KERNEL_IDLE, timeout=120_000, polling=200)
    page.evaluate(COUNT_IDLE)


REOPEN = """async (path) => {
  const app = window.jupyterapp;
  await app.commands.execute('application:close-all');
  await app.commands.execute('docmanager:open', {path});
}"""


def reopen_notebook(page, notebook: str) -> None:
    """Close every tab and open `notebook` again in the same JupyterLab page (a new notebook
    panel and widget manager, a new kernel), as a learner reopening a saved notebook does.
    Reloading the page instead would boot JupyterLab again: about 8 s of browser CPU each."""
    page.evaluate(REOPEN, notebook)
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90_000)
    page.wait_for_function(KERNEL_IDLE, timeout=120_000, polling=200)


def idle_count(page) -> int:
    return page.evaluate("window.__courseIdle")


def wait_handled(page, since: int, timeout_s: float = 60) -> None:
    """Wait until the kernel has gone idle again after `since` (a message was handled)."""
    page.wait_for_function(IDLE_AFTER, arg=since, timeout=timeout_s * 1000, polling=100)


def run_all(page, timeout_s: float = RUN_ALL_TIMEOUT_S) -> None:
    """Run → Run All Cells from the menu bar, then wait until the kernel is done."""
    since = idle_count(page)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    page.wait_for_function(RUN_FINISHED, arg=since, timeout=timeout_s * 1000, polling=250)


def cells(page) -> list[dict]:
    return page.evaluate(CELLS)


def error_text(output: dict) -> str:
    return strip_ansi(
        "\n".join(output.get("traceback") or []) or f"{output.get('ename')}: {output.get('evalue')}"
    )


def errors(cell_list: list[dict]) -> list[tuple[int, dict]]:
    return [(c["index"], o) for c in cell_list for o in c["outputs"] if o["output_type"] == "error"]


DRAWS = re.compile(r"\bplt\.(show|subplots|figure|plot|imshow|hist|bar)\(")


def figures_missing(cell_list: list[dict]) -> list[int]:
    """Executed cells that draw with pyplot but show no image (a backend that shows nothing)."""
    return [
        c["index"]
        for c in cell_list
        if c["type"] == "code"
        and c["count"] is not None
        and DRAWS.search(c["source"])
        and not any(k.startswith("image/") for o in c["outputs"] for k in o.get("data", {}))
        and not any(o["output_type"] == "error" for o in c["outputs"])
    ]


def stderr_outputs(cell_list: list[dict]) -> list[tuple[int, str]]:
    return [
        (c["index"], o.get("text", ""))
        for c in cell_list
        for o in c["outputs"]
        if o["output_type"] == "stream" and o.get("name") == "stderr"
    ]


def widget_outputs(page):
    """Locator of every rendered widget output (one per displayed top-level widget)."""
    return page.locator(f'.jp-OutputArea-output[data-mime-type="{WIDGET_MIME}"]')


def describe(control) -> str:
    """A readable name for a control: its label, else its text."""
    return control.evaluate("""(el) => {
      const clean = (t) => (t || '').replace(/[\\u200b\\s]+/g, ' ').trim();
      const box = el.closest(
        '.widget-inline-hbox, .widget-toggle-buttons, .widget-checkbox, .widget-dropdown') || el;
      const label = box.querySelector('.widget-label');
      return (clean(label && label.textContent) || clean(box.textContent)
              || el.getAttribute('aria-label') || el.className).slice(0, 60);
    }""")


CONTROLS = {
    "slider": ".noUi-target .noUi-handle[data-handle='0']",
    "toggle-buttons": ".widget-toggle-buttons",
    "toggle": "button.widget-toggle-button:not(.widget-toggle-buttons button)",
    "checkbox": ".widget-checkbox input[type=checkbox]",
    "dropdown": ".widget-dropdown select",
    "radio": ".widget-radio-box",
}


def controls_of(widget) -> list[tuple[str, object]]:
    """(kind, locator) for every slider, toggle, checkbox, dropdown and radio group, in the
    order a learner sees them."""
    locator = widget.locator(", ".join(CONTROLS.values()))
    found = []
    for i in range(locator.count()):
        control = locator.nth(i)
        kind = control.evaluate(
            "(el, kinds) => Object.keys(kinds).find(k => el.matches(kinds[k]))", CONTROLS
        )
        found.append((kind, control))
    return found


def operate(page, kind: str, control) -> None:
    """Move/flip/choose once, as a learner would with the mouse."""
    control.scroll_into_view_if_needed()
    if kind == "slider":
        base = control.locator("xpath=ancestor::div[contains(@class,'noUi-base')]")
        track, handle = base.bounding_box(), control.bounding_box()
        x0, y0 = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
        fraction = (x0 - track["x"]) / max(track["width"], 1)
        target = track["x"] + track["width"] * (0.75 if fraction < 0.5 else 0.25)
        before = control.get_attribute("aria-valuenow")
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(target, y0, steps=8)
        page.mouse.up()
        if control.get_attribute("aria-valuenow") == before:  # fall back to the keyboard
            control.focus()
            control.press("PageUp" if fraction < 0.5 else "PageDown")
    elif kind == "toggle-buttons":
        control.locator("button:not(.mod-active)").first.click()
    elif kind in ("toggle", "checkbox"):
        control.click()
    elif kind == "dropdown":
        options = control.evaluate("s => [...s.options].filter(o => !o.selected).map(o => o.value)")
        control.select_option(options[0])
    elif kind == "radio":
        control.locator("input[type=radio]:not(:checked)").first.check()


def screenshot(page, name: str, element=None) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    (element or page).screenshot(path=str(path))
    return path


def scroll_to_cell(page, index: int) -> None:
    """Scroll the notebook so that cell `index` is at the top of the viewport."""
    # Cells above render lazily (content-visibility) and change height while scrolling, so
    # scroll again until the cell stays near the top.
    page.wait_for_function(
        f"""(i) => {{
      const node = {NB}.content.widgets[i].node, rect = node.getBoundingClientRect();
      if (rect.height > 0 && rect.top >= 0 && rect.top < 200) return true;
      node.scrollIntoView({{block: 'start'}});
      return false;
    }}""",
        arg=index,
        timeout=15_000,
        polling=250,
    )
