"""Hidden tests of lesson 01 (softmax), as data: inputs, reference, tolerances, forbidden ops."""

from __future__ import annotations

import torch

from autograder.exercises.inputs import randn
from autograder.judge import Exercise, Probe
from solutions.kernels import softmax as K

LESSON = "01-softmax"

# The ATen operators behind torch.softmax, F.softmax, Tensor.softmax, torch.log_softmax,
# torch.logsumexp and F.cross_entropy, whatever Python name the learner reached them by.
SOFTMAX_OPS = frozenset(
    {"_softmax", "softmax", "_safe_softmax", "_log_softmax", "log_softmax", "logsumexp"}
)
LOSS_OPS = SOFTMAX_OPS | {"nll_loss", "nll_loss_nd", "nll_loss2d", "cross_entropy_loss"}
HINT = "Build it from torch.exp, torch.log, max and sum (and your own functions above)."

F16 = dict(atol=2e-3, rtol=1e-2)
F32 = dict(atol=1e-6, rtol=1e-4)
F64 = dict(atol=1e-10, rtol=1e-8)


def _with_neg_inf(x: torch.Tensor, g: torch.Generator, fraction: float = 0.3) -> torch.Tensor:
    """Some -inf entries, keeping the first entry of every row finite."""
    drop = torch.rand(x.shape, generator=g) < fraction
    drop[..., 0] = False
    return x.masked_fill(drop, float("-inf"))


def softmax_basic_probes(g: torch.Generator) -> list[Probe]:
    return [
        Probe("random logits, float32, shape (4, 10)", (randn(g, 4, 10),), **F32),
        Probe("a single row, shape (7,)", (randn(g, 7),), **F32),
        Probe(
            "float64, shape (3, 5, 6), dim=1",
            (randn(g, 3, 5, 6, dtype=torch.float64),),
            {"dim": 1},
            **F64,
        ),
        Probe("dim=0 (columns), shape (6, 3)", (randn(g, 6, 3),), {"dim": 0}, **F32),
        Probe(
            "gradient matches autograd of the reference",
            (randn(g, 3, 8, dtype=torch.float64),),
            call="grad",
            grad_weight_seed=1,
            **F64,
        ),
    ]


def softmax_stable_probes(g: torch.Generator) -> list[Probe]:
    return [
        Probe("huge logits (around +1e4), float32", (randn(g, 4, 9, scale=50) + 1e4,), **F32),
        Probe(
            "very negative logits (around -1e4), float32", (randn(g, 3, 6, scale=50) - 1e4,), **F32
        ),
        Probe(
            "logits spread over [-1e4, 1e4]", (randn(g, 5, 7, scale=5e3).clamp(-1e4, 1e4),), **F32
        ),
        Probe("rows containing -inf", (_with_neg_inf(randn(g, 4, 8, scale=3), g),), **F32),
        Probe(
            "float16 logits around 100 (exp overflows float16)",
            ((randn(g, 4, 12, scale=5) + 100).half(),),
            **F16,
        ),
        Probe("huge logits along dim=0", (randn(g, 6, 4, scale=1e3) + 5e3,), {"dim": 0}, **F32),
    ]


def logsumexp_probes(g: torch.Generator) -> list[Probe]:
    all_neg_inf = randn(g, 3, 5)
    all_neg_inf[1] = float("-inf")
    return [
        Probe("random logits, shape (4, 10)", (randn(g, 4, 10),), **F32),
        Probe("huge logits (around +1e4)", (randn(g, 4, 6, scale=10) + 1e4,), **F32),
        Probe("very negative logits (around -1e4)", (randn(g, 4, 6, scale=10) - 1e4,), **F32),
        Probe("rows containing -inf", (_with_neg_inf(randn(g, 5, 6), g),), **F32),
        Probe("a row that is entirely -inf gives -inf", (all_neg_inf,), **F32),
        Probe(
            "dim=0, float64", (randn(g, 5, 3, scale=100, dtype=torch.float64),), {"dim": 0}, **F64
        ),
        Probe(
            "gradient matches autograd",
            (randn(g, 3, 6, dtype=torch.float64),),
            call="grad",
            grad_weight_seed=2,
            **F64,
        ),
    ]


