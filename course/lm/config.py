"""The configuration every language model in the course is built from.

It lives on the student side so that a learner's own model (lesson 08) and the
reference model take the same object, and the training harness can build
either one from a preset. Field names follow the usual ones (nanoGPT, Hugging Face, PyTorch):
`n_kv_heads`, `rope_theta`, `norm_eps`, `gelu_approximate` (F.gelu's `approximate`)...
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Literal

NormPosition = Literal["pre", "post"]
Positional = Literal["rope", "sinusoidal", "learned", "alibi", "none"]
FFNType = Literal["swiglu", "gelu"]
AttentionBackend = Literal["reference", "sdpa"]
RopeLayout = Literal["interleaved", "half"]
GeluApproximate = Literal["none", "tanh"]

CHOICES = {
    "norm_position": ("pre", "post"),
    "positional": ("rope", "sinusoidal", "learned", "alibi", "none"),
    "ffn": ("swiglu", "gelu"),
    "attention": ("reference", "sdpa"),
    "norm": ("layernorm", "rmsnorm"),
    "rope_layout": ("interleaved", "half"),
    "gelu_approximate": ("none", "tanh"),
}

# What a config saved before a field existed meant by leaving it out: checkpoints and presets
# written then load with the behaviour they were trained with. (RMSNorm's eps was 1e-6 and
# LayerNorm's 1e-5 before `norm_eps` became a field.)
LEGACY_DEFAULTS = {
    "rope_layout": lambda data: "interleaved",
    "gelu_approximate": lambda data: "none",
    "norm_eps": lambda data: 1e-5 if data.get("norm") == "layernorm" else 1e-6,
}


@dataclass
class ModelConfig:
    vocab_size: int = 256
    context_length: int = 256
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None  # None means n_heads (plain multi-head attention)
    d_ff: int | None = None  # None means a width chosen by the FFN type
    norm_position: NormPosition = "pre"
    positional: Positional = "rope"
    ffn: FFNType = "swiglu"
    tie_embeddings: bool = True
    dropout: float = 0.0
    attention: AttentionBackend = "sdpa"
    rope_theta: float = 10000.0
    norm: Literal["layernorm", "rmsnorm"] = "rmsnorm"
    bias: bool = False  # bias vectors in the linear layers and LayerNorms
    # Which dimensions RoPE pairs: (2i, 2i+1) "interleaved" (RoFormer, Meta's Llama) or
    # (i, i + head_dim/2) "half" (GPT-NeoX, Hugging Face Llama).
    rope_layout: RopeLayout = "interleaved"
    norm_eps: float = 1e-5  # inside the norm's square root; Llama 2 and CS336 use 1e-5
    gelu_approximate: GeluApproximate = "none"  # "tanh" is GPT-2's GELU

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}"
            )
        if not (math.isfinite(self.norm_eps) and self.norm_eps > 0):
            raise ValueError(f"norm_eps must be a positive number, got {self.norm_eps}")
        if self.d_ff is None:
            # SwiGLU has three matrices instead of two: 8/3 * d keeps the parameter count of 4 * d.
            width = 4 * self.d_model if self.ffn == "gelu" else int(8 * self.d_model / 3)
            self.d_ff = 32 * ((width + 31) // 32)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """Rebuild a config saved by `to_dict`; fields it lacks (an older save) take the value
        that save meant (`LEGACY_DEFAULTS`). Raises ValueError for unknown keys or bad values."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        data = dict(data)
        for name, legacy in LEGACY_DEFAULTS.items():
            if name not in data:
                data[name] = legacy(data)
        return cls(**data)
