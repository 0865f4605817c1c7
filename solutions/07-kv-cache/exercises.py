"""Lesson 07 (the KV cache), declared once: exercises, references, probes, points, mistakes.

Judged against `solutions/kernels/kv_cache.py`: the cache write into preallocated buffers, RoPE
at the cache's offset, attention of a block of new queries over the cache (the offset causal
mask, GQA's heads kept un-repeated), greedy decoding with a cache object reset between prompts,
chunked prefill, and the cache's size for real configurations.

Values alone cannot show how they were computed, so the lesson also watches: the decoding
exercises run on `course.probe_layers.WatchingLM` / `ChunkWatchingLM` (ToyLMs, a fresh one per
call, that raise an exception named after the broken rule: no cache, the model's own cache, a
new cache per prompt, a reset that reallocates, a wrong dtype, no ValueError past max_len,
chunks not of chunk_size...), and `Probe.inspect` checks what `cache_write` and
`cached_attention` leave in the buffers (written in place, views returned, ValueError past
max_len) and that `kv_cache_bytes` returns an int. The known mistakes include the ones every
first KV cache meets: the position pointer not advanced, RoPE at offset 0, the causal mask not
offset, the cache not reset, key/value heads repeated before caching, a `torch.cat` cache.
"""

from __future__ import annotations

import torch

from course.calling import FnRef
from course.lesson import Exercise, Lesson, Mistake, Probe, randn, seeded
from solutions.kernels import kv_cache as K


def model(name: str) -> FnRef:
    return FnRef(f"course.probe_layers:{name}")


def watching(name: str) -> FnRef:
    """A fresh `WatchingLM` (a ToyLM that checks how decode_greedy uses the cache) per call."""
    return model(f"watching_{name}")


def chunk_watching(name: str, chunk_size: int) -> FnRef:
    """A fresh `ChunkWatchingLM` that checks chunks of `chunk_size` fed into one cache."""
    return model(f"chunk_watching_{name}_{chunk_size}")


def buffers(g, B, H_kv, max_len, d, length, T, dtype=torch.float32):
    """(keys, values, length, k_new, v_new): buffers filled up to `length` (zeros after),
    and T new keys and values."""
    keys = torch.zeros(B, H_kv, max_len, d, dtype=dtype)
    values = torch.zeros(B, H_kv, max_len, d, dtype=dtype)
    keys[:, :, :length] = randn(g, B, H_kv, length, d, dtype=dtype)
    values[:, :, :length] = randn(g, B, H_kv, length, d, dtype=dtype)
    return (
        keys,
        values,
        length,
        randn(g, B, H_kv, T, d, dtype=dtype),
        randn(g, B, H_kv, T, d, dtype=dtype),
    )


# ---------------------------------------------------------------- cache_write

POINTER_HINT = (
    "write at position `length`: the new keys went to positions 0 .. T - 1, over the first "
    "cached tokens. They belong at length .. length + T - 1 (length, the integer you were "
    "given, is how many positions are filled; this function does not move it), e.g. "
    "keys[:, :, length:length + T] = k_new"
)

IN_PLACE_HINT = (
    "write into the buffers you were given (keys[:, :, length:length + T] = k_new): a cache "
    "is preallocated once, and building new tensors (torch.cat, .clone()) copies the whole "
    "prefix at every step and leaves the cache itself empty"
)
VIEW_HINT = (
    "return views of the buffers, keys[:, :, :length + T] and values[:, :, :length + T]: "
    "slicing makes no copy, while .clone() or torch.cat copies the whole prefix at every step"
)
OVERFLOW_HINT = (
    "past max_len the function must raise ValueError (not write, not assert): check "
    "length + T > keys.shape[2] first and raise ValueError('KV cache full: ...')"
)

WRITE_MISTAKES = [
    Mistake(
        id="write-at-zero",
        hint=POINTER_HINT,
        source="""
def cache_write(keys, values, length, k_new, v_new):
    T = k_new.shape[2]
    if length + T > keys.shape[2]:
        raise ValueError("KV cache full")
    keys[:, :, :T] = k_new
    values[:, :, :T] = v_new
    return keys[:, :, :length + T], values[:, :, :length + T]
""",
    ),
    Mistake(
        id="write-one-late",
        hint="the new keys went one position too far (length + 1 ..): position `length` is the "
        "first free one, since positions 0 .. length - 1 are filled",
        source="""
def cache_write(keys, values, length, k_new, v_new):
    T = k_new.shape[2]
    if length + T > keys.shape[2]:
        raise ValueError("KV cache full")
    keys[:, :, length + 1:length + 1 + T] = k_new
    values[:, :, length + 1:length + 1 + T] = v_new
    return keys[:, :, :length + T], values[:, :, :length + T]
""",
    ),
    Mistake(
        id="returns-whole-buffer",
        hint="return only the filled positions 0 .. length + T - 1 (keys[:, :, :length + T]): "
        "the rest of the buffer holds zeros (or an earlier prompt's keys), which attention would "
        "take for real tokens",
        source="""
def cache_write(keys, values, length, k_new, v_new):
    T = k_new.shape[2]
    if length + T > keys.shape[2]:
        raise ValueError("KV cache full")
    keys[:, :, length:length + T] = k_new
    values[:, :, length:length + T] = v_new
    return keys, values
""",
    ),
    Mistake(
        id="returns-without-new",
        hint="the returned keys stop before the new tokens: a new query attends to the cached "
        "keys *and* its own block's (itself included), positions 0 .. length + T - 1",
        source="""
def cache_write(keys, values, length, k_new, v_new):
    T = k_new.shape[2]
    if length + T > keys.shape[2]:
        raise ValueError("KV cache full")
    keys[:, :, length:length + T] = k_new
    values[:, :, length:length + T] = v_new
    return keys[:, :, :length], values[:, :, :length]
""",
    ),
    Mistake(
        id="returns-only-new",
        hint="returns only the new keys and values: attention must see every cached position "
        "too, positions 0 .. length + T - 1 of the buffers",
        source="""
def cache_write(keys, values, length, k_new, v_new):
    T = k_new.shape[2]
    if length + T > keys.shape[2]:
        raise ValueError("KV cache full")
    keys[:, :, length:length + T] = k_new
    values[:, :, length:length + T] = v_new
    return k_new, v_new
""",
    ),
    Mistake(
        id="cat-reallocates",
        hint=IN_PLACE_HINT,
        source="""
def cache_write(keys, values, length, k_new, v_new):
    k = torch.cat([keys[:, :, :length], k_new], dim=2)
    v = torch.cat([values[:, :, :length], v_new], dim=2)
    return k, v
""",
    ),
    Mistake(
        id="writes-into-a-clone",
        hint=IN_PLACE_HINT,
        source="""
def cache_write(keys, values, length, k_new, v_new):
    T = k_new.shape[2]
    if length + T > keys.shape[2]:
        raise ValueError("KV cache full")
    keys, values = keys.clone(), values.clone()
    keys[:, :, length:length + T] = k_new
    values[:, :, length:length + T] = v_new
    return keys[:, :, :length + T], values[:, :, :length + T]
""",
    ),
    Mistake(
        id="returns-a-copy",
        hint=VIEW_HINT,
        source="""
def cache_write(keys, values, length, k_new, v_new):
    T = k_new.shape[2]
    if length + T > keys.shape[2]:
        raise ValueError("KV cache full")
    keys[:, :, length:length + T] = k_new
    values[:, :, length:length + T] = v_new
    return keys[:, :, :length + T].clone(), values[:, :, :length + T].clone()
""",
    ),
    Mistake(
        id="no-overflow-check",
        hint=OVERFLOW_HINT,
        source="""
def cache_write(keys, values, length, k_new, v_new):
    T = k_new.shape[2]
    keys[:, :, length:length + T] = k_new[:, :, :keys.shape[2] - length]
    values[:, :, length:length + T] = v_new[:, :, :keys.shape[2] - length]
    return keys[:, :, :length + T], values[:, :, :length + T]
""",
    ),
    Mistake(
        id="overflow-off-by-one",
        hint="the cache may be filled exactly: length + T == max_len fits (positions up to "
        "max_len - 1). Refuse only when length + T > max_len",
        source="""
def cache_write(keys, values, length, k_new, v_new):
    T = k_new.shape[2]
    if length + T >= keys.shape[2]:
        raise ValueError("KV cache full")
    keys[:, :, length:length + T] = k_new
    values[:, :, length:length + T] = v_new
    return keys[:, :, :length + T], values[:, :, :length + T]
""",
    ),
    Mistake(
        id="assert-overflow",
        hint=OVERFLOW_HINT,
        source="""
def cache_write(keys, values, length, k_new, v_new):
    T = k_new.shape[2]
    assert length + T <= keys.shape[2], "KV cache full"
    keys[:, :, length:length + T] = k_new
    values[:, :, length:length + T] = v_new
    return keys[:, :, :length + T], values[:, :, :length + T]
""",
    ),
]