def log_softmax_probes(g: torch.Generator) -> list[Probe]:
    far = torch.tensor([[0.0, -1e4, 3.0], [1e4, 0.0, -1e4]])
    return [
        Probe("random logits, shape (4, 10)", (randn(g, 4, 10),), **F32),
        Probe("probabilities that underflow to 0 still get finite logs", (far,), **F32),
        Probe("huge logits (around +1e4)", (randn(g, 3, 7, scale=20) + 1e4,), atol=5e-3, rtol=1e-4),
        Probe("rows containing -inf keep -inf there", (_with_neg_inf(randn(g, 4, 6), g),), **F32),
        Probe("float16 logits around 100", ((randn(g, 3, 9, scale=4) + 100).half(),), **F16),
        Probe(
            "dim=1 of a 3-D tensor, float64",
            (randn(g, 2, 5, 4, dtype=torch.float64),),
            {"dim": 1},
            **F64,
        ),
        Probe(
            "gradient matches autograd",
            (randn(g, 3, 6, dtype=torch.float64),),
            call="grad",
            grad_weight_seed=3,
            **F64,
        ),
    ]


def _targets(g: torch.Generator, shape: tuple, classes: int) -> torch.Tensor:
    return torch.randint(0, classes, shape, generator=g)


def cross_entropy_probes(g: torch.Generator) -> list[Probe]:
    t_ignored = _targets(g, (2, 6), 11)
    t_ignored[0, :3] = -100
    t_custom = _targets(g, (8,), 5)
    t_custom[::3] = 0
    return [
        Probe("logits (N, C) = (8, 5)", (randn(g, 8, 5), _targets(g, (8,), 5)), **F32),
        Probe(
            "language-model layout (B, T, V) = (3, 4, 17)",
            (randn(g, 3, 4, 17), _targets(g, (3, 4), 17)),
            **F32,
        ),
        Probe(
            "huge logits (scale 1e4)",
            (randn(g, 6, 4, scale=1e4), _targets(g, (6,), 4)),
            atol=1e-3,
            rtol=1e-4,
        ),
        Probe(
            "ignore_index=-100 positions count neither in the sum nor the mean",
            (randn(g, 2, 6, 11), t_ignored),
            **F32,
        ),
        Probe("a custom ignore_index", (randn(g, 8, 5), t_custom), {"ignore_index": 0}, **F32),
        Probe(
            "gradient matches autograd",
            (randn(g, 5, 7, dtype=torch.float64), _targets(g, (5,), 7)),
            call="grad",
            grad_weight_seed=4,
            **F64,
        ),
    ]


def entropy_probes(g: torch.Generator) -> list[Probe]:
    one_hot = torch.zeros(3, 5)
    one_hot[torch.arange(3), torch.tensor([0, 4, 2])] = 1.0
    with_zeros = torch.softmax(_with_neg_inf(randn(g, 4, 6), g), dim=-1)
    return [
        Probe("random distributions, shape (4, 10)", (torch.softmax(randn(g, 4, 10), -1),), **F32),
        Probe("one-hot rows have entropy exactly 0 (0 log 0 = 0)", (one_hot,), **F32),
        Probe("distributions with some zero probabilities", (with_zeros,), **F32),
        Probe("uniform rows have entropy log n", (torch.full((2, 8), 1 / 8),), **F32),
        Probe(
            "dim=0, float64",
            (torch.softmax(randn(g, 6, 3, dtype=torch.float64), 0),),
            {"dim": 0},
            **F64,
        ),
    ]


def jacobian_probes(g: torch.Generator) -> list[Probe]:
    p = lambda *shape: torch.softmax(randn(g, *shape, dtype=torch.float64), -1)  # noqa: E731
    return [
        Probe("n = 3", (p(3),), **F64),
        Probe("n = 1 (the Jacobian is [[0]])", (p(1),), **F64),
        Probe("a batch of rows, shape (4, 6)", (p(4, 6),), **F64),
        Probe("two batch dimensions, shape (2, 3, 5)", (p(2, 3, 5),), **F64),
        Probe("float32 keeps float32", (p(2, 4).float(),), **F32),
    ]


