"""The structural diagnosis of a head split probed with one perturbed token (course/diagnose.py):
it names the token and the heads a wrong split leaked into, and stays out of other cases."""

from __future__ import annotations

import torch

from course.compare import compare, to_plain
from course.diagnose import diagnose
from solutions.kernels.heads import split_heads


def one_token(T: int, D: int, t: int) -> torch.Tensor:
    x = torch.zeros(1, T, D)
    x[0, t] = torch.arange(1.0, D + 1)
    return x


def why(want, got, inputs):
    w, g = to_plain(want), to_plain(got)
    return diagnose(w, g, compare(w, g), inputs)


def test_a_view_without_transpose_names_token_and_head():
    x = one_token(4, 6, 2)
    wrong = x.view(1, 2, 4, 3)
    message = why(split_heads(x, 2), wrong, (x, 2))
    assert message.startswith("token 2's change leaked into token 0 in head 1")
    assert "token 1 in head 1" in message


def test_swapped_heads_without_a_leak_are_named_as_heads():
    x = one_token(4, 6, 1)
    message = why(split_heads(x, 2), split_heads(x, 2).flip(1), (x, 2))
    assert "head 0 holds head 1" in message


def test_random_inputs_keep_the_other_rules():
    x = torch.randn(1, 4, 6)
    wrong = x.view(1, 2, 4, 3)  # leaks, but x is not a one-token probe: no token is named
    message = why(split_heads(x, 2), wrong, (x, 2))
    assert message is None or "leaked" not in message


def test_kv_heads_repeated_for_the_wrong_query_heads_are_named_per_query_head():
    kv = torch.arange(2.0)[None, :, None, None] * 10 + torch.rand(1, 2, 3, 2)
    right = kv.repeat_interleave(2, dim=1)
    message = why(right, kv.flip(1).repeat_interleave(2, dim=1), (kv, 2))
    assert message.startswith("query head 0 reads kv head 1 (should read 0)")
    assert "query head 3 reads kv head 0 (should read 1)" in message
    assert "holds" not in message
    tiled = why(right, kv.repeat(1, 2, 1, 1), (kv, 2))
    assert "query head 1 reads kv head 1 (should read 0)" in tiled


def test_every_head_wrong_is_not_called_some_heads_wrong():
    want = torch.randn(2, 2, 5, 4)
    got = want + torch.randn(2, 2, 5, 4)  # both heads wrong, neither holds the other
    message = why(want, got, (torch.randn(2, 5, 4),)) or ""
    assert "the others right" not in message


def test_a_result_of_zeros_is_not_a_scale_of_zero():
    want = torch.rand(3, 5) + 0.1
    got = torch.zeros(3, 5)  # a ratio of 0 everywhere, which no missing scale explains
    message = why(want, got, (torch.randn(3, 5),)) or ""
    assert "constant factor" not in message
