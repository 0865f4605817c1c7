"""The benchmark runs every section end to end (on the tiny preset, so in seconds)."""

import json
import os

from conftest import HERE

from course.lm.bench import run_bench


def test_bench_runs_all_sections_and_writes_json(tmp_path, monkeypatch, capsys):
    # The memory probe runs in a fresh process, which must find the test model too.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(
        "".join(f"To be, or not to be {i}: that is the question.\n" for i in range(300))
    )
    results = run_bench(
        "lm_tinymodel:TinyLM",
        device="cpu",
        preset="cpu-tiny",
        corpus=str(corpus),
        out_dir=tmp_path / "runs",
    )
    assert {r["attention"] for r in results["train"]} == {"reference", "sdpa"}
    assert all(r["tokens_per_s"] > 0 for r in results["train"])
    cached, full = results["generate"]
    assert cached["kv_cache"] and not full["kv_cache"]
    ref, sdpa = results["memory"]
    # Written-out attention materialises (heads, 2048, 2048) float32 scores: 32 MiB for 2 heads.
    assert ref["peak_bytes"] > 16 * 2**20
    assert ref["peak_bytes"] > sdpa["peak_bytes"]
    assert results["loss"]["steps"] > 0
    saved = list((tmp_path / "runs").glob("bench-*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["preset"] == "cpu-tiny"
    out = capsys.readouterr().out
    assert "1. training throughput" in out and "4. time to validation loss" in out


def test_bench_without_corpus_skips_the_loss_run(tmp_path, capsys):
    results = run_bench(
        "lm_tinymodel:TinyLM",
        device="cpu",
        preset="cpu-tiny",
        corpus=None,
        out_dir=tmp_path,
        only={"train"},
    )
    assert "loss" not in results and "generate" not in results
    results = run_bench(
        "lm_tinymodel:TinyLM",
        device="cpu",
        preset="cpu-tiny",
        corpus=None,
        out_dir=tmp_path,
        only={"loss"},
    )
    assert "skipped" in capsys.readouterr().out
