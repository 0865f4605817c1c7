"""The configuration every language model in the course is built from.

It lives on the student side so that a learner's own model (lesson 08) and the
reference model take the same object, and the training harness can build
either one from a preset.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Literal

NormPosition = Literal["pre", "post"]
Positional = Literal["rope", "sinusoidal", "learned", "alibi", "none"]
FFNType = Literal["swiglu", "gelu"]
AttentionBackend = Literal["reference", "sdpa"]


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
    bias: bool = False

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}"
            )
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
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**data)