WRITE_INSPECT = "course.probe_layers:inspect_cache_write"

# index_copy_ writes at a tensor of indices: the tool for scattered positions (a ring buffer, a
# paged cache), and the stand-in for a learner's cache_write in the later exercises.
WRITE_FORBIDDEN = {"index_copy": "index_copy", "index_copy_": "Tensor.index_copy_"}
WRITE_FORBIDDEN_HINT = (
    "It writes at a tensor of indices, the tool for scattered positions (the ring buffer of "
    "Going further); the new tokens go to one range of positions, a slice: "
    "keys[:, :, length:length + T] = k_new writes through a view."
)


def write_visible() -> list[Probe]:
    g = seeded(701)
    return [
        Probe(
            inspect=WRITE_INSPECT,
            name="one new token after 5 cached (2 kv heads, max_len 8)",
            args=buffers(g, 1, 2, 8, 4, 5, 1),
        ),
        Probe(
            inspect=WRITE_INSPECT,
            name="empty cache, a prompt of 3",
            args=buffers(g, 1, 2, 8, 4, 0, 3),
        ),
        Probe(
            inspect=WRITE_INSPECT,
            name="a chunk of 3 after 4 cached, batch 2",
            args=buffers(g, 2, 2, 10, 4, 4, 3),
        ),
        Probe(
            inspect=WRITE_INSPECT,
            name="the last free positions: 6 cached + 2 new = max_len 8",
            args=buffers(g, 1, 1, 8, 2, 6, 2),
        ),
    ]


def write_hidden(g: torch.Generator) -> list[Probe]:
    length = int(torch.randint(1, 20, (1,), generator=g))
    T = int(torch.randint(1, 5, (1,), generator=g))
    return [
        Probe(
            inspect=WRITE_INSPECT,
            name="prefill into an empty cache",
            args=buffers(g, 2, 2, 12, 4, 0, 5),
        ),
        Probe(
            inspect=WRITE_INSPECT,
            name=f"{T} new after {length} cached",
            args=buffers(g, 1, 2, 32, 4, length, T),
        ),
        Probe(
            inspect=WRITE_INSPECT,
            name="one token after 9, MQA (1 kv head)",
            args=buffers(g, 3, 1, 16, 8, 9, 1),
        ),
        Probe(
            inspect=WRITE_INSPECT,
            name="filling the cache to max_len",
            args=buffers(g, 1, 2, 7, 4, 4, 3),
        ),
        Probe(
            inspect=WRITE_INSPECT, name="float64", args=buffers(g, 1, 2, 10, 4, 3, 2, torch.float64)
        ),
        Probe(
            inspect=WRITE_INSPECT,
            name="bfloat16",
            args=buffers(g, 2, 2, 10, 4, 6, 1, torch.bfloat16),
        ),
    ]


# ---------------------------------------------------------------- rope_at

FLOAT64_HINT = (
    "float64 is judged at atol 1e-10, rtol 1e-8, and float32 at positions near 4000 needs more "
    "than float32 angles: form the positions, frequencies and angles in float64 and round "
    "only cos and sin (or the result) to x's dtype"
)

ROPE_MISTAKES = [
    Mistake(
        id="rope-offset-zero",
        hint="RoPE offset 0 for cached tokens: the new tokens were rotated as positions 0 .. T - "
        "1, but behind a cache of `start` tokens they sit at start .. start + T - 1 (the RoPE "
        "offset is the cache length). Only a prompt into an empty cache (start = 0) comes out "
        "right",
        source="""
def rope_at(x, start, theta=10000.0):
    T, d = x.shape[-2], x.shape[-1]
    pos = torch.arange(T, dtype=torch.float64)
    inv_freq = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = pos[:, None] * inv_freq
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
""",
    ),
    Mistake(
        id="rope-offset-off-by-one",
        hint="positions off by one: with `start` tokens cached (positions 0 .. start - 1), the "
        "first new token is position start, not start + 1",
        source="""
def rope_at(x, start, theta=10000.0):
    T, d = x.shape[-2], x.shape[-1]
    pos = torch.arange(start + 1, start + T + 1, dtype=torch.float64)
    inv_freq = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = pos[:, None] * inv_freq
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
""",
    ),
    Mistake(
        id="rope-one-position-for-all",
        hint="every new token was rotated by the angle of position `start`: in a chunk of T "
        "tokens, token i sits at start + i (torch.arange(start, start + T))",
        source="""
def rope_at(x, start, theta=10000.0):
    T, d = x.shape[-2], x.shape[-1]
    pos = torch.full((T,), float(start), dtype=torch.float64)
    inv_freq = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = pos[:, None] * inv_freq
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
""",
    ),
    Mistake(
        id="rope-half-split",
        hint="this is the half-split layout (pairs (i, i + d/2)); the lesson's model pairs "
        "dimensions (2i, 2i + 1): x[..., 0::2] and x[..., 1::2], interleaved back with "
        "torch.stack(..., dim=-1).flatten(-2)",
        source="""
def rope_at(x, start, theta=10000.0):
    T, d = x.shape[-2], x.shape[-1]
    pos = torch.arange(start, start + T, dtype=torch.float64)
    inv_freq = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = pos[:, None] * inv_freq
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
""",
    ),
    Mistake(
        id="rope-float32-angles",
        hint=FLOAT64_HINT,
        source="""
def rope_at(x, start, theta=10000.0):
    T, d = x.shape[-2], x.shape[-1]
    pos = torch.arange(start, start + T, dtype=torch.float32)
    inv_freq = theta ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
    angles = pos[:, None] * inv_freq
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
""",
    ),
]


ROPE = """
def rope_at(x, start, theta=10000.0):
    T, d = x.shape[-2], x.shape[-1]
    pos = torch.arange(start, start + T, dtype=torch.float64)
    inv_freq = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = pos[:, None] * inv_freq
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
"""


def rope_source(*edits: tuple[str, str]) -> str:
    source = ROPE
    for old, new in edits:
        assert old in source, old
        source = source.replace(old, new)
    return source


