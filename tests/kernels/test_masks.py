"""Causal (with a cache offset), sliding-window, padding and combined masks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from solutions.kernels.attention import scaled_dot_product_attention
from solutions.kernels.masks import causal_mask, combine_masks, padding_mask, sliding_window_mask


def test_causal_mask_is_lower_triangular():
    expected = torch.tensor(
        [[True, False, False], [True, True, False], [True, True, True]], dtype=torch.bool
    )
    assert torch.equal(causal_mask(3), expected)
    assert causal_mask(3).dtype == torch.bool


def test_causal_mask_with_offset_is_the_bottom_of_the_full_mask():
    # Three new queries after five cached positions: rows 5, 6, 7 of the 8 x 8 mask.
    assert torch.equal(causal_mask(3, past=5), causal_mask(8)[5:])
    assert causal_mask(3, past=5).shape == (3, 8)
    assert causal_mask(1, past=4).all()  # one new token sees every cached one and itself


def test_causal_mask_agrees_with_torch_is_causal():
    q, k, v = (
        torch.randn(2, 3, 6, 8, generator=torch.Generator().manual_seed(s)) for s in range(3)
    )
    ours = scaled_dot_product_attention(q, k, v, mask=causal_mask(6))
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, is_causal=True))


@settings(max_examples=30, deadline=None)
@given(seq_len=st.integers(1, 8), past=st.integers(0, 8), window=st.integers(1, 10))
def test_sliding_window_by_definition(seq_len, past, window):
    mask = sliding_window_mask(seq_len, window, past)
    assert mask.shape == (seq_len, past + seq_len)
    for i in range(seq_len):
        for j in range(past + seq_len):
            assert bool(mask[i, j]) == (0 <= past + i - j < window)
    assert torch.equal(mask & causal_mask(seq_len, past), mask)  # never sees the future
    assert (mask.sum(-1) <= window).all()


def test_sliding_window_wider_than_the_sequence_is_causal():
    assert torch.equal(sliding_window_mask(5, 100, past=2), causal_mask(5, past=2))
    assert torch.equal(sliding_window_mask(4, 1), torch.eye(4, dtype=torch.bool))
    with pytest.raises(ValueError):
        sliding_window_mask(3, 0)


def test_padding_mask_right_and_left():
    right = padding_mask(torch.tensor([3, 1, 4]))
    assert right.shape == (3, 1, 1, 4)
    assert right[:, 0, 0].tolist() == [
        [True, True, True, False],
        [True, False, False, False],
        [True, True, True, True],
    ]
    left = padding_mask([2, 4], max_len=5, side="left")
    assert left[:, 0, 0].tolist() == [
        [False, False, False, True, True],
        [False, True, True, True, True],
    ]
    with pytest.raises(ValueError):
        padding_mask([1], side="middle")


def test_padded_keys_do_not_change_real_outputs():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 4, generator=g) for _ in range(3))
    lengths = torch.tensor([5, 3])
    mask = combine_masks(causal_mask(5), padding_mask(lengths, 5))
    out = scaled_dot_product_attention(q, k, v, mask=mask)
    # Sequence 1 on its own (3 real tokens) gives the same outputs for its real queries.
    alone = scaled_dot_product_attention(q[1:, :, :3], k[1:, :, :3], v[1:, :, :3], causal_mask(3))
    torch.testing.assert_close(out[1:, :, :3], alone)
    # Garbage in the padded positions changes nothing for the real ones.
    k2, v2 = k.clone(), v.clone()
    k2[1, :, 3:], v2[1, :, 3:] = 1e3, -1e3
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k2, v2, mask=mask)[1, :, :3], out[1, :, :3]
    )


def test_combine_masks_broadcasts_and_ignores_none():
    pad = padding_mask([2, 3], 3)  # (2, 1, 1, 3)
    combined = combine_masks(causal_mask(3), None, pad)
    assert combined.shape == (2, 1, 3, 3)
    assert torch.equal(combined[0, 0], causal_mask(3) & torch.tensor([True, True, False]))
    assert torch.equal(combined[1, 0], causal_mask(3))
    assert combine_masks(None, None) is None
    window = sliding_window_mask(3, 2)
    assert torch.equal(combine_masks(causal_mask(3), window), window)
