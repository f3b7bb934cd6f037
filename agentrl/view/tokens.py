"""Token ids to display text: one string per token whose concatenation is the decoded text.

Byte-level BPE tokens (GPT-2, Qwen, Llama 3, the tiny tokenizer) are byte strings; a character such as
``é`` or ``日`` can span two tokens, so decoding each id alone gives replacement characters. Here each id
maps to its bytes once (cached), and an incremental UTF-8 decoder walks the episode: a character is
shown on the token that completes it. Special and added tokens show their content. Tokenizers that are
not byte-level (SentencePiece) fall back to ``decode([id])`` per id, also cached.

transformers is imported only when a tokenizer folder is first used, so importing the viewer stays cheap.
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode table (printable stand-ins for the 256 byte values)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


class TokenText:
    """Per-token display text for one tokenizer (or ``<id>`` placeholders when there is none)."""

    def __init__(self, tokenizer: Any | None) -> None:
        self.tokenizer = tokenizer
        self._bytes: dict[int, bytes] = {}
        self.byte_level = False
        self._special: set[int] = set()
        if tokenizer is not None:
            self._special = set(getattr(tokenizer, "all_special_ids", []) or [])
            added = getattr(tokenizer, "added_tokens_decoder", None) or {}
            self._special |= set(added)
            decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
            self.byte_level = type(decoder).__name__ == "ByteLevel"

    @classmethod
    def from_dir(cls, path: str | Path) -> TokenText:
        path = Path(path)
        if not path.is_dir():
            return cls(None)
        try:
            from transformers import AutoTokenizer  # lazy: pulls in torch-free but heavy modules

            return cls(AutoTokenizer.from_pretrained(str(path)))
        except Exception as exc:  # a broken tokenizer folder should not take the viewer down
            log.warning("could not load the tokenizer in %s (%s); showing token ids instead", path, exc)
            return cls(None)

    def token_bytes(self, token_id: int) -> bytes:
        cached = self._bytes.get(token_id)
        if cached is not None:
            return cached
        tok = self.tokenizer
        if tok is None:
            out = f"<{token_id}>".encode()
        else:
            out = b""
            piece = None
            try:
                piece = tok.convert_ids_to_tokens(token_id)
            except Exception:  # ids outside the vocabulary are shown, not fatal
                piece = None
            if piece is None:
                out = f"<unk:{token_id}>".encode()
            elif token_id in self._special or not self.byte_level:
                if token_id in self._special:
                    out = piece.encode("utf-8")
                else:
                    out = tok.decode([token_id]).encode("utf-8")
            else:
                table = _byte_decoder()
                if all(ch in table for ch in piece):
                    out = bytes(table[ch] for ch in piece)
                else:
                    out = tok.decode([token_id]).encode("utf-8")
        self._bytes[token_id] = out
        return out

    def texts(self, token_ids: Sequence[int]) -> list[str]:
        """One string per token; ``"".join(texts(ids))`` is the decoded episode."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        out = [decoder.decode(self.token_bytes(int(t))) for t in token_ids]
        tail = decoder.decode(b"", final=True)
        if tail and out:
            out[-1] += tail
        return out
