"""Where the training text comes from: the stdlib's own source, Tiny Shakespeare, or a file.

A corpus is two byte tensors (train, val). Bytes rather than text because the tokenizer is
byte-level: a uint8 tensor *is* the token stream, with no encoding step and a quarter of the
memory of int32 ids.
"""

from __future__ import annotations

import hashlib
import math
import os
import sysconfig
import tempfile
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from urllib.request import urlopen

import torch

from course.lm.errors import CorpusError

SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
STDLIB_BUDGET_BYTES = 4_000_000
# Generated tables, vendored or retired packages, test suites and GUI code are not the Python
# a learner wants the model to imitate (encodings/ is mostly mapping tables).
STDLIB_SKIP_DIRS = frozenset(
    {
        "test",
        "tests",
        "site-packages",
        "dist-packages",
        "idlelib",
        "lib2to3",
        "turtledemo",
        "pydoc_data",
        "encodings",
        "ensurepip",
        "tkinter",
        "__pycache__",
        "lib-dynload",
    }
)
CORPORA = ("stdlib", "shakespeare")


@dataclass
class Corpus:
    name: str
    train: torch.Tensor  # uint8 token ids, shape (n_train,)
    val: torch.Tensor  # uint8 token ids, shape (n_val,)
    description: str = ""

    def __repr__(self) -> str:
        return (
            f"Corpus({self.name!r}, train={len(self.train):,} bytes, val={len(self.val):,} bytes)"
        )


def cache_dir() -> Path:
    """Downloads live here; COURSE_CACHE_DIR overrides (tests, shared lab machines)."""
    override = os.environ.get("COURSE_CACHE_DIR")
    return Path(override) if override else Path.home() / ".cache" / "transformer-course"


def load_corpus(spec: str | os.PathLike = "stdlib") -> Corpus:
    """`stdlib` (embedded, no network), `shakespeare` (downloaded once), or a text file's path."""
    if isinstance(spec, Corpus):
        return spec
    if str(spec) == "stdlib":
        return stdlib_corpus()
    if str(spec) == "shakespeare":
        return shakespeare_corpus()
    path = Path(spec).expanduser()
    if not path.is_file():
        raise CorpusError(
            f"corpus file not found: {spec} (use a path to a text file, or one of: "
            f"{', '.join(CORPORA)})"
        )
    return text_file_corpus(path)


def _as_tensor(data: bytes) -> torch.Tensor:
    # bytearray: torch.frombuffer wants a writable buffer and the tensor keeps it alive.
    return (
        torch.frombuffer(bytearray(data), dtype=torch.uint8)
        if data
        else torch.empty(0, dtype=torch.uint8)
    )


def split_bytes(data: bytes, name: str, val_fraction: float = 0.1) -> Corpus:
    """First 90% trains, last 10% validates, as nanoGPT splits its character corpora."""
    if len(data) < 20:
        raise CorpusError(f"corpus {name} is too small to split ({len(data)} bytes)")
    cut = int(len(data) * (1 - val_fraction))
    return Corpus(name, _as_tensor(data[:cut]), _as_tensor(data[cut:]), f"{name}: 90/10 split")


def text_file_corpus(path: str | os.PathLike) -> Corpus:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorpusError(f"cannot read corpus file {path}: {exc.strerror or exc}") from exc
    return split_bytes(data, str(path))


def stdlib_files(root: str | os.PathLike | None = None) -> list[Path]:
    """Every eligible `*.py` under the standard library, in a fixed order that mixes packages.

    Ordering by a hash of the relative path (not alphabetically) means the byte budget picks a
    spread of modules instead of everything from `asyncio` to `ctypes`.
    """
    root = Path(root or sysconfig.get_paths()["stdlib"])
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        # Pruning in place keeps os.walk out of site-packages, which can be huge.
        dirnames[:] = [d for d in dirnames if d not in STDLIB_SKIP_DIRS]
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir.parts and rel_dir.parts[0].startswith("config-"):
            continue
        for name in filenames:
            if name.endswith(".py") and not name.startswith("_sysconfigdata"):
                found.append(rel_dir / name)
    found.sort(key=lambda rel: hashlib.sha256(rel.as_posix().encode()).hexdigest())
    return [root / rel for rel in found]


def stdlib_corpus(
    budget_bytes: int = STDLIB_BUDGET_BYTES, root: str | os.PathLike | None = None
) -> Corpus:
    """The Python standard library's source: present wherever Python is, so no download.

    Split by file (every tenth chosen file validates), so validation text is code the model
    has never seen, not the tail of a file it trained on.
    """
    train_parts: list[bytes] = []
    val_parts: list[bytes] = []
    total = 0
    for i, path in enumerate(stdlib_files(root)):
        if total >= budget_bytes:
            break
        data = path.read_bytes().strip() + b"\n\n\n"
        (val_parts if i % 10 == 9 else train_parts).append(data)
        total += len(data)
    if not train_parts or not val_parts:
        raise CorpusError(f"found too few Python files under {root or 'the stdlib'} for a corpus")
    count = len(train_parts) + len(val_parts)
    desc = f"stdlib: {count} files, {total:,} bytes, split by file"
    return Corpus(
        "stdlib", _as_tensor(b"".join(train_parts)), _as_tensor(b"".join(val_parts)), desc
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, sha256: str, timeout: float = 30.0) -> Path:
    """Fetch `url` to `dest` once; a file is only kept if its checksum matches."""
    if dest.is_file() and sha256_of(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urlopen(url, timeout=timeout) as response:
            data = response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CorpusError(
            f"could not download {url} ({reason}); are you offline? Put the file at {dest} "
            f"or pass --corpus PATH"
        ) from exc
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise CorpusError(
            f"checksum mismatch for {url}: expected sha256 {sha256}, got {got}; the file was "
            f"not saved"
        )
    # Write then rename, so an interrupted download never leaves a half file in the cache.
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp:
        tmp.write(data)
    os.replace(tmp.name, dest)
    return dest


def shakespeare_corpus(url: str = SHAKESPEARE_URL, sha256: str = SHAKESPEARE_SHA256) -> Corpus:
    """Tiny Shakespeare (1.1 MB), downloaded once into the cache and checksummed."""
    path = download(url, cache_dir() / "tinyshakespeare.txt", sha256)
    corpus = text_file_corpus(path)
    corpus.name = "shakespeare"
    return corpus


def unigram_bigram_entropy(data) -> tuple[float, float]:
    """The entropy H(X) (nats per byte) of the byte distribution of `data` (a uint8 tensor of
    shape (n,), n >= 2), and the conditional entropy H(X_{t+1} | X_t) of a byte given the one
    before it: the losses the best context-free model and the best bigram model reach on the
    text they were counted on (Shannon 1948). Returns two Python floats."""
    x = data.to(torch.long)
    counts = torch.bincount(x, minlength=256).double()
    p = counts / counts.sum()
    h1 = -(p[p > 0] * p[p > 0].log()).sum().item()
    pairs = torch.bincount(x[:-1] * 256 + x[1:], minlength=256 * 256).double().view(256, 256)
    joint = pairs / pairs.sum()
    cond = pairs / pairs.sum(1, keepdim=True).clamp_min(1)
    mask = joint > 0
    h2 = -(joint[mask] * cond[mask].log()).sum().item()
    assert math.isfinite(h1) and math.isfinite(h2)
    return h1, h2