ROPE_MISTAKES += [
    Mistake(
        id="rope-offset-one-early",
        hint="positions off by one, early: the first new token is position start (start tokens "
        "0 .. start - 1 are cached), not start - 1: torch.arange(start, start + T)",
        source=rope_source(
            ("torch.arange(start, start + T,", "torch.arange(start - 1, start + T - 1,")
        ),
    ),
    Mistake(
        id="rope-rotation-sign",
        hint="rotation the wrong way round: the pair (x1, x2) becomes (x1 cos - x2 sin, x1 sin + "
        "x2 cos), a rotation by +angle (lesson 05); (x1 cos + x2 sin, -x1 sin + x2 cos) rotates "
        "by -angle",
        source=rope_source(
            (
                "x1 * cos - x2 * sin, x1 * sin + x2 * cos",
                "x1 * cos + x2 * sin, -x1 * sin + x2 * cos",
            )
        ),
    ),
    Mistake(
        id="rope-frequencies-per-dim",
        hint="wrong frequencies: pair i (dimensions 2i, 2i + 1) turns at omega_i = theta ** "
        "(-2i / d), i.e. theta ** (-torch.arange(0, d, 2) / d): the exponent runs over even "
        "numbers 0, 2, .. d - 2, divided by d",
        source=rope_source(
            (
                "-torch.arange(0, d, 2, dtype=torch.float64) / d",
                "-torch.arange(0, d // 2, dtype=torch.float64) / d",
            )
        ),
    ),
    Mistake(
        id="rope-float32-frequencies",
        hint=FLOAT64_HINT,
        source=rope_source(
            (
                "inv_freq = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)",
                "inv_freq = (theta ** (-torch.arange(0, d, 2) / d)).float()",
            )
        ),
    ),
    Mistake(
        id="rope-ignores-theta",
        hint="theta ignored: the base is the `theta` argument (10000 by default, 500000 in "
        "Llama 3), not a hard-coded 10000",
        source=rope_source(("inv_freq = theta **", "inv_freq = 10000.0 **")),
    ),
    Mistake(
        id="rope-angles-in-input-dtype",
        hint=FLOAT64_HINT,
        source=rope_source(
            (
                "pos = torch.arange(start, start + T, dtype=torch.float64)",
                "pos = torch.arange(start, start + T).to(x.dtype)",
            ),
            ("torch.arange(0, d, 2, dtype=torch.float64)", "torch.arange(0, d, 2).to(x.dtype)"),
        ),
    ),
]


def rope_visible() -> list[Probe]:
    g = seeded(702)
    return [
        Probe(name="a prompt of 3 into an empty cache (start 0)", args=(randn(g, 1, 2, 3, 8), 0)),
        Probe(name="one new token behind 5 cached (position 5)", args=(randn(g, 1, 2, 1, 8), 5)),
        Probe(name="a chunk of 4 behind 10 cached, batch 2", args=(randn(g, 2, 2, 4, 8), 10)),
        Probe(
            name="float64, one token at position 300",
            args=(randn(g, 1, 1, 1, 8, dtype=torch.float64), 300),
        ),
        Probe(
            name="float32, a chunk of 2 at positions 4000, 4001 (head_dim 64)",
            args=(randn(g, 1, 2, 2, 64), 4000),
        ),
        Probe(
            name="bfloat16, a chunk of 2 at positions 300, 301",
            args=(randn(g, 1, 2, 2, 8, dtype=torch.bfloat16), 300),
        ),
        Probe(
            name="theta 500000 (Llama 3), a chunk of 2 at positions 33, 34",
            args=(randn(g, 1, 2, 2, 8), 33),
            kwargs={"theta": 500000.0},
        ),
    ]


def rope_hidden(g: torch.Generator) -> list[Probe]:
    start = int(torch.randint(1, 2000, (1,), generator=g))
    return [
        Probe(name="prompt, start 0", args=(randn(g, 2, 4, 5, 16), 0)),
        Probe(name=f"chunk of 3 at {start}", args=(randn(g, 1, 2, 3, 8), start)),
        Probe(name="one token at 1", args=(randn(g, 1, 4, 1, 4), 1)),
        Probe(name="float64 chunk at 1000", args=(randn(g, 1, 2, 4, 8, dtype=torch.float64), 1000)),
        Probe(name="float32, one token at 4000", args=(randn(g, 1, 2, 1, 64), 4000)),
        Probe(name="bfloat16 at 7", args=(randn(g, 1, 2, 2, 8, dtype=torch.bfloat16), 7)),
        Probe(
            name="theta 500000 (Llama 3) at 33",
            args=(randn(g, 1, 2, 2, 8), 33),
            kwargs={"theta": 500000.0},
        ),
    ]


# ---------------------------------------------------------------- cached_attention


def attention_case(g, B, H, H_kv, max_len, d, length, T, dtype=torch.float32):
    keys, values, length, k_new, v_new = buffers(g, B, H_kv, max_len, d, length, T, dtype)
    return (randn(g, B, H, T, d, dtype=dtype), k_new, v_new, keys, values, length)


def attention_source(body: str) -> str:
    return (
        """
def cached_attention(q, k_new, v_new, keys, values, length):
    T = q.shape[2]
    k, v = cache_write(keys, values, length, k_new, v_new)
    S = k.shape[2]
    rep = q.shape[1] // k.shape[1]
"""
        + body
    )


MASK_NOT_OFFSET_HINT = (
    "mask not offset: the causal mask was aligned to the top-left corner (query i saw keys "
    "0 .. i), as torch.ones(T, S).tril() and is_causal=True build it when there are more keys "
    "than queries. Query i sits at position length + i and may see keys 0 .. length + i: "
    "attn_mask=torch.ones(T, S, dtype=torch.bool).tril(diagonal=length) (S = length + T)"
)

ATTENTION_MISTAKES = [
    Mistake(
        id="mask-not-offset",
        hint=MASK_NOT_OFFSET_HINT,
        source=attention_source("""
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    mask = torch.ones(T, S, dtype=torch.bool).tril()
    scores = (q @ k.transpose(-2, -1)) / q.shape[-1] ** 0.5
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ v
"""),
    ),
    Mistake(
        id="sdpa-is-causal",
        hint=MASK_NOT_OFFSET_HINT,
        source=attention_source("""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=rep > 1)
"""),
    ),
    Mistake(
        id="no-mask",
        hint="no causal mask: one token at a time needs none (it may see every cached key), but "
        "a chunk of new tokens does: query i of the chunk must not see the chunk's tokens after "
        "it. Mask with torch.ones(T, S, dtype=torch.bool).tril(diagonal=length)",
        source=attention_source("""
    return F.scaled_dot_product_attention(q, k, v, enable_gqa=rep > 1)
"""),
    ),
    Mistake(
        id="repeat-before-caching",
        hint="key/value heads repeated before caching: the buffers hold n_kv_heads heads (that "
        "is GQA's whole memory saving), so write k_new and v_new as they come and share each kv "
        "head among its query heads only inside attention (repeat_interleave on the keys read "
        "back, or enable_gqa=True)",
        source="""
def cached_attention(q, k_new, v_new, keys, values, length):
    T = q.shape[2]
    rep = q.shape[1] // k_new.shape[1]
    k_new, v_new = k_new.repeat_interleave(rep, dim=1), v_new.repeat_interleave(rep, dim=1)
    k, v = cache_write(keys, values, length, k_new, v_new)
    S = k.shape[2]
    mask = torch.ones(T, S, dtype=torch.bool).tril(diagonal=length)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
""",
    ),
    Mistake(
        id="kv-heads-tiled",
        hint="query head h reads key/value head h // (n_heads // n_kv_heads) (consecutive query "
        "heads share one kv head): k.repeat(1, rep, 1, 1) tiles them (0, 1, 0, 1) instead; use "
        "repeat_interleave(rep, dim=1) or enable_gqa=True",
        source=attention_source("""
    k, v = k.repeat(1, rep, 1, 1), v.repeat(1, rep, 1, 1)
    mask = torch.ones(T, S, dtype=torch.bool).tril(diagonal=length)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
"""),
    ),
    Mistake(
        id="attends-new-only",
        hint="attention ran over the new keys only (k_new, v_new): the whole point of the cache "
        "is that the new queries attend to every earlier token too, the keys cache_write returns",
        source="""
def cached_attention(q, k_new, v_new, keys, values, length):
    cache_write(keys, values, length, k_new, v_new)
    rep = q.shape[1] // k_new.shape[1]
    T = q.shape[2]
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    return F.scaled_dot_product_attention(
        q, k_new, v_new, attn_mask=mask, enable_gqa=rep > 1
    )
""",
    ),
]


