"""The component ladder (course/lm/ladder.py): every rung is a causal model the harness trains,
each has exactly the component it names, and the ladder and its CLI run end to end."""

import math

import pytest
import torch
import torch.nn.functional as F

from course.lm.cli import main
from course.lm.config import ModelConfig
from course.lm.corpus import unigram_bigram_entropy
from course.lm.errors import ModelSpecError, PresetError
from course.lm.ladder import (
    COMPONENTS,
    RUNGS,
    BigramLM,
    FeedForwardLM,
    LadderLM,
    LadderParts,
    MultiHeadLM,
    OneHeadLM,
    PreNormLM,
    ResidualLM,
    RMSNorm,
    RoPELM,
    apply_rope,
    find_rungs,
    ladder_budget,
    train_ladder,
    with_parts,
    with_rope,
)
from course.lm.models import load_rope_functions
from course.lm.presets import get_preset
from course.lm.protocol import check_model_interface

CONFIG = ModelConfig(context_length=16, d_model=16, n_layers=2, n_heads=4, d_ff=32)


def build(cls, seed=0, config=CONFIG):
    torch.manual_seed(seed)
    return cls(config).eval()


def logits_of(model, idx):
    with torch.no_grad():
        return model(idx)


@pytest.fixture
def idx():
    return torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("cls", RUNGS, ids=lambda c: c.__name__)
def test_every_rung_follows_the_protocol_and_is_causal(cls, idx):
    model = check_model_interface(cls, CONFIG)
    assert model.config is CONFIG
    logits = logits_of(model.eval(), idx)
    assert logits.shape == (2, 12, 256) and logits.dtype == torch.float32
    changed = idx.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 256
    after = logits_of(model, changed)
    torch.testing.assert_close(after[:, :7], logits[:, :7], rtol=0, atol=0)
    assert not torch.equal(after[:, 7], logits[:, 7])
    # Position 8 sees token 7 through attention; the bigram sees only its own token.
    assert torch.equal(after[:, 8:], logits[:, 8:]) == (cls is BigramLM)


def test_each_rung_adds_exactly_one_component_in_order():
    assert [sorted(cls.components) for cls in RUNGS[:1]] == [[]]
    for below, above, component in zip(RUNGS[:-1], RUNGS[1:], COMPONENTS, strict=True):
        assert above.components - below.components == {component}, above.__name__
        assert below.components <= above.components
    assert len({cls.rung for cls in RUNGS}) == len(RUNGS)


def test_parameter_counts_grow_as_stated():
    V, d, L, d_ff = CONFIG.vocab_size, CONFIG.d_model, CONFIG.n_layers, CONFIG.d_ff
    bigram = 2 * V * d  # embedding and untied head
    attention = L * 4 * d * d  # W_qkv (3d x d) and W_o (d x d) per layer, any head count
    ffn = L * 3 * d * d_ff  # SwiGLU: gate, up, down
    norms = (2 * L + 1) * d  # two RMSNorm weights per layer and the final norm
    expected = {
        BigramLM: bigram,
        OneHeadLM: bigram + attention,
        MultiHeadLM: bigram + attention,
        FeedForwardLM: bigram + attention + ffn,
        ResidualLM: bigram + attention + ffn,
        PreNormLM: bigram + attention + ffn + norms,
        RoPELM: bigram + attention + ffn + norms,
    }
    got = {cls: sum(p.numel() for p in cls(CONFIG).parameters()) for cls in RUNGS}
    assert got == expected

    class NoFeedForward(LadderLM):  # a rung of one's own: any set of components
        components = frozenset(COMPONENTS) - {"ffn"}

    model = check_model_interface(NoFeedForward, CONFIG)
    assert sum(p.numel() for p in model.parameters()) == bigram + attention + (L + 1) * d


# Three layers, as in the ladder's budget: enough for a shrinking signal to vanish.
DEEP = ModelConfig(context_length=32, d_model=32, n_layers=3, n_heads=4, d_ff=64)


