"""The assembled language model: interface, causality, backends, init, sampling."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course.lm.config import ModelConfig
from course.lm.protocol import check_model_interface
from solutions.kernels.model import TransformerLM, sample_next_token

POSITIONALS = ["rope", "sinusoidal", "learned", "alibi", "none"]


def config(**overrides):
    base = dict(vocab_size=50, context_length=32, d_model=32, n_layers=2, n_heads=4)
    return ModelConfig(**(base | overrides))


def tokens(batch, T, seed=0, vocab=50):
    return torch.randint(0, vocab, (batch, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("positional", POSITIONALS)
def test_interface_for_the_training_harness(positional):
    model = check_model_interface(TransformerLM, config(positional=positional))
    assert model.config.positional == positional
    logits = model(tokens(3, 7))
    assert logits.shape == (3, 7, 50) and torch.isfinite(logits).all()


@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"attention": "reference", "n_kv_heads": 2},
        {"norm_position": "post", "ffn": "gelu", "norm": "layernorm", "bias": True},
    ],
)
def test_changing_token_t_changes_no_logit_before_t(positional, overrides):
    model = TransformerLM(config(positional=positional, **overrides), seed=1).eval()
    idx = tokens(2, 12, seed=2)
    t = 7
    changed = idx.clone()
    changed[:, t] = (idx[:, t] + 1) % 50
    with torch.no_grad():
        before, after = model(idx), model(changed)
    assert torch.equal(before[:, :t], after[:, :t])
    assert not torch.allclose(before[:, t], after[:, t])


@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("n_kv_heads", [4, 1])
def test_reference_and_sdpa_backends_agree(positional, n_kv_heads):
    reference = TransformerLM(
        config(positional=positional, attention="reference", n_kv_heads=n_kv_heads), seed=3
    )
    sdpa = TransformerLM(
        config(positional=positional, attention="sdpa", n_kv_heads=n_kv_heads), seed=3
    )
    idx = tokens(2, 20, seed=4)
    torch.testing.assert_close(reference(idx), sdpa(idx), atol=1e-5, rtol=1e-5)


def test_seeded_init_is_reproducible_and_gpt2_scaled():
    c = config(n_layers=4, d_model=64, vocab_size=300)
    a, b = TransformerLM(c, seed=5), TransformerLM(c, seed=5)
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert not torch.equal(a.tok_emb.weight, TransformerLM(c, seed=6).tok_emb.weight)
    block = a.blocks[0]
    assert block.attn.W_qkv.weight.std().item() == pytest.approx(0.02, rel=0.1)
    residual = 0.02 / math.sqrt(2 * 4)
    assert block.attn.W_o.weight.std().item() == pytest.approx(residual, rel=0.1)
    assert block.ffn.W_down.weight.std().item() == pytest.approx(residual, rel=0.1)
    assert torch.equal(block.norm1.weight, torch.ones(64))
    # Near-uniform predictions at init: the loss is close to log(vocab).
    idx = tokens(4, 32, seed=7, vocab=300)
    loss = F.cross_entropy(a(idx).flatten(0, 1), idx.roll(-1, 1).flatten())
    assert loss.item() == pytest.approx(math.log(300), rel=0.02)


def test_tied_and_untied_embeddings():
    tied = TransformerLM(config(tie_embeddings=True))
    untied = TransformerLM(config(tie_embeddings=False))
    assert tied.lm_head.weight is tied.tok_emb.weight
    assert untied.lm_head.weight is not untied.tok_emb.weight
    assert untied.num_parameters() - tied.num_parameters() == 50 * 32
    assert tied.num_parameters(exclude_embeddings=True) == tied.num_parameters() - 50 * 32


def test_gradients_are_finite_and_reach_every_parameter():
    model = TransformerLM(config(positional="learned", n_kv_heads=2, bias=True, norm="layernorm"))
    idx = tokens(2, 16, seed=8)
    loss = F.cross_entropy(model(idx).flatten(0, 1), idx.roll(-1, 1).flatten())
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if not name.endswith("bias"):  # biases of the last layer can be legitimately tiny
            assert p.grad.abs().sum() > 0, name


def test_dropout_only_in_training_mode():
    model = TransformerLM(config(dropout=0.5), seed=9)
    idx = tokens(2, 10, seed=10)
    model.eval()
    assert torch.equal(model(idx), model(idx))
    model.train()
    torch.manual_seed(0)
    assert not torch.allclose(model(idx), model(idx))


def test_positions_beyond_the_context_are_refused_for_tabulated_schemes():
    for positional in ("learned", "sinusoidal"):
        model = TransformerLM(config(positional=positional, context_length=8))
        with pytest.raises(ValueError, match="context_length"):
            model(tokens(1, 9))
    # RoPE's angles are a formula: past its precomputed tables they are computed afresh, and
    # agree with a model whose tables reach further (whether it extrapolates well is another
    # matter).
    short = TransformerLM(config(context_length=8), seed=3)
    long = TransformerLM(config(context_length=16), seed=3)
    idx = tokens(1, 12)
    assert short(idx).shape == (1, 12, 50)
    torch.testing.assert_close(short(idx), long(idx))


def test_generate_shapes_sampling_options_and_determinism():
    model = TransformerLM(config(), seed=11)
    prompt = tokens(2, 3, seed=12)
    greedy = model.generate(prompt, 6, temperature=0)
    assert greedy.shape == (2, 9) and torch.equal(greedy[:, :3], prompt)
    # top_k=1 and a tiny top_p leave only the most likely token: greedy again.
    torch.testing.assert_close(model.generate(prompt, 6, top_k=1), greedy)
    torch.testing.assert_close(model.generate(prompt, 6, top_p=1e-6), greedy)

    def sample(seed):
        return model.generate(prompt, 8, top_k=10, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(sample(1), sample(1))
    assert not torch.equal(sample(1), sample(2))
    assert model.training  # generate restores the mode it found


def test_sample_next_token_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    g = torch.Generator().manual_seed(0)
    draws = torch.cat([sample_next_token(logits, top_k=2, generator=g) for _ in range(300)])
    assert set(draws.flatten().tolist()) == {0, 1}
    draws = torch.cat([sample_next_token(logits, top_p=0.7, generator=g) for _ in range(300)])
    assert set(draws.flatten().tolist()) == {0, 1}  # 0.5 < 0.7 <= 0.5 + 0.3
    draws = torch.cat([sample_next_token(logits, top_p=0.85, generator=g) for _ in range(300)])
    assert set(draws.flatten().tolist()) == {0, 1, 2}
    assert sample_next_token(logits, temperature=0).item() == 0
    # High temperature flattens: the rarest token shows up often.
    hot = torch.cat([sample_next_token(logits, temperature=100.0, generator=g) for _ in range(400)])
    assert (hot == 3).float().mean().item() > 0.15