NOT_STORED_HINT = (
    "the cache buffers were left empty: the new keys and values went into new tensors "
    "(torch.cat onto keys[:, :, :length], or an enlarged copy made by repeat_interleave) "
    "instead of the buffers. Write them with cache_write(keys, values, length, k_new, v_new), "
    "in place, attend over what it returns, and share the heads inside attention "
    "(enable_gqa=True or repeat_interleave on the returned keys)"
)

ATTENTION_MISTAKES += [
    Mistake(
        id="mask-one-too-far",
        hint="the mask lets each new query see one key too many, its right neighbour in the "
        "chunk: tril(diagonal=length + 1). Query i at position length + i may see keys 0 .. "
        "length + i: tril(diagonal=length)",
        source=attention_source("""
    mask = torch.ones(T, S, dtype=torch.bool).tril(diagonal=length + 1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=rep > 1)
"""),
    ),
    Mistake(
        id="mask-one-short",
        hint="the mask hides each query's own key: tril(diagonal=length - 1) stops one short. "
        "Query i at position length + i may see keys 0 .. length + i, itself included: "
        "tril(diagonal=length)",
        source=attention_source("""
    mask = torch.ones(T, S, dtype=torch.bool).tril(diagonal=length - 1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=rep > 1)
"""),
    ),
    Mistake(
        id="no-scale",
        hint="scores not scaled: softmax(q k^T / sqrt(d)), d = head_dim = q.shape[-1] (lesson "
        "02); without 1/sqrt(d) the softmax is too sharp",
        source=attention_source("""
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    mask = torch.ones(T, S, dtype=torch.bool).tril(diagonal=length)
    scores = q @ k.transpose(-2, -1)
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ v
"""),
    ),
    Mistake(
        id="cat-without-writing",
        hint=NOT_STORED_HINT,
        source="""
def cached_attention(q, k_new, v_new, keys, values, length):
    T = q.shape[2]
    k = torch.cat([keys[:, :, :length], k_new], dim=2)
    v = torch.cat([values[:, :, :length], v_new], dim=2)
    mask = torch.ones(T, k.shape[2], dtype=torch.bool).tril(diagonal=length)
    gqa = q.shape[1] > k.shape[1]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
""",
    ),
    Mistake(
        id="writes-into-repeated-copy",
        hint=NOT_STORED_HINT,
        source="""
def cached_attention(q, k_new, v_new, keys, values, length):
    T = q.shape[2]
    rep = q.shape[1] // k_new.shape[1]
    big_k, big_v = keys.repeat_interleave(rep, dim=1), values.repeat_interleave(rep, dim=1)
    k_rep, v_rep = k_new.repeat_interleave(rep, dim=1), v_new.repeat_interleave(rep, dim=1)
    k, v = cache_write(big_k, big_v, length, k_rep, v_rep)
    mask = torch.ones(T, k.shape[2], dtype=torch.bool).tril(diagonal=length)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
""",
    ),
]

ATTENTION_INSPECT = "course.probe_layers:inspect_cached_attention"


def attention_visible() -> list[Probe]:
    g = seeded(703)
    return [
        Probe(
            inspect=ATTENTION_INSPECT,
            name="a prompt of 4 into an empty cache (2 heads, 2 kv heads)",
            args=attention_case(g, 1, 2, 2, 8, 4, 0, 4),
        ),
        Probe(
            inspect=ATTENTION_INSPECT,
            name="one new token after 5 cached (4 query heads share 2 kv heads)",
            args=attention_case(g, 1, 4, 2, 8, 4, 5, 1),
        ),
        Probe(
            inspect=ATTENTION_INSPECT,
            name="a chunk of 3 after 4 cached (4 query heads, 2 kv heads)",
            args=attention_case(g, 1, 4, 2, 10, 4, 4, 3),
        ),
        Probe(
            inspect=ATTENTION_INSPECT,
            name="MQA: 4 query heads, 1 kv head, a chunk of 2 after 3 cached, batch 2",
            args=attention_case(g, 2, 4, 1, 8, 4, 3, 2),
        ),
    ]


def attention_hidden(g: torch.Generator) -> list[Probe]:
    length = int(torch.randint(1, 12, (1,), generator=g))
    return [
        Probe(
            inspect=ATTENTION_INSPECT,
            name="prefill of 5 (MHA)",
            args=attention_case(g, 2, 2, 2, 8, 4, 0, 5),
        ),
        Probe(
            inspect=ATTENTION_INSPECT,
            name=f"one token after {length}",
            args=attention_case(g, 1, 4, 2, 16, 4, length, 1),
        ),
        Probe(
            inspect=ATTENTION_INSPECT,
            name=f"chunk of 4 after {length}",
            args=attention_case(g, 1, 4, 2, 20, 8, length, 4),
        ),
        Probe(
            inspect=ATTENTION_INSPECT,
            name="chunk of 3 after 2, GQA 6/2",
            args=attention_case(g, 2, 6, 2, 9, 4, 2, 3),
        ),
        Probe(
            inspect=ATTENTION_INSPECT,
            name="MQA chunk of 2 after 7",
            args=attention_case(g, 1, 4, 1, 12, 4, 7, 2),
        ),
        Probe(
            inspect=ATTENTION_INSPECT,
            name="float64 chunk of 3 after 4",
            args=attention_case(g, 1, 4, 2, 10, 4, 4, 3, torch.float64),
        ),
        Probe(
            inspect=ATTENTION_INSPECT,
            name="bfloat16 chunk of 2 after 5",
            args=attention_case(g, 1, 2, 2, 10, 8, 5, 2, torch.bfloat16),
        ),
    ]


# ---------------------------------------------------------------- KVCache + decode_greedy

CACHE_CLASS = """
class KVCache:
    def __init__(self, n_layers, batch_size, n_kv_heads, max_len, head_dim, dtype=torch.float32):
        shape = (batch_size, n_kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype) for _ in range(n_layers)]
        self.max_len = max_len
        self.length = 0

    def update(self, layer, k, v):
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache full: {start} cached + {k.shape[2]} new > {self.max_len}")
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, n):
        self.length += n

    def reset(self):
        self.length = 0
"""