@pytest.fixture(scope="module")
def text_batch():
    """One (4, 33) batch of code-like bytes: inputs are [:, :-1], targets [:, 1:]."""
    text = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(400)).encode()
    data = torch.tensor(list(text), dtype=torch.long)
    starts = torch.randint(0, len(data) - 33, (4,), generator=torch.Generator().manual_seed(0))
    return torch.stack([data[s : s + 33] for s in starts.tolist()])


@pytest.mark.parametrize("cls", RUNGS, ids=lambda c: c.__name__)
def test_every_rung_starts_near_uniform_and_learns(cls, text_batch):
    # A rung whose logits start vanishingly small (the feed-forward rung without residuals once
    # started at 2e-15 under PyTorch's default init) has gradients below AdamW's eps and never
    # leaves ln 256; one that starts far above ln 256 spends its budget coming back down.
    x, y = text_batch[:, :-1], text_batch[:, 1:]
    torch.manual_seed(0)
    model = cls(DEEP)
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3)
    losses = []
    for _ in range(30):
        logits = model(x)
        if not losses:
            assert logits.detach().std() > 1e-4, "the logits vanish at initialisation"
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert math.log(256) - 0.05 < losses[0] < math.log(256) + 1.0, losses[0]
    # The slowest learner, the feed-forward rung, falls about 0.6 nats in these 30 steps.
    assert min(losses) < losses[0] - 0.3, losses


def test_initialisation_keeps_the_scale_and_scales_residual_branches():
    config = ModelConfig(context_length=16, d_model=64, n_layers=3, n_heads=4, d_ff=128)
    for cls in (FeedForwardLM, ResidualLM, OneHeadLM):
        torch.manual_seed(0)
        model = cls(config)
        scale = 1 / math.sqrt(2 * 3) if cls is ResidualLM else 1.0  # 3 attention + 3 FFN branches
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear):
                expected = module.in_features**-0.5
                if name.endswith(("W_o", "W_down")):
                    expected *= scale
                assert module.weight.std().item() == pytest.approx(expected, rel=0.1), name


def transplant(src, dst_cls, config=CONFIG):
    """A `dst_cls` model with `src`'s weights (the parameters both have), and the names of those
    it has and `src` lacks."""
    dst = build(dst_cls, seed=1, config=config)
    missing, _ = dst.load_state_dict(src.state_dict(), strict=False)
    return dst, missing


def zero_sublayer_outputs(model):
    with torch.no_grad():
        for block in model.blocks:
            block.attn.W_o.weight.zero_()
            if block.ffn is not None:
                block.ffn.W_down.weight.zero_()


def test_multi_head_splits_the_same_weights_into_heads(idx):
    one = build(OneHeadLM)
    multi, missing = transplant(one, MultiHeadLM)
    assert not missing
    assert not torch.allclose(logits_of(multi, idx), logits_of(one, idx), atol=1e-4)
    # With a config of one head, the multi-head rung is the one-head rung.
    single = ModelConfig(**{**CONFIG.to_dict(), "n_heads": 1, "n_kv_heads": 1})
    multi1, _ = transplant(one, MultiHeadLM, single)
    torch.testing.assert_close(logits_of(multi1, idx), logits_of(one, idx))


def test_residual_carries_the_embedding_past_silent_sublayers(idx):
    # With every sub-layer's output zeroed, the residual stream is the embedding itself, so the
    # residual rung computes the bigram model; without residuals, nothing reaches the head.
    res = build(ResidualLM)
    zero_sublayer_outputs(res)
    no_res, _ = transplant(res, FeedForwardLM)
    bigram, _ = transplant(res, BigramLM)
    torch.testing.assert_close(logits_of(res, idx), logits_of(bigram, idx))
    assert torch.count_nonzero(logits_of(no_res, idx)) == 0


