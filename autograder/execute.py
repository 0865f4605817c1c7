"""Execute one submission: the notebook client runs here, on the grader's side; only the
kernel runs inside the sandbox, reached over Unix sockets in the job's folder (so the
kernel needs no network at all, and nothing it does can edit what the client records).

Every cell runs with a per-cell timeout (a hanging cell is interrupted and the next one
runs) and an output cap; a kernel that dies ends the run with the cells after it marked
not run; the whole notebook has a wall-clock limit. Verdicts are not computed here: the
hidden cells only record results.
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

from autograder import sandbox

PREAMBLE = "import autograder.judge  # captured before any learner code runs\n"
TRUNCATED = "\n[output truncated by the grader: this cell printed more than {limit} bytes]\n"


class WrappedKernelManager(AsyncKernelManager):
    """Starts the kernel through `wrapper` (prlimit, bubblewrap) over IPC sockets.

    Interrupts go as messages on the control channel: a signal would reach the wrapper
    process, not the kernel inside the sandbox.
    """

    wrapper: list[str] = []

    def format_kernel_cmd(self, extra_arguments=None):
        return [*self.wrapper, *super().format_kernel_cmd(extra_arguments)]

    @property
    def kernel_spec(self):
        spec = super().kernel_spec
        if spec is not None:
            spec.interrupt_mode = "message"
        return spec


class CappedClient(NotebookClient):
    """A client that keeps at most `cell_output_bytes` of output per cell."""

    def __init__(self, *args, cell_output_bytes: int = 200_000, **kwargs):
        super().__init__(*args, **kwargs)
        self.cell_output_bytes = cell_output_bytes
        self.bytes_per_cell: dict[int, int] = {}
        self.truncated: set[int] = set()

    def output(self, outs, msg, display_id, cell_index):
        size = len(json.dumps(msg.get("content", {})))
        used = self.bytes_per_cell.get(cell_index, 0) + size
        self.bytes_per_cell[cell_index] = used
        if used > self.cell_output_bytes:
            if cell_index not in self.truncated:
                self.truncated.add(cell_index)
                notice = TRUNCATED.format(limit=self.cell_output_bytes)
                outs.append(nbformat.v4.new_output("stream", name="stderr", text=notice))
            return None
        return super().output(outs, msg, display_id, cell_index)


def _cell_status(cell) -> tuple[str, str]:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            ename = out.get("ename", "")
            if ename in ("KeyboardInterrupt", "CellTimeoutError"):
                return "timeout", ename
            return "error", f"{ename}: {str(out.get('evalue', ''))[:300]}"
    return "ok", ""


def _client(nb, workdir: Path, wrapper: list[str], cell_timeout: int, output_bytes: int):
    manager_class = type("JobKernelManager", (WrappedKernelManager,), {"wrapper": list(wrapper)})
    km = manager_class(
        kernel_name="python3",
        transport="ipc",
        # Sockets in a folder of their own: the only part of the job folder on the host,
        # with results/, that the sandboxed kernel can write to.
        ip=str(sandbox.socket_dir(workdir) / "kernel"),
        connection_file=str(workdir / ".kernel.json"),
    )
    timeout_error = {
        "ename": "CellTimeoutError",
        "evalue": f"cell ran past {cell_timeout} s",
        "traceback": [f"CellTimeoutError: the grader stopped this cell after {cell_timeout} s"],
    }
    return CappedClient(
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


async def _run_cells(client, nb, report: dict, cell_timeout: int) -> None:
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        meta = cell.get("metadata", {})
        entry = {
            "index": index,
            "grade_id": meta.get("nbgrader", {}).get("grade_id", ""),
            "hidden_tests_of": meta.get("autograder", {}).get("hidden_tests_of", ""),
        }
        report["cells"].append(entry)
        start = time.perf_counter()
        if report["kernel_died"]:
            entry.update(status="not-run", detail="the kernel had died in an earlier cell")
            continue
        entry["status"] = "running"
        try:
            await client.async_execute_cell(cell, index)
            entry["status"], entry["detail"] = _cell_status(cell)
        except CellTimeoutError:
            entry.update(status="timeout", detail=f"ran past {cell_timeout} s")
        except DeadKernelError:
            report["kernel_died"] = True
            entry.update(
                status="kernel-died", detail="the kernel died (exit, crash or out of memory)"
            )
        except CellExecutionError as exc:
            entry.update(status="error", detail=str(exc)[:300])
        entry["seconds"] = round(time.perf_counter() - start, 3)
        entry["truncated"] = index in client.truncated


async def _execute(client, nb, report: dict, env: dict, workdir: Path, limits) -> None:
    with open(workdir / "kernel.log", "wb") as log:
        async with client.async_setup_kernel(env=env, cwd=str(workdir), stdout=log, stderr=log):
            await _execute_in_kernel(client, nb, report, limits)


async def _execute_in_kernel(client, nb, report: dict, limits) -> None:
    await client.async_execute_cell(nbformat.v4.new_code_cell(PREAMBLE), -1)
    try:
        await asyncio.wait_for(
            _run_cells(client, nb, report, limits.cell_timeout_s), limits.notebook_timeout_s
        )
    except TimeoutError:
        report["timed_out"] = True
        for entry in report["cells"]:
            if entry.get("status") == "running":
                entry.update(status="timeout", detail="the notebook's time limit ran out")


def execute(nb, workdir: Path, limits, wrapper: list[str], env: dict) -> dict:
    """Run `nb` in place (outputs are added to it) and return what happened, cell by cell."""
    client = _client(nb, workdir, wrapper, limits.cell_timeout_s, limits.cell_output_bytes)
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