DECODE = """
def decode_greedy(model, prompts, n_new):
    P, B, T = prompts.shape
    cache = KVCache(model.n_layers, B, model.n_kv_heads, T + n_new, model.head_dim,
                    dtype=model.dtype)
    results = []
    for prompt in prompts:
        cache.reset()
        logits = model(prompt, cache)[:, -1]
        steps = [logits]
        for _ in range(n_new - 1):
            logits = model(logits.argmax(-1, keepdim=True), cache)[:, -1]
            steps.append(logits)
        results.append(torch.stack(steps, dim=1))
    return torch.stack(results)
"""


def decode_source(cache: str = CACHE_CLASS, decode: str = DECODE, **edits: str) -> str:
    """The solution with `old -> new` replacements (each must apply)."""
    source = cache + decode
    for old, new in edits.values():
        assert old in source, old
        source = source.replace(old, new)
    return source


ADVANCE_HINT = (
    "advance(n) must add exactly n to the position pointer (self.length += n): not 0 (the "
    "pointer never moves, every step overwrites position 0 ..), not 2n, not 1. The error says "
    "where it moved from and to"
)
RESET_HINT = (
    "cache not reset between prompts: the next prompt was fed into a cache still holding the "
    "previous one's positions. Call cache.reset() before each prompt, and make reset() set "
    "the pointer back to 0 (self.length = 0); zeroing the tensors is neither needed nor enough"
)
NO_CACHE_HINT = (
    "the model was called without a cache: model(sequence) recomputes every earlier token at "
    "every step. Make one KVCache, feed the prompt with model(prompt, cache) and then each new "
    "token alone, model(token, cache)"
)

RECOMPUTE = """
def decode_greedy(model, prompts, n_new):
    results = []
    for prompt in prompts:
        seq, steps = prompt, []
        for _ in range(n_new):
            logits = model(seq)[:, -1]
            steps.append(logits)
            seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
        results.append(torch.stack(steps, dim=1))
    return torch.stack(results)
"""

DECODE_MISTAKES = [
    Mistake(
        id="pointer-not-advanced",
        hint=ADVANCE_HINT,
        source=decode_source(e=("        self.length += n\n", "        pass\n")),
    ),
    Mistake(
        id="no-reset-between-prompts",
        hint=RESET_HINT,
        source=decode_source(
            e=("        cache.reset()\n", ""),
            f=("T + n_new, model.head_dim", "P * (T + n_new), model.head_dim"),
        ),
    ),
    Mistake(
        id="reset-keeps-length",
        hint=RESET_HINT,
        source=decode_source(
            e=(
                "    def reset(self):\n        self.length = 0\n",
                "    def reset(self):\n        for t in self.keys + self.values:\n"
                "            t.zero_()\n",
            )
        ),
    ),
    Mistake(
        id="repeat-before-caching",
        hint="key/value heads repeated before caching: the cache must hold n_kv_heads heads per "
        "layer, as the model hands them over (GQA's saving is exactly that); repeat them, if at "
        "all, inside attention. Size the cache with model.n_kv_heads, not model.n_heads",
        source=decode_source(
            e=("T + n_new, model.head_dim", "T + n_new, model.head_dim"),
            f=(
                "cache = KVCache(model.n_layers, B, model.n_kv_heads",
                "cache = KVCache(model.n_layers, B, model.n_heads",
            ),
            g=(
                "        start, end = self.length, self.length + k.shape[2]\n",
                "        rep = self.keys[layer].shape[1] // k.shape[1]\n"
                "        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)\n"
                "        start, end = self.length, self.length + k.shape[2]\n",
            ),
        ),
    ),
    Mistake(
        id="update-returns-buffer",
        hint="update() must return the filled positions 0 .. length + T - 1 only: the whole "
        "buffer adds max_len - length zero keys that attention takes for real tokens (and puts "
        "the new queries at the wrong positions of the mask)",
        source=decode_source(
            e=(
                "        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]\n",
                "        return self.keys[layer], self.values[layer]\n",
            )
        ),
    ),
    Mistake(
        id="advance-in-update",
        hint="advance once per forward pass, after every layer has written (the model calls "
        "advance(T)): moving the pointer inside update() makes layer 1 write its keys T "
        "positions after layer 0's",
        source=decode_source(
            e=(
                "        self.keys[layer][:, :, start:end] = k\n",
                "        self.length = end\n        self.keys[layer][:, :, start:end] = k\n",
            ),
            f=("T + n_new, model.head_dim", "4 * (T + n_new), model.head_dim"),
        ),
    ),
    Mistake(
        id="prompt-logits-skipped",
        hint="the first new token is chosen from the prompt's last logits (the prefill's): "
        "return n_new steps, that one included, then one per token fed back",
        source=decode_source(
            e=("        steps = [logits]\n", "        steps = []\n"),
            f=("range(n_new - 1)", "range(n_new)"),
            g=("T + n_new, model.head_dim", "T + n_new + 1, model.head_dim"),
        ),
    ),
]


