"""The benchmark runs every section end to end (on the tiny preset, so in seconds)."""

import json
import os

import torch
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
    (row,) = results["generate"]  # cpu-tiny alone; cpu and gpu show each other too
    assert row["cached_tokens_per_s"] > 0 and row["recompute_tokens_per_s"] > 0
    assert row["floor_note"] == "the model has no decode_floor"
    ref, sdpa = results["memory"]
    # Written-out attention materialises (heads, 2048, 2048) float32 scores: 32 MiB for 2 heads.
    assert ref["peak_bytes"] > 16 * 2**20
    assert ref["peak_bytes"] > sdpa["peak_bytes"]
    assert results["loss"]["steps"] > 0
    saved = list((tmp_path / "runs").glob("bench-*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["preset"] == "cpu-tiny"
    out = capsys.readouterr().out
    assert "1. training throughput" in out and "4. time to validation loss" in out
    assert "cpu-tiny preset" in out and "recompute" in out


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


def test_generation_rows_for_the_reference_model_include_the_floor_ratio(capsys):
    from course.lm.bench import _print_generate, generation_speed
    from course.lm.presets import get_preset
    from solutions.kernels.model import TransformerLM

    preset = get_preset("cpu-tiny")
    row = generation_speed(TransformerLM, preset, torch.device("cpu"), "cpu", repeats=1)
    assert row["model_s"] > 0 and row["floor_s"] > 0
    assert row["ratio"] == row["model_s"] / row["floor_s"]
    _print_generate([row])
    out = capsys.readouterr().out
    assert "step/floor" in out and "cpu preset targets:" in out
