"""Execute one submission inside the sandbox: `python -m autograder.execute WORKDIR < notebook`.

Runs every cell with a per-cell timeout (a hanging cell is interrupted and the next one
runs), caps how much output a cell may keep, survives a kernel that dies, and writes
`WORKDIR/execution.json` after every cell (so a run killed for its wall-clock limit still
says how far it got) and `WORKDIR/executed.ipynb` at the end.

The notebook arrives on stdin, so the hidden tests' source is never a file the learner's
code could open. Verdicts are not computed here: the hidden cells only record results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

PREAMBLE = (
    "import autograder.judge as _autograder_judge  # noqa: captured before any learner code\n"
    "del _autograder_judge\n"
)
TRUNCATED = "\n[output truncated by the grader: this cell printed more than {limit} bytes]\n"


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


async def run(nb, workdir: Path, cell_timeout: int, output_bytes: int) -> dict:
    client = CappedClient(
        nb,
        timeout=cell_timeout,
        kernel_name="python3",
        allow_errors=True,
        interrupt_on_timeout=True,
        resources={"metadata": {"path": str(workdir)}},
        cell_output_bytes=output_bytes,
        error_on_timeout={
            "ename": "CellTimeoutError",
            "evalue": f"cell ran past {cell_timeout} s",
            "traceback": [f"CellTimeoutError: the grader stopped this cell after {cell_timeout} s"],
        },
    )
    report = {"cells": [], "kernel_died": False, "started": time.time()}
    async with client.async_setup_kernel():
        preamble = nbformat.v4.new_code_cell(PREAMBLE)
        await client.async_execute_cell(preamble, -1)
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            meta = cell.get("metadata", {})
            grade_id = meta.get("nbgrader", {}).get("grade_id", "")
            entry = {
                "index": index,
                "grade_id": grade_id,
                "hidden_tests_of": meta.get("autograder", {}).get("hidden_tests_of", ""),
            }
            start = time.perf_counter()
            if report["kernel_died"]:
                entry.update(status="not-run", detail="the kernel had died in an earlier cell")
            else:
                try:
                    await client.async_execute_cell(cell, index)
                    entry["status"], entry["detail"] = _cell_status(cell)
                except CellTimeoutError:
                    entry.update(status="timeout", detail=f"ran past {cell_timeout} s")
                except DeadKernelError:
                    report["kernel_died"] = True
                    entry.update(
                        status="kernel-died",
                        detail="the kernel died (exit, crash, or out of memory)",
                    )
                except CellExecutionError as exc:
                    entry.update(status="error", detail=str(exc)[:300])
            entry["seconds"] = round(time.perf_counter() - start, 3)
            entry["truncated"] = index in client.truncated
            report["cells"].append(entry)
            _write_json(workdir / "execution.json", report)
    return report


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--cell-timeout", type=int, default=30)
    parser.add_argument("--output-bytes", type=int, default=200_000)
    args = parser.parse_args(argv)
    nb = nbformat.reads(sys.stdin.read(), as_version=4)
    report = asyncio.run(run(nb, args.workdir, args.cell_timeout, args.output_bytes))
    report["finished"] = time.time()
    _write_json(args.workdir / "execution.json", report)
    nbformat.write(nb, args.workdir / "executed.ipynb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
