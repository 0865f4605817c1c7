"""Known-wrong implementations of lesson 02's exercises: typical mistakes, as source code.

Each entry: (solution cell grade_id, function name, exercises that must fail, source). The
source replaces the whole solution cell, so it runs in the notebook's namespace (`torch`,
`math`, `sp`, `sigma_q`, `expectation`, the other exercises' functions ...). The set of
exercises that must fail is the set that fails *in the notebook*: a mistake in
`attention_weights` also breaks `scaled_dot_product_attention`, which calls it.
"""

L = "02-scaled-attention"
SDPA = {f"{L}/attention-weights", f"{L}/sdpa-shapes", f"{L}/sdpa-mask"}
MASKED = {f"{L}/attention-weights", f"{L}/sdpa-mask"}

_VARIANCE = """
def variance(expr, variances):
    return sp.expand(expectation(expr**2, variances) - expectation(expr, variances) ** 2)
"""

_WEIGHTS_HEAD = """
def attention_weights(q, k, mask=None, scale=None):
"""

MUTANTS = {
    # --- the derivation
    "variance-of-one-product-only": (
        "dot_product_variance",
        "dot_product_variance",
        {f"{L}/dot-variance"},
        _VARIANCE
        + """
def dot_product_variance(n):
    q, k = sp.symbols("q k")  # forgot the sum: the variance of one term, whatever n is
    return variance(q * k, {q: sigma_q**2, k: sigma_k**2})
""",
    ),
    "standard-deviations-as-variances": (
        "dot_product_variance",
        "dot_product_variance",
        {f"{L}/dot-variance"},
        _VARIANCE
        + """
def dot_product_variance(n):
    qs, ks = sp.symbols(f"q0:{n}"), sp.symbols(f"k0:{n}")
    variances = {**{s: sigma_q for s in qs}, **{s: sigma_k for s in ks}}  # sigma, not sigma^2
    return sp.simplify(variance(sum(a * b for a, b in zip(qs, ks)), variances))
""",
    ),
    "variance-scales-linearly": (
        "logit_variances",
        "logit_variances",
        {f"{L}/closed-forms"},
        """
def logit_variances():
    raw = d_k * sigma_q**2 * sigma_k**2
    return raw, raw / sp.sqrt(d_k), raw / d_k  # Var(cX) = c Var(X): the square is missing
""",
    ),
    "monte-carlo-keys-equal-queries": (
        "monte_carlo_variance",
        "monte_carlo_variance",
        {f"{L}/monte-carlo"},
        """
def monte_carlo_variance(d_k, n_samples, sigma_q=1.0, sigma_k=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n_samples, d_k, generator=g)
    return ((q * sigma_q) * (q * sigma_k)).sum(-1).var().item()  # k drawn from the same samples
""",
    ),
    "monte-carlo-sigma-squared-twice": (
        "monte_carlo_variance",
        "monte_carlo_variance",
        {f"{L}/monte-carlo"},
        """
def monte_carlo_variance(d_k, n_samples, sigma_q=1.0, sigma_k=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n_samples, d_k, generator=g) * sigma_q**2  # scaled by the variance
    k = torch.randn(n_samples, d_k, generator=g) * sigma_k**2
    return (q * k).sum(-1).var().item()
""",
    ),
    "monte-carlo-std-not-variance": (
        "monte_carlo_variance",
        "monte_carlo_variance",
        {f"{L}/monte-carlo"},
        """
def monte_carlo_variance(d_k, n_samples, sigma_q=1.0, sigma_k=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n_samples, d_k, generator=g) * sigma_q
    k = torch.randn(n_samples, d_k, generator=g) * sigma_k
    return (q * k).sum(-1).std().item()
""",
    ),
    # --- attention
    "scale-by-d_k": (
        "attention_weights",
        "attention_weights",
        SDPA,
        _WEIGHTS_HEAD
        + """
    if scale is None:
        scale = 1.0 / q.shape[-1]  # 1/d_k instead of 1/sqrt(d_k)
    scores = (q @ k.transpose(-2, -1)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)
""",
    ),
    "scale-by-sqrt-d_model": (
        "attention_weights",
        "attention_weights",
        SDPA,
        _WEIGHTS_HEAD
        + """
    if scale is None:
        heads = q.shape[-3] if q.dim() == 4 else 1
        scale = 1.0 / math.sqrt(heads * q.shape[-1])  # the model width, not the head width
    scores = (q @ k.transpose(-2, -1)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)
""",
    ),
    "mask-after-softmax": (
        "attention_weights",
        "attention_weights",
        MASKED,
        _WEIGHTS_HEAD
        + """
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    weights = torch.softmax((q @ k.transpose(-2, -1)) * scale, dim=-1)
    return weights if mask is None else weights * mask  # rows no longer sum to 1
""",
    ),
    "inverted-mask": (
        "attention_weights",
        "attention_weights",
        MASKED,
        _WEIGHTS_HEAD
        + """
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    scores = (q @ k.transpose(-2, -1)) * scale
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))  # True read as "hidden"
    return torch.softmax(scores, dim=-1)
""",
    ),
    "transpose-of-all-dimensions": (
        "attention_weights",
        "attention_weights",
        SDPA,
        _WEIGHTS_HEAD
        + """
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    scores = (q @ k.permute(*range(k.dim() - 1, -1, -1))) * scale  # k.T: reverses every dim
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)
""",
    ),
    "scale-zero-read-as-default": (
        "attention_weights",
        "attention_weights",
        {f"{L}/scaling-experiment"},
        _WEIGHTS_HEAD
        + """
    scale = scale or 1.0 / math.sqrt(q.shape[-1])  # 0.0 is falsy: scale=0 becomes the default
    scores = (q @ k.transpose(-2, -1)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)
""",
    ),
    "sdpa-calls-pytorch": (
        "scaled_dot_product_attention",
        "scaled_dot_product_attention",
        {f"{L}/sdpa-shapes", f"{L}/sdpa-mask"},
        """
def scaled_dot_product_attention(q, k, v, mask=None, scale=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
""",
    ),
    # --- why sqrt(d_k)
    "entropy-nan-at-zero": (
        "attention_entropy",
        "attention_entropy",
        {f"{L}/entropy"},
        """
def attention_entropy(weights):
    return -(weights * torch.log(weights)).sum(dim=-1)
""",
    ),
    "entropy-in-bits": (
        "attention_entropy",
        "attention_entropy",
        {f"{L}/entropy", f"{L}/scaling-experiment"},
        """
def attention_entropy(weights):
    return -(torch.special.xlogy(weights, weights) / math.log(2)).sum(dim=-1)
""",
    ),
    "experiment-ignores-scale": (
        "scaling_experiment",
        "scaling_experiment",
        {f"{L}/scaling-experiment"},
        """
def scaling_experiment(q, k, scale):
    p = attention_weights(q, k)  # the default 1/sqrt(d_k), not the scale under study
    jacobian = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
    return torch.stack([p.amax(-1).mean(), attention_entropy(p).mean(),
                        torch.linalg.matrix_norm(jacobian).mean()])
""",
    ),
    "experiment-jacobian-without-diagonal": (
        "scaling_experiment",
        "scaling_experiment",
        {f"{L}/scaling-experiment"},
        """
def scaling_experiment(q, k, scale):
    p = attention_weights(q, k, scale=scale)
    jacobian = -p.unsqueeze(-1) * p.unsqueeze(-2)
    return torch.stack([p.amax(-1).mean(), attention_entropy(p).mean(),
                        torch.linalg.matrix_norm(jacobian).mean()])
""",
    ),
    "experiment-softmax-over-queries": (
        "scaling_experiment",
        "scaling_experiment",
        {f"{L}/scaling-experiment"},
        """
def scaling_experiment(q, k, scale):
    p = torch.softmax((q @ k.T) * scale, dim=0).T  # normalised over queries, not keys
    jacobian = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
    return torch.stack([p.amax(-1).mean(), attention_entropy(p).mean(),
                        torch.linalg.matrix_norm(jacobian).mean()])
""",
    ),
}