def test_pre_ln_normalises_before_each_sublayer_and_the_head(idx):
    pre = build(PreNormLM)
    assert len([m for m in pre.modules() if isinstance(m, RMSNorm)]) == 2 * 2 + 1
    res, _ = transplant(pre, ResidualLM)
    assert not torch.allclose(logits_of(pre, idx), logits_of(res, idx), atol=1e-4)
    zero_sublayer_outputs(pre)
    # The stream is then the embedding, and the head reads it through the final norm.
    with torch.no_grad():
        expected = pre.lm_head(pre.norm_f(pre.tok_emb(idx)))
    torch.testing.assert_close(logits_of(pre, idx), expected)


def test_rope_rotates_every_position_but_the_first(idx):
    nope = build(PreNormLM)
    roped, missing = transplant(nope, RoPELM)
    assert not missing
    a, b = logits_of(nope, idx), logits_of(roped, idx)
    # Position 0 attends to itself only, and its rotation is by angle 0.
    torch.testing.assert_close(b[:, 0], a[:, 0])
    assert not torch.allclose(b[:, 1:], a[:, 1:], atol=1e-4)


def rope_before_it_took_its_functions(x, theta):
    """The ladder's own interleaved RoPE, `rope()` in course/lm/ladder.py at commit c1387a9, with
    which lesson 08's notebook measured its table: angles in the default float32."""
    T, head_dim = x.shape[-2], x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, device=x.device) / head_dim)
    angles = torch.arange(T, device=x.device)[:, None] * inv_freq
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_the_reference_kernels_rotate_as_the_ladders_own_rope_did(dtype):
    # The cpu preset's shape: batch 16, 4 heads, context 64, head_dim 96 / 4 = 24.
    x = torch.randn(16, 4, 64, 24, generator=torch.Generator().manual_seed(0)).to(dtype)
    old = rope_before_it_took_its_functions(x, 10000.0)
    new = apply_rope(x, 10000.0, load_rope_functions())
    assert new.dtype == dtype and new.shape == x.shape
    # The old angles were float32, the kernel's float64: the tables differ by float32 rounding
    # (float32's own tolerance; 2e-5 absolute for float64 inputs). A bfloat16 table entry may
    # round the other way: bfloat16's own relative tolerance, and 2^-8 absolute where the two
    # products of a rotated pair cancel.
    tolerance = {torch.float32: {}, torch.float64: {"atol": 2e-5, "rtol": 0}}
    torch.testing.assert_close(new, old, **tolerance.get(dtype, {"atol": 2**-8, "rtol": 0.016}))


