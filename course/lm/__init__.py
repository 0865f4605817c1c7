"""Model-agnostic language-model machinery: corpora, tokenizer, training, sampling."""

from course.lm.config import ModelConfig

__all__ = ["ModelConfig"]
