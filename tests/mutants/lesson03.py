"""Known-wrong implementations of lesson 03's exercises: typical mistakes, as source code.

Each entry: (solution cell grade_id, function name, exercises that must fail, source). The
source replaces the whole solution cell and runs in the notebook's namespace; the set of
exercises that must fail is the set that fails in the notebook (`masked_attention` calls
`masked_softmax`, `leaks_future` calls `changed_positions`).
"""

L = "03-causal-masking"
SOFTMAX_AND_ATTENTION = {f"{L}/masked-softmax", f"{L}/attention"}
LEAKS = {f"{L}/changed-positions", f"{L}/leak-test"}

MUTANTS = {
    # --- causal masks
    "tril-diagonal-excluded": (
        "causal_mask_tril",
        "causal_mask_tril",
        {f"{L}/causal-tril"},
        """
def causal_mask_tril(seq_len):
    return torch.tril(torch.ones(seq_len, seq_len, dtype=torch.bool), diagonal=-1)
""",
    ),
    "tril-upper-triangle": (
        "causal_mask_tril",
        "causal_mask_tril",
        {f"{L}/causal-tril"},
        """
def causal_mask_tril(seq_len):
    return torch.triu(torch.ones(seq_len, seq_len, dtype=torch.bool))  # keys after the query
""",
    ),
    "tril-float-mask": (
        "causal_mask_tril",
        "causal_mask_tril",
        {f"{L}/causal-tril"},
        """
def causal_mask_tril(seq_len):
    return torch.tril(torch.ones(seq_len, seq_len))  # float 0/1, not a boolean mask
""",
    ),
    "causal-off-by-one-diagonal": (
        "causal_mask",
        "causal_mask",
        {f"{L}/causal-mask"},
        """
def causal_mask(seq_len, past=0):
    q_pos = torch.arange(past, past + seq_len)
    k_pos = torch.arange(past + seq_len)
    return k_pos[None, :] < q_pos[:, None]  # strict: a token cannot see itself
""",
    ),
    "causal-aligned-top-left": (
        "causal_mask",
        "causal_mask",
        {f"{L}/causal-mask"},
        """
def causal_mask(seq_len, past=0):
    q_pos = torch.arange(seq_len)  # forgets that the new queries start at `past`
    k_pos = torch.arange(past + seq_len)
    return k_pos[None, :] <= q_pos[:, None]
""",
    ),
    "window-one-too-wide": (
        "sliding_window_mask",
        "sliding_window_mask",
        {f"{L}/sliding-window"},
        """
def sliding_window_mask(seq_len, window, past=0):
    q_pos = torch.arange(past, past + seq_len)
    k_pos = torch.arange(past + seq_len)
    distance = q_pos[:, None] - k_pos[None, :]
    return (distance >= 0) & (distance <= window)
""",
    ),
    "window-not-causal": (
        "sliding_window_mask",
        "sliding_window_mask",
        {f"{L}/sliding-window"},
        """
def sliding_window_mask(seq_len, window, past=0):
    q_pos = torch.arange(past, past + seq_len)
    k_pos = torch.arange(past + seq_len)
    return (q_pos[:, None] - k_pos[None, :]).abs() < window  # sees `window` tokens ahead too
""",
    ),
    # --- padding and combining
    "padding-off-by-one": (
        "padding_mask",
        "padding_mask",
        {f"{L}/padding-mask"},
        """
def padding_mask(lengths, max_len=None):
    lengths = torch.as_tensor(lengths)
    if max_len is None:
        max_len = int(lengths.max())
    return (torch.arange(max_len)[None, :] <= lengths[:, None])[:, None, None, :]
""",
    ),
    "padding-without-broadcast-dims": (
        "padding_mask",
        "padding_mask",
        {f"{L}/padding-mask"},
        """
def padding_mask(lengths, max_len=None):
    lengths = torch.as_tensor(lengths)
    if max_len is None:
        max_len = int(lengths.max())
    return torch.arange(max_len)[None, :] < lengths[:, None]  # (batch, T): broadcasts wrongly
""",
    ),
    "combine-with-or": (
        "combine_masks",
        "combine_masks",
        {f"{L}/combine-masks"},
        """
def combine_masks(*masks):
    present = [m for m in masks if m is not None]
    out = present[0]
    for m in present[1:]:
        out = out | m
    return out
""",
    ),
    # --- the NaN trap
    "minus-inf-fill-nan-rows": (
        "masked_softmax",
        "masked_softmax",
        SOFTMAX_AND_ATTENTION,
        """
def masked_softmax(scores, mask):
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
""",
    ),
    "additive-minus-inf-then-nan-to-num": (
        "masked_softmax",
        "masked_softmax",
        SOFTMAX_AND_ATTENTION,
        """
def masked_softmax(scores, mask):
    bias = torch.zeros_like(scores).masked_fill(~mask, float("-inf"))  # an additive mask
    # the forward pass is repaired; the backward pass still goes through the NaN softmax
    return torch.softmax(scores + bias, dim=-1).nan_to_num(0.0)
""",
    ),
    "large-negative-fill": (
        "masked_softmax",
        "masked_softmax",
        SOFTMAX_AND_ATTENTION,
        """
def masked_softmax(scores, mask):
    return torch.softmax(scores.masked_fill(~mask, -1e9), dim=-1)
""",
    ),
    "finfo-min-without-zeroing": (
        "masked_softmax",
        "masked_softmax",
        SOFTMAX_AND_ATTENTION,
        """
def masked_softmax(scores, mask):
    return torch.softmax(scores.masked_fill(~mask, torch.finfo(scores.dtype).min), dim=-1)
""",
    ),
    "mask-after-softmax": (
        "masked_softmax",
        "masked_softmax",
        SOFTMAX_AND_ATTENTION,
        """
def masked_softmax(scores, mask):
    return torch.softmax(scores, dim=-1) * mask  # masked keys zeroed, but nothing renormalised
""",
    ),
    "inverted-mask": (
        "masked_softmax",
        "masked_softmax",
        SOFTMAX_AND_ATTENTION,
        """
def masked_softmax(scores, mask):
    filled = scores.masked_fill(mask, torch.finfo(scores.dtype).min)  # True read as "hidden"
    return (torch.softmax(filled.float(), dim=-1) * ~mask).to(scores.dtype)
""",
    ),
    "attention-forgets-the-scale": (
        "masked_attention",
        "masked_attention",
        {f"{L}/attention"},
        """
def masked_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1)
    if mask is None:
        mask = torch.ones(scores.shape[-1], dtype=torch.bool)
    return masked_softmax(scores, mask) @ v
""",
    ),
    "attention-calls-pytorch": (
        "masked_attention",
        "masked_attention",
        {f"{L}/attention"},
        """
def masked_attention(q, k, v, mask=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
""",
    ),
    # --- the leak test
    "perturbs-x-in-place": (
        "changed_positions",
        "changed_positions",
        LEAKS,
        """
def changed_positions(layer, x, t):
    perturbed = x  # no clone: "before" and "after" are the same tensor
    perturbed[:, t, :] += 1.0
    return (layer(perturbed) - layer(x)).abs().amax(dim=-1).amax(dim=0) > 1e-6
""",
    ),
    "reports-unchanged-positions": (
        "changed_positions",
        "changed_positions",
        LEAKS,
        """
def changed_positions(layer, x, t):
    perturbed = x.clone()
    perturbed[:, t, :] += 1.0
    return (layer(perturbed) - layer(x)).abs().amax(dim=-1).amax(dim=0) <= 1e-6
""",
    ),
    "leak-test-skips-the-last-token": (
        "leaks_future",
        "leaks_future",
        {f"{L}/leak-test"},
        """
def leaks_future(layer, x):
    for t in range(x.shape[-2] - 1):  # off by one: never perturbs the last token
        if changed_positions(layer, x, t)[:t].any():
            return True
    return False
""",
    ),
    "leak-test-counts-position-t": (
        "leaks_future",
        "leaks_future",
        {f"{L}/leak-test"},
        """
def leaks_future(layer, x):
    for t in range(x.shape[-2]):
        if changed_positions(layer, x, t)[:t + 1].any():  # t itself may change
            return True
    return False
""",
    ),
}
