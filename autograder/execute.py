"""Execute one submission: the notebook client runs here, on the grader's side; only the kernel
runs inside the sandbox, reached over Unix sockets in the job's kernel folder (so the kernel
needs no network, and nothing it does can edit what the client records).

What the client records, cell by cell, is the truth about the run:
- a cell is "ok" only when its own execute reply said so; "error" (with the exception), or
  "timeout" when it ran past the per-cell limit;
- after a timeout the kernel must become idle again: if the interrupt did not take (a loop
  whose bare `except:` swallows KeyboardInterrupt), the kernel is restarted, the cells before
  that define things are run again silently, and grading goes on from the next cell; the hung
  cell is reported as such, never as "kernel died";
- the hidden tests' results arrive as display messages of type `RESULTS_MIME` while their cell
  runs: they are taken out of the outputs and kept per cell. Results published from any other
  cell are counted (a finding), never used;
- output beyond a per-cell cap is dropped with a notice.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from queue import Empty

import nbformat
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

from autograder.judge import RESULTS_MIME
from autograder.limits import cpu_seconds

PREAMBLE = "import autograder.judge  # the grader's recorder, imported before any learner code\n"
TRUNCATED = "\n[output truncated by the grader: this cell printed more than {limit} bytes]\n"
MAX_RESULTS_BYTES = 64 * 2**20
# How long a kernel gets to become idle after an interrupt before it is restarted.
SETTLE_S = 5.0


class WrappedKernelManager(AsyncKernelManager):
    """Starts the kernel through `wrapper` (prlimit, bubblewrap) over IPC sockets.

    Interrupts go as messages on the control channel: a signal would reach the wrapper
    process, not the kernel inside the sandbox.
    """

    wrapper: list[str] = []
    # Called before each start, restarts included (the sandbox reopens its socket folder).
    before_start: Callable[[], None] | None = None

    def format_kernel_cmd(self, extra_arguments=None):
        if self.before_start is not None:
            self.before_start()
        return [*self.wrapper, *super().format_kernel_cmd(extra_arguments)]

    @property
    def kernel_spec(self):
        spec = super().kernel_spec
        if spec is not None:
            spec.interrupt_mode = "message"
        return spec


class GradingClient(NotebookClient):
    """A client that caps output per cell, takes the hidden tests' results out of the
    outputs, and notices timeouts."""

    def __init__(self, *args, cell_output_bytes: int = 200_000, **kwargs):
        super().__init__(*args, **kwargs)
        self.cell_output_bytes = cell_output_bytes
        self.bytes_per_cell: dict[int, int] = {}
        self.truncated: set[int] = set()
        self.results: dict[int, list] = {}
        self.results_bytes = 0
        self.timed_out = False

    def output(self, outs, msg, display_id, cell_index):
        content = msg.get("content", {})
        data = content.get("data") if isinstance(content, dict) else None
        if (
            msg.get("msg_type") == "display_data"
            and isinstance(data, dict)
            and RESULTS_MIME in data
        ):
            self._keep_results(cell_index, data[RESULTS_MIME])
            return None
        size = len(json.dumps(content))
        used = self.bytes_per_cell.get(cell_index, 0) + size
        self.bytes_per_cell[cell_index] = used
        if used > self.cell_output_bytes:
            if cell_index not in self.truncated:
                self.truncated.add(cell_index)
                notice = TRUNCATED.format(limit=self.cell_output_bytes)
                outs.append(nbformat.v4.new_output("stream", name="stderr", text=notice))
            return None
        return super().output(outs, msg, display_id, cell_index)

    def _keep_results(self, cell_index: int, payload) -> None:
        size = len(json.dumps(payload)) if not isinstance(payload, str) else len(payload)
        self.results_bytes += size
        entry = payload if self.results_bytes <= MAX_RESULTS_BYTES else {"oversized": size}
        self.results.setdefault(cell_index, []).append(entry)

    async def _async_handle_timeout(self, timeout, cell=None):
        self.timed_out = True
        return await super()._async_handle_timeout(timeout, cell)


def _cell_status(cell) -> tuple[str, str]:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            ename = out.get("ename", "")
            if ename in ("CellTimeoutError",):
                return "timeout", ename
            if ename == "KeyboardInterrupt":
                return "timeout", "interrupted by the grader"
            return "error", f"{ename}: {str(out.get('evalue', ''))[:300]}"
    return "ok", ""


def _client(nb, workdir: Path, sockets: Path, wrapper: list[str], limits, before_start=None):
    cell_timeout, output_bytes = limits.cell_timeout_s, limits.cell_output_bytes
    hooks = {"wrapper": list(wrapper), "before_start": staticmethod(before_start)}
    manager_class = type("JobKernelManager", (WrappedKernelManager,), hooks)
    km = manager_class(
        kernel_name="python3",
        transport="ipc",
        # Sockets in a short folder of their own (`Sandbox.sockets`): the only host folder the
        # sandboxed kernel can write to.
        ip=str(sockets / "kernel"),
        connection_file=str(workdir / ".kernel.json"),
    )
    timeout_error = {
        "ename": "CellTimeoutError",
        "evalue": f"cell ran past {cell_timeout} s",
        "traceback": [f"CellTimeoutError: the grader stopped this cell after {cell_timeout} s"],
    }
    return GradingClient(
        nb,
        km=km,
        timeout=cell_timeout,
        allow_errors=True,
        interrupt_on_timeout=True,
        shutdown_kernel="immediate",
        resources={"metadata": {"path": str(workdir)}},
        cell_output_bytes=output_bytes,
        error_on_timeout=timeout_error,
    )


async def _idle_within(client, seconds: float) -> bool:
    """True when the kernel answers a trivial request within `seconds` (it is idle again)."""
    kc = client.kc
    msg_id = kc.execute("", silent=True, store_history=False)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            reply = await kc.shell_channel.get_msg(timeout=max(0.05, deadline - time.monotonic()))
        except Empty:
            return False
        if reply.get("parent_header", {}).get("msg_id") == msg_id:
            return True
    return False


async def _settle_after_timeout(client, report: dict) -> str:
    """After a cell timed out: "interrupted" if the kernel became idle, else "restarted"."""
    if await _idle_within(client, SETTLE_S):
        return "interrupted"
    await client.km.interrupt_kernel()
    if await _idle_within(client, SETTLE_S / 2):
        return "interrupted"
    _record_kernel_cpu(client, report)  # the restart starts a new process
    await client.km.restart_kernel(now=True)
    await client.kc.wait_for_ready(timeout=60)
    return "restarted"


async def _replay(client, nb, report: dict, upto: int) -> None:
    """Run again, silently, the cells before `upto` that ran to completion (what defines the
    learner's functions), except hidden-test cells, whose results were already taken."""
    replayed = 0
    for entry in report["cells"]:
        if entry["index"] >= upto or entry.get("status") != "ok" or entry.get("hidden_tests_of"):
            continue
        source = nb.cells[entry["index"]].source
        msg_id = client.kc.execute(source, silent=True, store_history=False)
        try:
            reply = await asyncio.wait_for(_reply_for(client, msg_id), client.timeout or 30)
        except TimeoutError:
            await _settle_after_timeout(client, report)
            report["replay_incomplete"] = True
            return
        if reply.get("content", {}).get("status") == "ok":
            replayed += 1
    report["replayed_cells"] = report.get("replayed_cells", 0) + replayed


async def _reply_for(client, msg_id: str) -> dict:
    while True:
        reply = await client.kc.shell_channel.get_msg(timeout=None)
        if reply.get("parent_header", {}).get("msg_id") == msg_id:
            return reply


def _entry(index: int, cell) -> dict:
    meta = cell.get("metadata", {})
    return {
        "index": index,
        "grade_id": meta.get("nbgrader", {}).get("grade_id", ""),
        "hidden_tests_of": meta.get("autograder", {}).get("hidden_tests_of", ""),
        "grader_cell": bool(meta.get("autograder", {}).get("grader_cell")),
    }


async def _run_cells(client, nb, report: dict, cell_timeout: int) -> None:
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        entry = _entry(index, cell)
        report["cells"].append(entry)
        if report["kernel_died"]:
            entry.update(status="not-run", detail="the kernel had died in an earlier cell")
            continue
        entry["status"] = "running"
        start = time.perf_counter()
        client.timed_out = False
        try:
            await client.async_execute_cell(cell, index)
            entry["status"], entry["detail"] = _cell_status(cell)
        except CellTimeoutError:
            entry.update(status="timeout", detail=f"ran past {cell_timeout} s")
        except DeadKernelError:
            report["kernel_died"] = True
            entry.update(status="kernel-died", detail="the kernel stopped (exit, crash or a limit)")
        except CellExecutionError as exc:
            entry.update(status="error", detail=str(exc)[:300])
        entry["seconds"] = round(time.perf_counter() - start, 3)
        entry["truncated"] = index in client.truncated
        if client.timed_out and not report["kernel_died"]:
            entry["status"] = "timeout"
            entry["detail"] = f"ran past the grader's limit of {cell_timeout} s per cell"
            how = await _settle_after_timeout(client, report)
            if how == "restarted":
                entry["detail"] += (
                    "; it ignored the interrupt, so the grader restarted the kernel and ran the "
                    "earlier cells again before going on"
                )
                report["restarts"] = report.get("restarts", 0) + 1
                await _replay(client, nb, report, index)
        results = client.results.get(index)
        if results is not None:
            if entry["hidden_tests_of"]:
                entry["results"] = results
            else:
                entry["published_results"] = len(results)
                # Which exercises they claimed to be: those verdicts can no longer be trusted.
                entry["published_for"] = sorted(
                    {r["exercise"][:100] for r in results if _names_exercise(r)}
                )[:50]


def _names_exercise(payload) -> bool:
    return isinstance(payload, dict) and isinstance(payload.get("exercise"), str)


def _record_kernel_cpu(client, report: dict) -> None:
    """The kernel's CPU time so far, summed over restarts. The kernel runs on one thread, so
    this is close to the wall time of the same run on a quiet machine, whatever else runs."""
    process = getattr(getattr(client.km, "provisioner", None), "process", None)
    seconds = cpu_seconds(process.pid) if process is not None else None
    if seconds is not None:
        report["kernel_cpu_s"] = round(report.get("kernel_cpu_s", 0.0) + seconds, 2)


async def _execute(client, nb, report: dict, env: dict, workdir: Path, limits) -> None:
    with open(workdir / "kernel.log", "wb") as log:
        async with client.async_setup_kernel(env=env, cwd=str(workdir), stdout=log, stderr=log):
            try:
                await asyncio.wait_for(
                    _run_cells(client, nb, report, limits.cell_timeout_s),
                    limits.notebook_timeout_s,
                )
            except TimeoutError:
                report["timed_out"] = True
                for entry in report["cells"]:
                    if entry.get("status") == "running":
                        entry.update(status="timeout", detail="the notebook's time limit ran out")
            _record_kernel_cpu(client, report)


def execute(
    nb,
    workdir: Path,
    limits,
    wrapper: list[str],
    env: dict,
    *,
    sockets: Path,
    before_start: Callable[[], None] | None = None,
) -> dict:
    """Run `nb` in place (outputs are added to it) and return what happened, cell by cell.

    `sockets`: an existing folder for the kernel's IPC sockets, short enough for a socket's
    path (`sandbox.new_socket_dir`). `before_start` runs before the kernel starts and before
    each restart."""
    client = _client(nb, workdir, sockets, wrapper, limits, before_start)
    report = {"cells": [], "kernel_died": False, "timed_out": False, "started": time.time()}
    # A thread of its own: the caller may already run an event loop (a notebook, a test
    # session that used Playwright), and asyncio.run refuses to nest.
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(asyncio.run, _execute(client, nb, report, env, workdir, limits))
    try:
        future.result()
    except (DeadKernelError, RuntimeError, OSError) as exc:
        report["kernel_died"] = True
        report["startup_error"] = f"{type(exc).__name__}: {exc}"[:500]
    report["finished"] = time.time()
    return report
