"""Known-wrong implementations of lesson 01's exercises: typical mistakes, as source code.

Each entry: (solution cell grade_id, function name, exercises that must fail, source).
The source is what a learner might type into the solution cell, so the same table drives
both the fast judge-level test and the real nbgrader round trip.
"""

MUTANTS = {
    "softmax-no-max-subtraction": (
        "softmax",
        "softmax",
        {"01-softmax/softmax-stable"},
        """
def softmax(x, dim=-1):
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)
""",
    ),
    "softmax-ignores-dim": (
        "softmax",
        "softmax",
        {"01-softmax/softmax-basic", "01-softmax/softmax-stable"},
        """
def softmax(x, dim=-1):
    e = torch.exp(x - x.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)
""",
    ),
    "softmax-calls-torch-softmax": (
        "softmax",
        "softmax",
        {"01-softmax/softmax-basic", "01-softmax/softmax-stable"},
        """
def softmax(x, dim=-1):
    return torch.softmax(x, dim)
""",
    ),
    "softmax-via-functional-alias": (
        "softmax",
        "softmax",
        {"01-softmax/softmax-basic", "01-softmax/softmax-stable"},
        """
from torch.nn.functional import softmax as _sm
def softmax(x, dim=-1):
    return _sm(x, dim=dim)
""",
    ),
    "softmax-loses-float16": (
        "softmax",
        "softmax",
        {"01-softmax/softmax-stable"},
        """
def softmax(x, dim=-1):
    if x.dtype == torch.float16:
        x = x.float()  # computes in float32 but forgets to cast back
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)
""",
    ),
    "softmax-breaks-autograd": (
        "softmax",
        "softmax",
        {"01-softmax/softmax-basic"},
        """
def softmax(x, dim=-1):
    import numpy as np
    a = x.detach().numpy()
    e = np.exp(a - a.max(axis=dim, keepdims=True))
    return torch.from_numpy(e / e.sum(axis=dim, keepdims=True))
""",
    ),
    "logsumexp-no-shift": (
        "logsumexp",
        "logsumexp",
        {"01-softmax/logsumexp"},
        """
def logsumexp(x, dim=-1):
    return torch.log(torch.exp(x).sum(dim=dim))
""",
    ),
    "logsumexp-nan-on-all-neg-inf": (
        "logsumexp",
        "logsumexp",
        {"01-softmax/logsumexp"},
        """
def logsumexp(x, dim=-1):
    m = x.amax(dim=dim, keepdim=True)
    return (m + torch.log(torch.exp(x - m).sum(dim=dim, keepdim=True))).squeeze(dim)
""",
    ),
    "log-softmax-as-log-of-softmax": (
        "log_softmax",
        "log_softmax",
        {"01-softmax/log-softmax"},
        """
def log_softmax(x, dim=-1):
    m = x.amax(dim=dim, keepdim=True)
    e = torch.exp(x - m)
    return torch.log(e / e.sum(dim=dim, keepdim=True))
""",
    ),
    "cross-entropy-sum-not-mean": (
        "cross_entropy",
        "cross_entropy",
        {"01-softmax/cross-entropy"},
        """
def cross_entropy(logits, targets, ignore_index=-100):
    logp = log_softmax(logits, dim=-1)
    keep = targets != ignore_index
    safe = torch.where(keep, targets, torch.zeros_like(targets))
    return -(logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1) * keep).sum()
""",
    ),
    "cross-entropy-mean-includes-ignored": (
        "cross_entropy",
        "cross_entropy",
        {"01-softmax/cross-entropy"},
        """
def cross_entropy(logits, targets, ignore_index=-100):
    logp = log_softmax(logits, dim=-1)
    keep = targets != ignore_index
    safe = torch.where(keep, targets, torch.zeros_like(targets))
    return -(logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1) * keep).mean()
""",
    ),
    "entropy-nan-at-zero": (
        "entropy",
        "entropy",
        {"01-softmax/entropy"},
        """
def entropy(p, dim=-1):
    return -(p * torch.log(p)).sum(dim=dim)
""",
    ),
    "jacobian-missing-diagonal": (
        "softmax_jacobian",
        "softmax_jacobian",
        {"01-softmax/jacobian"},
        """
def softmax_jacobian(p):
    return -p.unsqueeze(-1) * p.unsqueeze(-2)
""",
    ),
    "online-update-no-rescale": (
        "online_update",
        "online_update",
        {"01-softmax/online-update"},
        """
def online_update(m, s, block):
    m_new = torch.maximum(m, block.amax(dim=-1, keepdim=True))
    return m_new, s + torch.exp(block - m_new).sum(dim=-1, keepdim=True)
""",
    ),
    "online-update-inverted-rescale": (
        "online_update",
        "online_update",
        {"01-softmax/online-update"},
        """
def online_update(m, s, block):
    m_new = torch.maximum(m, block.amax(dim=-1, keepdim=True))
    shift = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
    return m_new, s * torch.exp(shift - m) + torch.exp(block - shift).sum(dim=-1, keepdim=True)
""",
    ),
    "online-softmax-off-by-one-skips-last-block": (
        "online_softmax",
        "online_softmax",
        {"01-softmax/online-softmax"},
        """
def online_softmax(x, block_size):
    m = torch.full((*x.shape[:-1], 1), float("-inf"), dtype=x.dtype)
    s = torch.zeros((*x.shape[:-1], 1), dtype=x.dtype)
    for start in range(0, x.shape[-1] - block_size, block_size):
        m, s = online_update(m, s, x[..., start:start + block_size])
    shift = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return torch.exp(x - shift) / s
""",
    ),
}