def test_the_rope_rung_rotates_with_the_functions_it_is_given(idx):
    calls = []

    def no_turn(positions, head_dim, theta=10000.0, dtype=torch.float32):
        calls.append((tuple(positions.shape), head_dim, theta, dtype))
        shape = (*positions.shape, head_dim // 2)
        return torch.ones(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)

    reference = load_rope_functions()
    nope = build(PreNormLM)
    still, _ = transplant(nope, with_rope(no_turn, reference[1]))
    assert still.rope_functions[0] is no_turn and isinstance(still, RoPELM)
    torch.testing.assert_close(logits_of(still, idx), logits_of(nope, idx))
    assert calls[0] == ((12,), CONFIG.d_model // CONFIG.n_heads, CONFIG.rope_theta, torch.float32)
    turned, _ = transplant(nope, with_rope(*reference))
    torch.testing.assert_close(logits_of(turned, idx), logits_of(transplant(nope, RoPELM)[0], idx))


def view_split_heads(x, n_heads):
    """Lesson 04's recipe, as a learner writes it (the ladder's own code before LadderParts)."""
    B, T, D = x.shape
    return x.view(B, T, n_heads, D // n_heads).transpose(1, 2)


def view_merge_heads(x):
    B, H, T, d = x.shape
    return x.transpose(1, 2).contiguous().view(B, T, H * d)


def plain_rms_norm(x, weight=None, eps=1e-5):
    """Lesson 06's RMSNorm from mean and rsqrt, as a learner writes it."""
    y = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)
    return y if weight is None else y * weight


@pytest.mark.parametrize("cls", RUNGS[1:], ids=lambda c: c.__name__)
def test_every_rung_is_built_from_the_parts_it_is_given(cls, idx):
    calls = {"split": 0, "merge": 0, "norm": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    parts = LadderParts(
        counted("split", view_split_heads),
        counted("merge", view_merge_heads),
        counted("norm", plain_rms_norm),
    )
    default, mine = build(cls), build(with_parts(cls, parts))
    assert type(mine).__name__ == cls.__name__ and isinstance(mine, cls)
    # The default parts (course.stand_ins': copies and F.rms_norm) give the same values.
    torch.testing.assert_close(logits_of(mine, idx), logits_of(default, idx))
    layers = CONFIG.n_layers
    assert calls["split"] == 3 * layers and calls["merge"] == layers
    assert calls["norm"] == ((2 * layers + 1) if "norm" in cls.components else 0)


def test_the_default_parts_are_the_stand_ins():
    from course import stand_ins

    assert LadderParts() == LadderParts(
        stand_ins.split_heads, stand_ins.merge_heads, stand_ins.rms_norm
    )
    assert LadderLM.parts == LadderParts()


def test_unwritten_parts_are_named_before_any_rung_trains(small_corpus):
    def unwritten(*args, **kwargs):
        raise NotImplementedError

    with pytest.raises(ModelSpecError, match="your merge_heads is not written yet"):
        train_ladder(3, small_corpus, preset="cpu-tiny", parts=LadderParts(merge_heads=unwritten))
    with pytest.raises(ModelSpecError, match="split_heads returned"):
        bad = LadderParts(split_heads=lambda x, n: x)
        train_ladder(3, small_corpus, preset="cpu-tiny", parts=bad)
    with pytest.raises(ModelSpecError, match="LadderParts"):
        train_ladder(3, small_corpus, preset="cpu-tiny", parts=(view_split_heads,))


def test_unwritten_rope_functions_are_named_before_any_rung_trains(small_corpus):
    def unwritten(*args, **kwargs):
        raise NotImplementedError

    with pytest.raises(ModelSpecError, match="not written yet"):
        train_ladder(3, small_corpus, preset="cpu-tiny", rope=(unwritten, unwritten))
    with pytest.raises(ModelSpecError, match="pair"):
        train_ladder(3, small_corpus, preset="cpu-tiny", rope=(unwritten,))


def test_without_the_reference_kernels_the_rope_rung_is_skipped_in_one_line(
    without_solutions, small_corpus, capsys
):
    result = train_ladder(3, small_corpus, preset="cpu-tiny", rungs=["RoPE"])
    (r,) = result.rungs
    assert r.skipped and math.isnan(r.val_loss)
    row = result.table().splitlines()[2]
    assert (
        row.startswith("RoPE") and "skipped" in row and "rope=(rope_cos_sin, rotate_pairs)" in row
    )
    assert main(["ladder", "--rungs", "RoPE", "--steps", "3", "--preset", "cpu-tiny"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "Traceback" not in out
    skipped = [line for line in out.splitlines() if "skipped" in line]
    assert len(skipped) == 1 and "--rope MODULE" in skipped[0], out
    with pytest.raises(ModelSpecError, match="not installed"):
        RoPELM(CONFIG)


@pytest.fixture
def tiny_budget():
    config = get_preset("cpu-tiny")
    config.model = ModelConfig(context_length=16, d_model=16, n_layers=1, n_heads=2, d_ff=32)
    config.eval_batches = 2
    return config


def test_a_tiny_ladder_runs_end_to_end(small_corpus, tiny_budget):
    seen = []
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = train_ladder(
            20, small_corpus, preset=tiny_budget, num_threads=1, on_rung=seen.append
        )
        assert torch.get_num_threads() == 2  # the harness's setting does not outlive the ladder
    finally:
        torch.set_num_threads(threads)
    assert [r.model for r in result.rungs] == [cls.__name__ for cls in RUNGS]
    assert seen == result.rungs
    for r in result.rungs:
        assert r.diverged is None
        assert math.isfinite(r.val_loss) and 0 < r.val_loss < math.log(256), r
        assert math.isfinite(r.train_loss)
    counts = [r.n_params for r in result.rungs]
    assert counts == sorted(counts) and counts[0] < counts[-1]
    h1, h2 = unigram_bigram_entropy(small_corpus.train)
    assert (result.unigram_entropy, result.bigram_entropy) == (h1, h2)
    assert result.config.steps == 20 and result.config.eval_interval == 20
    table = result.table()
    for r in result.rungs:
        assert r.rung in table and f"{r.val_loss:.3f}" in table
    assert "unigram entropy" in table and f"{h2:.3f}" in table and "20 steps" in table


def test_a_diverging_rung_is_reported_not_raised(small_corpus, tiny_budget):
    tiny_budget.lr = tiny_budget.min_lr = 1e30
    tiny_budget.grad_clip = 0.0
    result = train_ladder(4, small_corpus, preset=tiny_budget, rungs=["one head"], num_threads=1)
    (r,) = result.rungs
    assert r.diverged and "diverged" in r.diverged and math.isnan(r.val_loss)
    assert "diverged" in result.table().splitlines()[2]


def test_budget_and_rung_names_are_checked():
    assert [c.__name__ for c in find_rungs(["RoPE", " bigram", "ONE HEAD"])] == [
        "BigramLM",
        "OneHeadLM",
        "RoPELM",
    ]
    assert find_rungs(["residuallm"]) == [ResidualLM]
    for bad in (["two heads"], [""], []):
        with pytest.raises(PresetError):
            find_rungs(bad)
    for steps in (0, -3, 2.5, True):
        with pytest.raises(PresetError, match="steps"):
            ladder_budget(steps)
    with pytest.raises(PresetError, match="unknown preset"):
        ladder_budget(10, "huge")


def test_cli_prints_the_table(tmp_path, capsys):
    text = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(300))
    path = tmp_path / "small.txt"
    path.write_text(text)
    threads = torch.get_num_threads()
    try:
        args = ["--preset", "cpu-tiny", "--steps", "3", "--corpus", str(path), "--threads", "1"]
        assert main(["ladder", *args]) == 0
    finally:
        torch.set_num_threads(threads)
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["rung", "adds", "params", "val", "loss"]
    rows = lines[2 : 2 + len(RUNGS)]
    for cls, row in zip(RUNGS, rows, strict=True):
        assert row.startswith(cls.rung), row
        assert math.isfinite(float(row.split()[-1]))
    assert lines[2 + len(RUNGS)].startswith("unigram entropy")
    assert lines[3 + len(RUNGS)].startswith("bigram entropy")
    assert "3 steps x batch 8 x context 32" in out


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--steps", "0"], "steps must be a whole number >= 1, got 0"),
        (["--steps", "ten"], "invalid int value: 'ten'"),
        (["--rungs", "bigram,two heads"], "unknown rung 'two heads'"),
        (["--rungs", ","], "no rung named"),
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--threads", "0"], "--threads must be >= 1"),
        (["--device", "tpu9"], "unknown device"),
        (["--corpus", "/nonexistent/corpus.txt"], "corpus file not found"),
        (["--rope", "no_such_module_here"], "cannot import 'no_such_module_here' for --rope"),
        (["--rope", "math"], "module 'math' has no function 'rope_cos_sin'"),
    ],
)
def test_cli_rejects_bad_arguments_in_one_line(args, fragment, capsys):
    try:
        code = main(["ladder", *args])
    except SystemExit as exc:  # argparse's own errors exit
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert fragment in err, err