DECODE_MISTAKES += [
    Mistake(
        id="no-cache-recompute",
        hint=NO_CACHE_HINT,
        source=CACHE_CLASS + RECOMPUTE,
    ),
    Mistake(
        id="uses-growing-cache",
        hint="decode_greedy must use your KVCache: model.new_cache(...) is the model's own "
        "GrowingCache (torch.cat at every step), which this exercise measures yours against",
        source=decode_source(
            e=(
                "    cache = KVCache(model.n_layers, B, model.n_kv_heads, T + n_new, "
                "model.head_dim,\n"
                "                    dtype=model.dtype)\n",
                "    cache = model.new_cache(B, T + n_new)\n",
            )
        ),
    ),
    Mistake(
        id="cache-per-prompt",
        hint="one cache for all prompts: make it once, before the loop, and reset() it before "
        "each prompt; a new KVCache per prompt allocates the whole memory again every time",
        source=decode_source(
            e=(
                "        cache.reset()\n",
                "        cache = KVCache(model.n_layers, B, model.n_kv_heads, T + n_new, "
                "model.head_dim, dtype=model.dtype)\n",
            )
        ),
    ),
    Mistake(
        id="reset-reallocates",
        hint="reset() must keep the memory: set the pointer back to 0 (self.length = 0) and "
        "nothing else; allocating new tensors there throws away what the cache preallocated",
        source=decode_source(
            e=(
                "    def reset(self):\n        self.length = 0\n",
                "    def reset(self):\n        self.length = 0\n"
                "        self.keys = [torch.zeros_like(t) for t in self.keys]\n"
                "        self.values = [torch.zeros_like(t) for t in self.values]\n",
            )
        ),
    ),
    Mistake(
        id="cache-dtype-ignored",
        hint="the buffers must have the cache's dtype: torch.zeros(shape, dtype=dtype) (float32 "
        "by default), and decode_greedy passes dtype=model.dtype; a float32 cache rounds a "
        "float64 model's keys, and a bfloat16 model's cache would take twice the memory",
        source=decode_source(
            e=("torch.zeros(shape, dtype=dtype)", "torch.zeros(shape)"),
        ),
    ),
    Mistake(
        id="update-never-refuses",
        hint="update() must raise ValueError past max_len (check length + T > max_len before "
        "writing): a cache that silently drops or truncates tokens gives wrong logits with no "
        "error",
        source=decode_source(
            e=(
                '        if end > self.max_len:\n            raise ValueError(f"KV cache full: '
                '{start} cached + {k.shape[2]} new > {self.max_len}")\n',
                "",
            ),
            f=(
                "self.keys[layer][:, :, start:end] = k",
                "self.keys[layer][:, :, start:end] = k[:, :, :self.max_len - start]",
            ),
            g=(
                "self.values[layer][:, :, start:end] = v",
                "self.values[layer][:, :, start:end] = v[:, :, :self.max_len - start]",
            ),
        ),
    ),
    Mistake(
        id="cache-without-n-new",
        hint="the cache is too short: it holds the prompt and every new token fed back, so size "
        "it T + n_new positions (max_len), not T",
        source=decode_source(e=("T + n_new, model.head_dim", "T, model.head_dim")),
    ),
    Mistake(
        id="feeds-whole-sequence",
        hint="after the prompt, feed only the new token, model(token, cache) with token (B, 1): "
        "the cache already holds every earlier position, and feeding them again writes them "
        "a second time behind themselves",
        source=decode_source(
            e=(
                "        steps = [logits]\n",
                "        steps, seq = [logits], prompt\n",
            ),
            f=(
                "            logits = model(logits.argmax(-1, keepdim=True), cache)[:, -1]\n",
                "            seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)\n"
                "            logits = model(seq, cache)[:, -1]\n",
            ),
        ),
    ),
    Mistake(
        id="token-shape-b",
        hint="the token fed back must have shape (B, 1), batch by one new position: "
        "logits.argmax(-1, keepdim=True); argmax(-1) alone gives (B,)",
        source=decode_source(
            e=("logits.argmax(-1, keepdim=True)", "logits.argmax(-1)"),
        ),
    ),
    Mistake(
        id="advance-twice-n",
        hint=ADVANCE_HINT,
        source=decode_source(e=("        self.length += n\n", "        self.length += 2 * n\n")),
    ),
    Mistake(
        id="advance-by-one",
        hint=ADVANCE_HINT,
        source=decode_source(e=("        self.length += n\n", "        self.length += 1\n")),
    ),
    Mistake(
        id="update-refuses-exact-fill",
        hint="update() may fill the cache exactly: length + T == max_len fits. Raise ValueError "
        "only when length + T > max_len",
        source=decode_source(
            e=("        if end > self.max_len:\n", "        if end >= self.max_len:\n")
        ),
    ),
    Mistake(
        id="update-writes-at-zero",
        hint="update() must write at the position pointer, positions length .. length + T - "
        "1 (self.keys[layer][:, :, self.length:self.length + T] = k): writing at 0 overwrites the "
        "prompt's first keys",
        source=decode_source(
            e=(
                "        self.keys[layer][:, :, start:end] = k\n",
                "        self.keys[layer][:, :, :end - start] = k\n",
            ),
            f=(
                "        self.values[layer][:, :, start:end] = v\n",
                "        self.values[layer][:, :, :end - start] = v\n",
            ),
        ),
    ),
    Mistake(
        id="one-buffer-for-all-layers",
        hint="every layer needs its own keys and values tensor: [torch.zeros(shape)] * n_layers "
        "is one tensor n_layers times, so layer 1 overwrites layer 0's keys. Use a list "
        "comprehension, [torch.zeros(shape, dtype=dtype) for _ in range(n_layers)]",
        source=decode_source(
            e=(
                "        self.keys = [torch.zeros(shape, dtype=dtype) for _ in range(n_layers)]\n",
                "        self.keys = [torch.zeros(shape, dtype=dtype)] * n_layers\n",
            ),
            f=(
                "        self.values = [torch.zeros(shape, dtype=dtype) "
                "for _ in range(n_layers)]\n",
                "        self.values = [torch.zeros(shape, dtype=dtype)] * n_layers\n",
            ),
        ),
    ),
    Mistake(
        id="decoder-advances-too",
        hint="only the model moves the pointer (it calls cache.advance(T) at the end of every "
        "call): decode_greedy must not call advance itself",
        source=decode_source(
            e=(
                "            logits = model(logits.argmax(-1, keepdim=True), cache)[:, -1]\n",
                "            logits = model(logits.argmax(-1, keepdim=True), cache)[:, -1]\n"
                "            cache.advance(1)\n",
            ),
            f=("T + n_new, model.head_dim", "2 * (T + n_new), model.head_dim"),
        ),
    ),
]


def prompts(g, P, B, T, vocab=24):
    return torch.randint(vocab, (P, B, T), generator=g)


def decode_visible() -> list[Probe]:
    g = seeded(704)
    return [
        Probe(
            name="2 prompts of 3 tokens, 4 new tokens each (GQA: 4 heads, 2 kv heads)",
            args=(watching("toy_lm"), prompts(g, 2, 1, 3), 4),
        ),
        Probe(
            name="MQA model (1 kv head), batch 2, 1 prompt of 4, 3 new",
            args=(watching("toy_lm_mqa"), prompts(g, 1, 2, 4), 3),
        ),
        Probe(
            name="3-layer MHA model, 3 prompts of 2 tokens, 3 new",
            args=(watching("toy_lm_mha"), prompts(g, 3, 1, 2), 3),
        ),
        Probe(
            name="float64 model, 2 prompts of 3, 4 new",
            args=(watching("toy_lm_float64"), prompts(g, 2, 1, 3), 4),
        ),
        Probe(
            name="bfloat16 model, 1 prompt of 3, 3 new",
            args=(watching("toy_lm_bfloat16"), prompts(g, 1, 1, 3), 3),
        ),
    ]


def decode_hidden(g: torch.Generator) -> list[Probe]:
    n = int(torch.randint(6, 14, (1,), generator=g))
    return [
        Probe(name=f"GQA, 2 prompts, {n} new", args=(watching("toy_lm"), prompts(g, 2, 2, 3), n)),
        Probe(name="one-token prompts", args=(watching("toy_lm"), prompts(g, 3, 1, 1), 5)),
        Probe(name="MQA, 2 prompts of 5", args=(watching("toy_lm_mqa"), prompts(g, 2, 1, 5), 6)),
        Probe(name="MHA, 3 layers", args=(watching("toy_lm_mha"), prompts(g, 2, 2, 4), 4)),
        Probe(name="float64 model", args=(watching("toy_lm_float64"), prompts(g, 2, 1, 3), 8)),
        Probe(name="bfloat16 model", args=(watching("toy_lm_bfloat16"), prompts(g, 2, 2, 3), 5)),
        Probe(name="one new token", args=(watching("toy_lm"), prompts(g, 2, 1, 4), 1)),
    ]


# ---------------------------------------------------------------- chunked_prefill

PREFILL = """
def chunked_prefill(model, idx, chunk_size):
    B, T = idx.shape
    cache = model.new_cache(B, T)
    pieces = []
    for start in range(0, T, chunk_size):
        pieces.append(model(idx[:, start:start + chunk_size], cache))
    return torch.cat(pieces, dim=1)
"""


def prefill_source(old: str, new: str) -> str:
    assert old in PREFILL, old
    return PREFILL.replace(old, new)


PREFILL_NO_CACHE_HINT = (
    "the model was called without a cache: each call then starts from position 0 with no "
    "context (or recomputes the whole prompt). Make one cache, model.new_cache(B, T), and "
    "feed every chunk into it: model(chunk, cache)"
)

