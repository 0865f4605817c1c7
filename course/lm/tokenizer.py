"""A byte-level tokenizer: every UTF-8 byte is one token, so the vocabulary is exactly 256.

No training, no unknown tokens, and any text round-trips. Decoding a sequence that cuts a
multi-byte character in half uses `errors="replace"` so sampling never crashes on it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class ByteTokenizer:
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_tensor(self, text: str) -> torch.Tensor:
        """The ids as a LongTensor of shape (len,), ready to become a prompt."""
        return torch.tensor(self.encode(text), dtype=torch.long)

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.flatten().tolist()
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=256)"
