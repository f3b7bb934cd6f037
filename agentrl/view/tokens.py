"""Token ids to display text: one string per token whose concatenation is the decoded text.

Byte-level BPE tokens (GPT-2, Qwen, Llama 3, the tiny tokenizer) are byte strings; a character such as
``é`` or ``日`` can span two tokens, so decoding each id alone gives replacement characters. Here each id
maps to its bytes once (cached), and an incremental UTF-8 decoder walks the episode: a character is
shown on the token that completes it. Special and added tokens show their content. Tokenizers that are
not byte-level (SentencePiece) fall back to ``decode([id])`` per id, also cached.

The tokenizer is loaded with the ``tokenizers`` library from ``tokenizer.json`` when the folder has one
(milliseconds); transformers is imported only for folders without it.
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
    """Per-token display text for one tokenizer (or ``<id>`` placeholders when there is none).

    ``tokenizer`` is a ``tokenizers.Tokenizer`` (what ``from_dir`` loads from ``tokenizer.json``: a few
    milliseconds, no transformers import) or a transformers tokenizer (the fallback for folders without
    a ``tokenizer.json``).
    """

    def __init__(self, tokenizer: Any | None) -> None:
        self.tokenizer = tokenizer
        self._bytes: dict[int, bytes] = {}
        self.byte_level = False
        self._special: set[int] = set()
        if tokenizer is None:
            return
        if hasattr(tokenizer, "get_added_tokens_decoder"):  # tokenizers.Tokenizer
            self._special = set(tokenizer.get_added_tokens_decoder())
            decoder = tokenizer.decoder
            self._piece = tokenizer.id_to_token
        else:  # transformers PreTrainedTokenizer(Fast)
            self._special = set(getattr(tokenizer, "all_special_ids", []) or [])
            self._special |= set(getattr(tokenizer, "added_tokens_decoder", None) or {})
            decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
            self._piece = tokenizer.convert_ids_to_tokens
        self.byte_level = type(decoder).__name__ == "ByteLevel"

    @classmethod
    def from_dir(cls, path: str | Path) -> TokenText:
        path = Path(path)
        if not path.is_dir():
            return cls(None)
        try:
            if (path / "tokenizer.json").is_file():
                from tokenizers import Tokenizer

                return cls(Tokenizer.from_file(str(path / "tokenizer.json")))
            # transformers is a heavy import: only for folders without tokenizer.json
            from transformers import AutoTokenizer

            return cls(AutoTokenizer.from_pretrained(str(path)))
        except Exception as exc:  # a broken tokenizer folder should not take the viewer down
            log.warning("could not load the tokenizer in %s (%s); showing token ids instead", path, exc)
            return cls(None)

    def token_bytes(self, token_id: int) -> bytes:
        cached = self._bytes.get(token_id)
        if cached is not None:
            return cached
        out = self._token_bytes(token_id)
        self._bytes[token_id] = out
        return out

    def _token_bytes(self, token_id: int) -> bytes:
        if self.tokenizer is None:
            return f"<{token_id}>".encode()
        try:
            piece = self._piece(token_id)
        except Exception:  # ids outside the vocabulary are shown, not fatal
            piece = None
        if piece is None:
            return f"<unk:{token_id}>".encode()
        if token_id in self._special:
            return piece.encode("utf-8")
        table = _byte_decoder()
        if self.byte_level and all(ch in table for ch in piece):
            return bytes(table[ch] for ch in piece)
        try:
            return self.tokenizer.decode([token_id]).encode("utf-8")
        except Exception:
            return piece.encode("utf-8")

    def texts(self, token_ids: Sequence[int]) -> list[str]:
        """One string per token; ``"".join(texts(ids))`` is the decoded episode."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        out = [decoder.decode(self.token_bytes(int(t))) for t in token_ids]
        tail = decoder.decode(b"", final=True)
        if tail and out:
            out[-1] += tail
        return out