def _state(*shape: int, m: float | None = None, s: float = 0.0):
    m_t = torch.full((*shape, 1), float("-inf") if m is None else m)
    return m_t, torch.full((*shape, 1), s)


def online_update_probes(g: torch.Generator) -> list[Probe]:
    m_run, s_run = randn(g, 4, 1, scale=3), torch.rand(4, 1, generator=g) * 5 + 1
    return [
        Probe("first block (m = -inf, s = 0)", (*_state(3), randn(g, 3, 4)), **F32),
        Probe(
            "a block whose max is larger: the old sum is rescaled",
            (*_state(2, m=0.0, s=2.5), randn(g, 2, 5) + 3),
            **F32,
        ),
        Probe(
            "a block whose max is smaller", (*_state(2, m=5.0, s=1.5), randn(g, 2, 3) - 2), **F32
        ),
        Probe("running state of several rows", (m_run, s_run, randn(g, 4, 6, scale=3)), **F32),
        Probe(
            "a block that is all -inf changes nothing",
            (*_state(2, m=1.0, s=3.0), torch.full((2, 4), float("-inf"))),
            **F32,
        ),
        Probe("huge logits (around 1e4)", (*_state(2, m=1e4, s=1.0), randn(g, 2, 4) + 1e4), **F32),
    ]


def online_softmax_probes(g: torch.Generator) -> list[Probe]:
    return [
        Probe("length 10 in blocks of 3 (the last block is short)", (randn(g, 4, 10), 3), **F32),
        Probe("blocks of 1", (randn(g, 2, 7), 1), **F32),
        Probe("one block larger than the row", (randn(g, 3, 5), 64), **F32),
        Probe("length 12 in blocks of 4", (randn(g, 2, 3, 12), 4), **F32),
        Probe(
            "huge logits (around 1e4) in blocks of 4", (randn(g, 3, 11, scale=30) + 1e4, 4), **F32
        ),
        Probe("rows containing -inf, blocks of 2", (_with_neg_inf(randn(g, 4, 9), g), 2), **F32),
        Probe(
            "the largest logit in the last block",
            (torch.cat([randn(g, 2, 9), torch.full((2, 1), 50.0)], -1), 3),
            **F32,
        ),
    ]


EXERCISES = [
    Exercise(
        f"{LESSON}/softmax-basic",
        "softmax on ordinary logits and any dim",
        "softmax",
        K.softmax,
        softmax_basic_probes,
        SOFTMAX_OPS,
        HINT,
    ),
    Exercise(
        f"{LESSON}/softmax-stable",
        "softmax that never overflows",
        "softmax",
        K.softmax,
        softmax_stable_probes,
        SOFTMAX_OPS,
        HINT,
    ),
    Exercise(
        f"{LESSON}/logsumexp",
        "stable log-sum-exp",
        "logsumexp",
        K.logsumexp,
        logsumexp_probes,
        SOFTMAX_OPS,
        HINT,
    ),
    Exercise(
        f"{LESSON}/log-softmax",
        "stable log-softmax",
        "log_softmax",
        K.log_softmax,
        log_softmax_probes,
        SOFTMAX_OPS,
        HINT,
    ),
    Exercise(
        f"{LESSON}/cross-entropy",
        "mean cross-entropy with ignore_index",
        "cross_entropy",
        K.cross_entropy,
        cross_entropy_probes,
        LOSS_OPS,
        HINT,
    ),
    Exercise(
        f"{LESSON}/entropy", "entropy of a distribution", "entropy", K.entropy, entropy_probes
    ),
    Exercise(
        f"{LESSON}/jacobian",
        "the softmax Jacobian diag(p) - p p^T",
        "softmax_jacobian",
        K.softmax_jacobian,
        jacobian_probes,
    ),
    Exercise(
        f"{LESSON}/online-update",
        "one step of the streaming softmax",
        "online_update",
        K.online_softmax_update,
        online_update_probes,
        SOFTMAX_OPS,
        HINT,
    ),
    Exercise(
        f"{LESSON}/online-softmax",
        "softmax streamed over blocks",
        "online_softmax",
        lambda x, block_size: K.online_softmax(x, block_size=block_size),
        online_softmax_probes,
        SOFTMAX_OPS,
        HINT,
    ),
]
