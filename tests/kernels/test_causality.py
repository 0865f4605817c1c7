"""The perturbation leak test, on causal layers and on layers that leak on purpose."""

from __future__ import annotations

import pytest
import torch

from course import probe_layers as P
from solutions.kernels.causality import changed_positions, leaks_future

CAUSAL = [P.causal_self_attention, P.causal_running_mean, P.position_wise_mlp]
LEAKY = [
    P.bidirectional_self_attention,
    P.peeking_self_attention,
    P.sequence_normalised_attention,
    P.last_token_broadcast,
]


def x_of(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("layer", CAUSAL, ids=lambda f: f.__name__)
def test_causal_layers_do_not_leak(layer):
    assert leaks_future(layer, x_of(2, 7, 8)) is False


@pytest.mark.parametrize("layer", LEAKY, ids=lambda f: f.__name__)
def test_leaky_layers_leak(layer):
    assert leaks_future(layer, x_of(2, 7, 8)) is True


def test_causal_attention_moves_exactly_the_positions_from_t_on():
    x = x_of(2, 6, 8)
    for t in range(6):
        assert changed_positions(P.causal_self_attention, x, t).tolist() == [
            p >= t for p in range(6)
        ]
    assert changed_positions(P.position_wise_mlp, x, 3).tolist() == [p == 3 for p in range(6)]
    assert changed_positions(P.bidirectional_self_attention, x, 3).all()


def test_only_the_last_token_reveals_a_last_token_leak():
    x = x_of(1, 5, 8)
    early = [bool(changed_positions(P.last_token_broadcast, x, t)[:t].any()) for t in range(5)]
    assert early == [False, False, False, False, True]


def test_the_input_is_left_alone_and_the_result_is_a_bool_per_position():
    x = x_of(3, 5, 4)
    before = x.clone()
    out = changed_positions(P.causal_running_mean, x, 2)
    assert torch.equal(x, before)
    assert out.dtype == torch.bool and out.shape == (5,)


def test_agrees_with_the_jacobian_on_smooth_layers():
    # d out_i / d x_t is zero for i < t exactly when perturbing t moves nothing before it.
    x = x_of(1, 5, 4).double()
    for layer in CAUSAL + LEAKY:
        jac = torch.autograd.functional.jacobian(layer, x)  # (1, 5, d, 1, 5, d)
        reach = jac.abs().amax(dim=(0, 2, 3, 5)) > 0  # [output position, input position]
        for t in range(5):
            assert torch.equal(changed_positions(layer, x, t), reach[:, t]), (layer.__name__, t)
