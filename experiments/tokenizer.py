"""Text <-> token ids: one small interface for data preparation, evaluation and generation.

Two kinds, chosen by ``load_tokenizer(spec)``:

- ``"byte"`` (the default): the UTF-8 bytes, 256 ids, no file and no training; decoding
  replaces an incomplete or invalid byte sequence with U+FFFD instead of failing, so a
  generated prefix always prints.
- a ``tokenizer.json`` (or a directory holding one), read with Hugging Face's
  ``tokenizers`` library: e.g. the GPT-NeoX-20B BPE that Pythia, RWKV-4 (Pile models)
  and Mamba use (50,277 ids with its added tokens; Black et al. 2022, section 3.1). The
  user supplies the file: nothing is downloaded.

Encoding adds no special tokens (no BOS/EOS): lm-evaluation-harness scores a
continuation by the tokens of the text itself, and data preparation adds the
end-of-text id between documents explicitly (``eos_id``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol


class Tokenizer(Protocol):
    name: str
    vocab_size: int
    eos_id: int | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255; no end-of-text id."""

    name = "byte"
    vocab_size = 256
    eos_id = None

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        bad = [i for i in ids if not 0 <= int(i) < 256]
        if bad:
            raise ValueError(f"byte tokenizer: ids must be in [0, 256), got {bad[:5]}")
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


# End-of-document tokens of common tokenizer.json files, in the order they are tried.
EOS_TOKENS = ("<|endoftext|>", "</s>", "<eos>")


class HFTokenizer:
    """A ``tokenizers.Tokenizer`` read from a tokenizer.json."""

    def __init__(self, path: str):
        try:
            from tokenizers import Tokenizer as _Tokenizer
        except ImportError:
            raise ImportError(
                "reading a tokenizer.json needs the tokenizers package: pip install -r "
                "requirements.txt"
            ) from None
        try:
            self._tok = _Tokenizer.from_file(path)
        except Exception as err:  # noqa: BLE001 - the library raises a bare Exception
            raise ValueError(
                f"{path}: not a tokenizer.json that the tokenizers library can read "
                f"({str(err).splitlines()[0][:120]})"
            ) from None
        self.name = path
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        ids = (self._tok.token_to_id(t) for t in EOS_TOKENS)
        self.eos_id = next((i for i in ids if i is not None), None)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)


def load_tokenizer(spec: str | None = "byte") -> Tokenizer:
    """``"byte"`` (or None), a tokenizer.json path, or a directory holding tokenizer.json
    (a checkpoint directory written by ``save_pretrained``)."""
    if spec in (None, "", "byte"):
        return ByteTokenizer()
    path = os.path.join(spec, "tokenizer.json") if os.path.isdir(spec) else spec
    if not os.path.exists(path):
        where = f"{spec} has no tokenizer.json" if os.path.isdir(spec) else f"{spec}: no such file"
        raise FileNotFoundError(
            f"tokenizer {where}; give 'byte' or the path of a tokenizer.json (e.g. the "
            "GPT-NeoX-20B one that Pythia, RWKV-4 and Mamba use)"
        )
    with open(path, "rb") as f:
        head = f.read(1)
    if head != b"{":
        raise ValueError(f"{path}: not a tokenizer.json (JSON object expected)")
    return HFTokenizer(path)
