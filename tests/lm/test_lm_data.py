"""Tokenizer, corpora, batches and the learning-rate schedule."""

import hashlib
import urllib.error

import pytest
import torch

from course.lm import corpus as corpus_mod
from course.lm.corpus import (
    CorpusError,
    load_corpus,
    shakespeare_corpus,
    stdlib_corpus,
    stdlib_files,
    text_file_corpus,
)
from course.lm.data import random_windows
from course.lm.schedule import lr_at
from course.lm.tokenizer import ByteTokenizer


def test_tokenizer_round_trip_ascii_and_unicode():
    tok = ByteTokenizer()
    for text in ["", "def f(x):\n    return x\n", "naïve café — 東京 🙂"]:
        ids = tok.encode(text)
        assert all(0 <= i < 256 for i in ids)
        assert tok.decode(ids) == text
        assert tok.decode(torch.tensor(ids)) == text
    assert len(tok.encode("é")) == 2  # bytes, not characters


def test_tokenizer_decodes_a_cut_character_without_crashing():
    ids = ByteTokenizer().encode("é")[:1]
    assert ByteTokenizer().decode(ids) == "\ufffd"


def test_stdlib_corpus_is_deterministic_and_sizeable():
    a, b = stdlib_corpus(), stdlib_corpus()
    assert torch.equal(a.train, b.train) and torch.equal(a.val, b.val)
    assert a.train.dtype == torch.uint8
    assert 3_000_000 < len(a.train) + len(a.val) < 5_000_000
    assert 0.05 < len(a.val) / (len(a.train) + len(a.val)) < 0.2
    assert b"def " in bytes(a.train[:200_000].tolist())


def _fake_stdlib(root):
    for i in range(30):
        (root / f"mod{i:02d}.py").write_text(f"# module {i}\n" + f"x{i} = {i}\n" * 5)
    for skipped in ["test", "site-packages", "idlelib"]:
        (root / skipped).mkdir()
        (root / skipped / "skipme.py").write_text("SKIPPED = True\n")
    (root / "pkg").mkdir()
    (root / "pkg" / "inner.py").write_text("# module inner\n")
    return root


def test_stdlib_corpus_skips_tests_and_splits_by_whole_file(tmp_path):
    root = _fake_stdlib(tmp_path)
    names = {p.relative_to(root).as_posix() for p in stdlib_files(root)}
    assert "pkg/inner.py" in names and not any("skipme" in n for n in names)
    c = stdlib_corpus(budget_bytes=10**9, root=root)
    train, val = bytes(c.train.tolist()), bytes(c.val.tolist())
    assert b"SKIPPED" not in train + val
    for path in stdlib_files(root):
        content = path.read_bytes().strip()
        # Each file lands whole in exactly one split.
        assert (content in train) != (content in val), path
    assert val.count(b"# module") == 3  # every tenth of 31 files


def test_stdlib_corpus_respects_the_budget(tmp_path):
    root = _fake_stdlib(tmp_path)
    largest = max(len(p.read_bytes()) for p in stdlib_files(root)) + 3
    c = stdlib_corpus(budget_bytes=1200, root=root)
    assert 1200 <= len(c.train) + len(c.val) < 1200 + largest


def test_text_file_corpus_splits_90_10(tmp_path):
    data = bytes(range(256)) * 4
    path = tmp_path / "t.txt"
    path.write_bytes(data)
    c = load_corpus(str(path))
    cut = int(len(data) * 0.9)
    assert bytes(c.train.tolist()) == data[:cut]
    assert bytes(c.val.tolist()) == data[cut:]


def test_missing_corpus_file_is_a_clear_error(tmp_path):
    with pytest.raises(CorpusError, match="corpus file not found"):
        load_corpus(str(tmp_path / "nope.txt"))


def test_tiny_corpus_file_is_a_clear_error(tmp_path):
    (tmp_path / "t.txt").write_text("hi")
    with pytest.raises(CorpusError, match="too small"):
        text_file_corpus(tmp_path / "t.txt")


def _fake_remote(tmp_path):
    text = b"First Citizen:\nBefore we proceed any further, hear me speak.\n" * 50
    src = tmp_path / "remote" / "input.txt"
    src.parent.mkdir()
    src.write_bytes(text)
    return src.as_uri(), hashlib.sha256(text).hexdigest(), text


def test_shakespeare_download_is_checksummed_and_cached(tmp_path, monkeypatch):
    url, digest, text = _fake_remote(tmp_path)
    c = shakespeare_corpus(url=url, sha256=digest)
    assert c.name == "shakespeare"
    assert bytes(c.train.tolist()) + bytes(c.val.tolist()) == text
    cached = tmp_path / "cache" / "tinyshakespeare.txt"
    assert cached.read_bytes() == text

    def no_network(*args, **kwargs):
        raise AssertionError("a cached file must not be downloaded again")

    monkeypatch.setattr(corpus_mod, "urlopen", no_network)
    assert torch.equal(shakespeare_corpus(url=url, sha256=digest).val, c.val)


def test_shakespeare_wrong_checksum_is_rejected_and_not_saved(tmp_path):
    url, _, _ = _fake_remote(tmp_path)
    with pytest.raises(CorpusError, match="checksum mismatch"):
        shakespeare_corpus(url=url, sha256="0" * 64)
    assert not (tmp_path / "cache" / "tinyshakespeare.txt").exists()


def test_shakespeare_offline_gives_a_clear_message(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(corpus_mod, "urlopen", offline)
    with pytest.raises(CorpusError, match="offline") as info:
        load_corpus("shakespeare")
    assert "\n" not in str(info.value)


def test_batches_are_windows_with_targets_shifted_by_one():
    data = torch.arange(200, dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    x, y = random_windows(data, batch_size=5, context_length=16, generator=g)
    assert x.shape == y.shape == (5, 16)
    assert x.dtype == y.dtype == torch.long
    assert torch.equal(y[:, :-1], x[:, 1:])
    # Contiguous windows of the stream: each row counts up by one.
    assert torch.equal(x[:, 1:] - x[:, :-1], torch.ones(5, 15, dtype=torch.long))
    assert torch.equal(y, x + 1)
    x2, _ = random_windows(data, 5, 16, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)


def test_batches_reach_the_last_token_and_reject_short_data():
    data = torch.arange(10, dtype=torch.uint8)
    _, y = random_windows(data, 200, 9, torch.Generator().manual_seed(0))
    assert y.max().item() == 9
    with pytest.raises(ValueError, match="too short"):
        random_windows(data, 1, 10)


def test_schedule_warms_up_then_decays_to_the_floor():
    kw = dict(max_lr=1.0, min_lr=0.1, warmup_steps=10, total_steps=110)
    assert lr_at(0, **kw) == pytest.approx(0.1)
    assert lr_at(4, **kw) == pytest.approx(0.5)
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.55)  # half way down the cosine
    assert lr_at(110, **kw) == pytest.approx(0.1)
    assert lr_at(500, **kw) == pytest.approx(0.1)
    decay = [lr_at(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))