PREFILL_MISTAKES = [
    Mistake(
        id="fresh-cache-per-chunk",
        hint="each chunk got a new, empty cache: it then sees none of the chunks before it, and "
        "its tokens are placed at positions 0 .. chunk_size - 1 again. Make one cache before "
        "the loop and feed every chunk into it",
        source=prefill_source(
            "        pieces.append(model(idx[:, start:start + chunk_size], cache))",
            "        pieces.append(model(idx[:, start:start + chunk_size], model.new_cache(B, T)))",
        ),
    ),
    Mistake(
        id="chunks-without-cache",
        hint=PREFILL_NO_CACHE_HINT,
        source=prefill_source(
            "model(idx[:, start:start + chunk_size], cache)",
            "model(idx[:, start:start + chunk_size])",
        ),
    ),
    Mistake(
        id="drops-last-partial-chunk",
        hint="the last chunk is shorter when chunk_size does not divide T, and it was dropped: "
        "range(0, T, chunk_size) with idx[:, start:start + chunk_size] covers every token",
        source=prefill_source(
            "range(0, T, chunk_size)", "range(0, T - chunk_size + 1, chunk_size)"
        ),
    ),
    Mistake(
        id="last-chunk-only",
        hint="return the logits of every prompt token, (batch, T, vocab): concatenate every "
        "chunk's logits along the sequence (torch.cat(pieces, dim=1)), not only the last chunk's",
        source=prefill_source("    return torch.cat(pieces, dim=1)", "    return pieces[-1]"),
    ),
]


PREFILL_MISTAKES += [
    Mistake(
        id="ignores-chunk-size",
        hint=PREFILL_NO_CACHE_HINT,
        source="""
def chunked_prefill(model, idx, chunk_size):
    return model(idx)
""",
    ),
    Mistake(
        id="one-pass-with-cache",
        hint="chunk_size ignored: the whole prompt went through the model in one call. Feed it "
        "chunk_size tokens at a time, idx[:, start:start + chunk_size] for start in range(0, "
        "T, chunk_size), each into the same cache",
        source="""
def chunked_prefill(model, idx, chunk_size):
    B, T = idx.shape
    return model(idx, model.new_cache(B, T))
""",
    ),
    Mistake(
        id="recompute-prefixes",
        hint=PREFILL_NO_CACHE_HINT,
        source="""
def chunked_prefill(model, idx, chunk_size):
    T = idx.shape[1]
    pieces = []
    for start in range(0, T, chunk_size):
        end = min(start + chunk_size, T)
        pieces.append(model(idx[:, :end])[:, start:end])
    return torch.cat(pieces, dim=1)
""",
    ),
    Mistake(
        id="one-token-chunks",
        hint="chunk_size ignored: the prompt was fed one token at a time. Every chunk but the "
        "last holds chunk_size tokens (idx.split(chunk_size, dim=1))",
        source=prefill_source("range(0, T, chunk_size)", "range(0, T, 1)").replace(
            "idx[:, start:start + chunk_size]", "idx[:, start:start + 1]"
        ),
    ),
]


def tokens(g, B, T, vocab=24):
    return torch.randint(vocab, (B, T), generator=g)


def prefill_visible() -> list[Probe]:
    g = seeded(705)
    return [
        Probe(
            name="7 tokens in chunks of 3 (3, 3, 1)",
            args=(chunk_watching("toy_lm", 3), tokens(g, 1, 7), 3),
        ),
        Probe(
            name="7 tokens in chunks of 1", args=(chunk_watching("toy_lm", 1), tokens(g, 1, 7), 1)
        ),
        Probe(
            name="7 tokens in one chunk of 7",
            args=(chunk_watching("toy_lm", 7), tokens(g, 1, 7), 7),
        ),
        Probe(
            name="MQA model, batch 2, 8 tokens in chunks of 3",
            args=(chunk_watching("toy_lm_mqa", 3), tokens(g, 2, 8), 3),
        ),
    ]


def prefill_hidden(g: torch.Generator) -> list[Probe]:
    T = int(torch.randint(8, 16, (1,), generator=g))
    return [
        Probe(
            name=f"{T} tokens, chunks of 1", args=(chunk_watching("toy_lm", 1), tokens(g, 2, T), 1)
        ),
        Probe(
            name=f"{T} tokens, chunks of 3", args=(chunk_watching("toy_lm", 3), tokens(g, 1, T), 3)
        ),
        Probe(
            name=f"{T} tokens, chunks of 7",
            args=(chunk_watching("toy_lm_mha", 7), tokens(g, 2, T), 7),
        ),
        Probe(
            name="chunk longer than the prompt",
            args=(chunk_watching("toy_lm", 8), tokens(g, 1, 5), 8),
        ),
        Probe(
            name="float64, chunks of 4",
            args=(chunk_watching("toy_lm_float64", 4), tokens(g, 1, 10), 4),
        ),
        Probe(name="MQA, chunks of 2", args=(chunk_watching("toy_lm_mqa", 2), tokens(g, 2, 9), 2)),
    ]


# ---------------------------------------------------------------- kv_cache_bytes

BYTES = """
def kv_cache_bytes(config, seq_len, batch_size=1, bytes_per_element=2):
    c = config
    return 2 * c["n_layers"] * batch_size * c["n_kv_heads"] * seq_len * c["head_dim"] \\
        * bytes_per_element
"""


def bytes_source(old: str, new: str) -> str:
    assert old in BYTES, old
    return BYTES.replace(old, new)


BYTES_MISTAKES = [
    Mistake(
        id="bytes-float",
        hint="return an int: a number of bytes is a whole number, and float(...) (or a / "
        "anywhere) makes a float, which is inexact past 2**53. Multiply integers only",
        source=bytes_source("    return 2 * ", "    return 2.0 * "),
    ),
    Mistake(
        id="bytes-ignores-bytes-per-element",
        hint="bytes_per_element ignored: an element takes bytes_per_element bytes (1 for int8, "
        "2 for float16/bfloat16, 4 for float32), not always 2",
        source=bytes_source("* bytes_per_element", "* 2"),
    ),
    Mistake(
        id="bytes-seq-len-plus-one",
        hint="the cache holds seq_len positions, not seq_len + 1: a cache sized for seq_len "
        "tokens stores exactly seq_len keys and values per layer",
        source=bytes_source("* seq_len", "* (seq_len + 1)"),
    ),
    Mistake(
        id="bytes-in-kib",
        hint="return bytes, not KiB: no division by 1024 (the notebook divides when it prints)",
        source=bytes_source("* bytes_per_element\n", "* bytes_per_element / 1024\n"),
    ),
    Mistake(
        id="bytes-divided-by-8",
        hint="bytes_per_element is already in bytes: no division by 8 (nothing here is in bits)",
        source=bytes_source("* bytes_per_element\n", "* bytes_per_element / 8\n"),
    ),
    Mistake(
        id="bytes-numpy-int",
        hint="return a Python int: numpy.prod (or np.int64 arithmetic) gives a numpy.int64, "
        "which also overflows silently past 2**63; int(...) it, or multiply Python ints",
        source="""
def kv_cache_bytes(config, seq_len, batch_size=1, bytes_per_element=2):
    import numpy as np
    c = config
    n = [c["n_layers"], batch_size, c["n_kv_heads"], seq_len, c["head_dim"], bytes_per_element]
    return np.prod([2] + n)
""",
    ),
    Mistake(
        id="bytes-keys-only",
        hint="the cache holds keys *and* values: a factor 2 in front (2 * n_layers * batch * "
        "n_kv_heads * seq_len * head_dim * bytes_per_element)",
        source=bytes_source("return 2 * ", "return "),
    ),
    Mistake(
        id="bytes-n-heads",
        hint="the cache stores key/value heads: n_kv_heads of them, not n_heads. With GQA "
        "(Llama-2-70B: 64 query heads, 8 kv heads) or MQA (1 kv head) that is the whole saving",
        source=bytes_source('c["n_kv_heads"]', 'c["n_heads"]'),
    ),
    Mistake(
        id="bytes-one-layer",
        hint="every layer keeps its own keys and values: multiply by n_layers",
        source=bytes_source(' * c["n_layers"]', ""),
    ),
    Mistake(
        id="bytes-in-bits",
        hint="bytes_per_element is already in bytes (2 for float16/bfloat16, 4 for float32): "
        "no factor 8",
        source=bytes_source("* bytes_per_element", "* bytes_per_element * 8"),
    ),
    Mistake(
        id="bytes-no-batch",
        hint="each sequence of the batch has its own cache: multiply by batch_size",
        source=bytes_source(" * batch_size", ""),
    ),
]

