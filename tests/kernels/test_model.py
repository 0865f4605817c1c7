"""The assembled language model: interface, causality, backends, init, sampling."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course.lm.config import ModelConfig
from course.lm.protocol import check_model_interface
from course.lm.sample import generate
from solutions.kernels.blocks import GELUFeedForward, gelu_ffn
from solutions.kernels.model import TransformerLM, sample_next_token
from solutions.kernels.norms import LayerNorm, RMSNorm
from solutions.kernels.positions import interleaved_to_half_split, rope_cos_sin

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
    # ... once: the grown tables are kept (not saved), and a cache past the context reads them.
    assert short.rope_cos.shape[0] >= 16 and "rope_cos" not in short.state_dict()
    cache = short.new_cache(1, 40)
    stepped = torch.cat([short(idx[:, i : i + 1], cache=cache) for i in range(12)], dim=1)
    torch.testing.assert_close(stepped, long(idx), atol=1e-5, rtol=1e-5)
    fresh = rope_cos_sin(torch.arange(short.rope_cos.shape[0]), short.config.head_dim)
    torch.testing.assert_close(short.rope_cos, fresh[0], atol=0, rtol=0)
    assert torch.equal(short.rope_cis, torch.complex(short.rope_cos, short.rope_sin))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_evaluation_rotates_by_the_complex_table_with_the_same_numbers(dtype):
    # Without a gradient every layer multiplies by rows of rope_cis; with one, `rotate` with the
    # (cos, sin) tables runs: the same arithmetic, so the logits are equal bit for bit.
    model = TransformerLM(config(context_length=16), seed=5).to(dtype)
    expected_cis = {torch.float32: torch.complex64, torch.float64: torch.complex128}
    if dtype == torch.bfloat16:
        assert model.rope_cis is None  # no complex bfloat16: the tables, as before
    else:
        assert model.rope_cis.dtype == expected_cis[dtype]
        assert torch.equal(model.rope_cis.real, model.rope_cos)
    idx = tokens(2, 12)
    with torch.no_grad():
        evaluated = model(idx)
        cache = model.new_cache(2, 12)
        stepped = torch.cat([model(idx[:, :5], cache=cache)] + [
            model(idx[:, i : i + 1], cache=cache) for i in range(5, 12)], dim=1)  # fmt: skip
    assert torch.equal(model(idx).detach(), evaluated)
    tol = {torch.bfloat16: 2e-2, torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
    torch.testing.assert_close(stepped, evaluated, atol=tol, rtol=tol)


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


# -- every config choice reaches every layer --------------------------------------------------


def _norm_modules(model):
    return [m for m in model.modules() if isinstance(m, (LayerNorm, RMSNorm))]


@pytest.mark.parametrize("norm", ["rmsnorm", "layernorm"])
@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_norm_eps_reaches_every_norm(norm, norm_position):
    eps = 0.5  # large enough to change every output visibly
    model = TransformerLM(config(norm=norm, norm_eps=eps, norm_position=norm_position), seed=0)
    norms = _norm_modules(model)
    assert len(norms) == 2 * 2 + (norm_position == "pre")  # two per block, plus the final one
    checked = []

    def check(module, inputs, output):
        (x,) = inputs
        shape = (x.shape[-1],)
        if norm == "rmsnorm":
            expected = F.rms_norm(x, shape, module.weight, eps)
        else:
            expected = F.layer_norm(x, shape, module.weight, module.bias, eps)
        torch.testing.assert_close(output, expected)
        checked.append(module)

    handles = [m.register_forward_hook(check) for m in norms]
    idx = tokens(2, 9)
    with torch.no_grad():
        out = model(idx)
    for h in handles:
        h.remove()
    assert len(checked) == len(norms)
    default = TransformerLM(config(norm=norm, norm_position=norm_position), seed=0)
    assert not torch.allclose(default(idx), out, atol=1e-3)


def test_gelu_approximate_reaches_every_feed_forward_layer():
    cfg = dict(ffn="gelu", bias=True, n_layers=3)
    tanh = TransformerLM(config(gelu_approximate="tanh", **cfg), seed=0)
    exact = TransformerLM(config(**cfg), seed=0)
    ffns = [m for m in tanh.modules() if isinstance(m, GELUFeedForward)]
    assert len(ffns) == 3 and all(f.approximate == "tanh" for f in ffns)
    seen = []

    def check(module, inputs, output):
        (x,) = inputs
        W_in, W_out = module.W_in, module.W_out
        expected = gelu_ffn(x, W_in.weight, W_out.weight, W_in.bias, W_out.bias, "tanh")
        exact_gelu = gelu_ffn(x, W_in.weight, W_out.weight, W_in.bias, W_out.bias, "none")
        torch.testing.assert_close(output, expected, atol=1e-6, rtol=1e-5)
        assert not torch.allclose(output, exact_gelu, atol=1e-7, rtol=0)
        seen.append(module)

    handles = [f.register_forward_hook(check) for f in ffns]
    idx = tokens(2, 9)
    with torch.no_grad():
        out = tanh(idx)
    for h in handles:
        h.remove()
    assert len(seen) == 3
    assert not torch.equal(out, exact(idx))


def _to_half_split(state: dict, c: ModelConfig) -> dict:
    """The interleaved model's weights for a half-split model: permute each head's q and k rows."""
    perm = interleaved_to_half_split(c.head_dim)
    qk_heads = c.n_heads + c.n_kv_heads
    qk_rows = (torch.arange(qk_heads)[:, None] * c.head_dim + perm).flatten()
    v_rows = torch.arange(qk_heads * c.head_dim, (qk_heads + c.n_kv_heads) * c.head_dim)
    rows = torch.cat([qk_rows, v_rows])
    return {k: (v[rows] if k.endswith("W_qkv.weight") else v) for k, v in state.items()}


@pytest.mark.parametrize("n_kv_heads", [4, 2])
def test_rope_layout_reaches_every_attention_layer(n_kv_heads):
    c_int = config(n_layers=3, n_kv_heads=n_kv_heads)
    c_half = config(n_layers=3, n_kv_heads=n_kv_heads, rope_layout="half")
    interleaved = TransformerLM(c_int, seed=0).eval()
    half = TransformerLM(c_half, seed=0).eval()
    assert all(b.attn.rope_layout == "half" for b in half.blocks)
    idx = tokens(2, 20)
    with torch.no_grad():
        assert not torch.allclose(half(idx), interleaved(idx), atol=1e-4)
        # Half-split RoPE is interleaved RoPE on permuted dims: the same model, up to a
        # permutation of each head's query and key rows, in every layer (else this fails).
        half.load_state_dict(_to_half_split(interleaved.state_dict(), c_int))
        torch.testing.assert_close(half(idx), interleaved(idx), atol=1e-5, rtol=1e-5)


def test_every_block_of_the_model_is_causal():
    model = TransformerLM(config(attention="reference"), seed=0)
    assert all(b.attn.is_causal for b in model.blocks)


def test_configs_saved_before_the_new_fields_keep_their_old_meaning():
    old = {k: v for k, v in config().to_dict().items()}
    for key in ("norm_eps", "rope_layout", "gelu_approximate"):
        old.pop(key)
    legacy = ModelConfig.from_dict(old)
    assert legacy.norm_eps == 1e-6  # RMSNorm's eps before it was a field
    assert legacy.rope_layout == "interleaved" and legacy.gelu_approximate == "none"
    assert ModelConfig.from_dict({**old, "norm": "layernorm"}).norm_eps == 1e-5
    assert ModelConfig().norm_eps == 1e-5  # new configs: Llama's and CS336's value
    assert ModelConfig.from_dict(config().to_dict()) == config()
    model = TransformerLM(legacy)
    assert all(m.eps == 1e-6 for m in _norm_modules(model))


@pytest.mark.parametrize(
    ("field", "value"),
    [("rope_layout", "halves"), ("gelu_approximate", "fast"), ("norm_eps", 0.0),
     ("norm_eps", float("nan")), ("positional", "absolute"), ("norm", "batchnorm")],
)  # fmt: skip
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        config(**{field: value})


def test_float64_model_has_float64_exact_position_tables():
    w = 10000.0 ** (-torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    exact = 119 * w
    converted = TransformerLM(config(context_length=128)).double()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        built = TransformerLM(config(context_length=128))
    finally:
        torch.set_default_dtype(previous)
    for model in (converted, built):
        assert model.rope_cos.dtype == torch.float64
        assert (model.rope_cos[119] - torch.cos(exact)).abs().max().item() < 1e-12
        assert (model.rope_sin[119] - torch.sin(exact)).abs().max().item() < 1e-12
    back = converted.float()
    assert back.rope_cos.dtype == torch.float32
    assert (back.rope_cos[119].double() - torch.cos(exact)).abs().max().item() < 1e-7
    sinusoidal = TransformerLM(config(positional="sinusoidal", context_length=128)).double()
    assert (sinusoidal.pos_table[119, 0::2] - torch.sin(119 * 10000.0 ** (
        -torch.arange(0, 32, 2, dtype=torch.float64) / 32))).abs().max().item() < 1e-12  # fmt: skip


# -- one generation loop -----------------------------------------------------------------------


@pytest.mark.parametrize("positional", ["rope", "learned"])
@pytest.mark.parametrize(
    "sampling", [{"temperature": 0.9}, {"temperature": 1.2, "top_k": 7, "top_p": 0.8}]
)
def test_model_generate_is_the_harness_loop_at_three_contexts(positional, sampling):
    model = TransformerLM(config(positional=positional, context_length=16), seed=2)
    prompt = tokens(2, 5, seed=3)
    n = 3 * 16  # the text outgrows the context three times over
    texts = []
    for use_cache in (True, False):
        ours = model.generate(prompt, n, use_cache=use_cache,
                              generator=torch.Generator().manual_seed(4), **sampling)  # fmt: skip
        harness = generate(model, prompt, n, use_cache=use_cache, seed=4, **sampling)
        assert torch.equal(ours, harness)
        texts.append(ours)
    assert texts[0].shape == (2, 5 + n)
    # With or without the cache, the model sees the same windows: the same text.
    assert torch.equal(texts[0], texts[1])
    assert len(set(texts[0][0, 5:].tolist())) > 3  # sampled, not a constant