GPT2 = {"n_layers": 12, "n_heads": 12, "n_kv_heads": 12, "head_dim": 64, "d_model": 768}
LLAMA2_7B = {"n_layers": 32, "n_heads": 32, "n_kv_heads": 32, "head_dim": 128, "d_model": 4096}
LLAMA2_70B = {"n_layers": 80, "n_heads": 64, "n_kv_heads": 8, "head_dim": 128, "d_model": 8192}
LLAMA3_8B = {"n_layers": 32, "n_heads": 32, "n_kv_heads": 8, "head_dim": 128, "d_model": 4096}
FALCON_7B = {"n_layers": 32, "n_heads": 71, "n_kv_heads": 1, "head_dim": 64, "d_model": 4544}


BYTES_INSPECT = "course.probe_layers:inspect_int_bytes"


def bytes_visible() -> list[Probe]:
    toy = {"n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "head_dim": 4, "d_model": 16}
    return [
        Probe(
            inspect=BYTES_INSPECT,
            name="Llama-2-7B, 3 tokens, an int8 cache (1 byte per element)",
            args=(LLAMA2_7B, 3),
            kwargs={"bytes_per_element": 1},
        ),
        Probe(
            inspect=BYTES_INSPECT,
            name="GPT-2 small, one token, float32",
            args=(GPT2, 1),
            kwargs={"bytes_per_element": 4},
        ),
        Probe(
            inspect=BYTES_INSPECT, name="Llama-2-7B, 4096 tokens, float16", args=(LLAMA2_7B, 4096)
        ),
        Probe(
            inspect=BYTES_INSPECT,
            name="Llama-2-70B (GQA-8), one token, float16",
            args=(LLAMA2_70B, 1),
        ),
        Probe(
            inspect=BYTES_INSPECT, name="a toy GQA config, 10 tokens, batch 3", args=(toy, 10, 3)
        ),
    ]


def bytes_hidden(g: torch.Generator) -> list[Probe]:
    n_kv = int(torch.randint(1, 5, (1,), generator=g))
    rnd = {
        "n_layers": 3,
        "n_heads": 4 * n_kv,
        "n_kv_heads": n_kv,
        "head_dim": 8,
        "d_model": 32 * n_kv,
    }
    return [
        Probe(inspect=BYTES_INSPECT, name="Llama-3-8B, 8192 tokens", args=(LLAMA3_8B, 8192)),
        Probe(
            inspect=BYTES_INSPECT,
            name="Falcon-7B (MQA), 2048 tokens, batch 4",
            args=(FALCON_7B, 2048, 4),
        ),
        Probe(
            inspect=BYTES_INSPECT,
            name="GPT-2 small, 1024 tokens, batch 8, float32",
            args=(GPT2, 1024, 8, 4),
        ),
        Probe(
            inspect=BYTES_INSPECT,
            name="Llama-2-70B, 4096 tokens, batch 2",
            args=(LLAMA2_70B, 4096, 2),
        ),
        Probe(
            inspect=BYTES_INSPECT,
            name=f"a random GQA config ({n_kv} kv heads)",
            args=(rnd, 17, 5, 2),
        ),
    ]


# ---------------------------------------------------------------- the lesson

LESSON = Lesson(
    folder="07-kv-cache",
    notebook="kv_cache",
    context_cells=("setup",),
    exercises=[
        Exercise(
            id="cache-write",
            title="write new keys and values at the position pointer",
            function="cache_write",
            signature="cache_write(keys, values: (B, n_kv_heads, max_len, d), length: int, "
            "k_new, v_new: (B, n_kv_heads, T, d)) -> (keys, values) of positions 0 .. length+T-1",
            reference=K.cache_write,
            answer_cell="cache_write",
            test_cell="test-cache-write",
            points=2,
            visible=write_visible,
            hidden=write_hidden,
            mistakes=WRITE_MISTAKES,
            mutates=(0, 1),
            forbidden=WRITE_FORBIDDEN,
            forbidden_hint=WRITE_FORBIDDEN_HINT,
        ),
        Exercise(
            id="rope-at",
            title="RoPE at the cache's offset",
            function="rope_at",
            signature="rope_at(x: (..., T, head_dim), start: int, theta=10000.0) -> x's shape "
            "and dtype, rotated as positions start .. start+T-1",
            reference=K.rope_at,
            answer_cell="rope_at",
            test_cell="test-rope-at",
            points=2,
            visible=rope_visible,
            hidden=rope_hidden,
            mistakes=ROPE_MISTAKES,
        ),
        Exercise(
            id="cached-attention",
            title="a block of new queries attends over the cache",
            function="cached_attention",
            signature="cached_attention(q: (B, n_heads, T, d), k_new, v_new: (B, n_kv_heads, "
            "T, d), keys, values: (B, n_kv_heads, max_len, d), length: int) -> (B, n_heads, T, d)",
            reference=K.cached_attention,
            answer_cell="cached_attention",
            test_cell="test-cached-attention",
            points=3,
            visible=attention_visible,
            hidden=attention_hidden,
            mistakes=ATTENTION_MISTAKES,
            mutates=(3, 4),
            stand_ins={"cache_write": "course.stand_ins:cache_write"},
            uses=("cache_write",),
        ),
        Exercise(
            id="decode-greedy",
            title="the cache object, and greedy decoding at the level of logits",
            function="decode_greedy",
            signature="decode_greedy(model, prompts: int64 (P, B, T), n_new: int) -> logits "
            "(P, B, n_new, vocab), using your KVCache",
            reference=K.decode_greedy,
            answer_cell="kv_cache_class",
            test_cell="test-decode-greedy",
            points=3,
            visible=decode_visible,
            hidden=decode_hidden,
            mistakes=DECODE_MISTAKES,
            stand_ins={"cache_write": "course.stand_ins:cache_write"},
            uses=("cache_write",),
        ),
        Exercise(
            id="chunked-prefill",
            title="chunked prefill equals one full pass",
            function="chunked_prefill",
            signature="chunked_prefill(model, idx: int64 (B, T), chunk_size: int) -> logits "
            "(B, T, vocab)",
            reference=K.prefill_in_chunks,
            answer_cell="chunked_prefill",
            test_cell="test-chunked-prefill",
            points=2,
            visible=prefill_visible,
            hidden=prefill_hidden,
            mistakes=PREFILL_MISTAKES,
        ),
        Exercise(
            id="kv-cache-bytes",
            title="the cache's size for real configurations",
            function="kv_cache_bytes",
            signature="kv_cache_bytes(config: dict, seq_len, batch_size=1, bytes_per_element=2) "
            "-> int",
            reference=K.kv_cache_bytes_for,
            answer_cell="kv_cache_bytes",
            test_cell="test-kv-cache-bytes",
            points=2,
            visible=bytes_visible,
            hidden=bytes_hidden,
            mistakes=BYTES_MISTAKES,
        ),
    ],
)
