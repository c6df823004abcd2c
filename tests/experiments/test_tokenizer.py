"""Tokenizers: byte-level and tokenizer.json round trips, ids as the library gives them,
and one clear line for a missing or wrong file."""

import pytest
from tokenizers import Tokenizer

from experiments.tokenizer import ByteTokenizer, load_tokenizer
from tests.experiments.conftest import TEXTS


@pytest.mark.parametrize("text", TEXTS)
def test_byte_tokenizer_round_trips_utf8(text):
    tok = load_tokenizer("byte")
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8")) and all(0 <= i < 256 for i in ids)
    assert tok.decode(ids) == text


def test_byte_tokenizer_decodes_a_cut_character_without_failing():
    ids = ByteTokenizer().encode("✓")[:2]  # 3 UTF-8 bytes, the last one missing
    assert ByteTokenizer().decode(ids) == "\ufffd"
    with pytest.raises(ValueError, match=r"ids must be in \[0, 256\)"):
        ByteTokenizer().decode([300])


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_json_round_trips_and_matches_the_library(tokenizer_json, text):
    ours = load_tokenizer(str(tokenizer_json))
    theirs = Tokenizer.from_file(str(tokenizer_json))
    ids = ours.encode(text)
    assert ids == theirs.encode(text, add_special_tokens=False).ids
    assert ours.decode(ids) == text
    assert ours.vocab_size == theirs.get_vocab_size() and ours.eos_id == 0


def test_a_checkpoint_directory_is_read_through_its_tokenizer_json(tokenizer_json):
    tok = load_tokenizer(str(tokenizer_json.parent))
    assert (tok.name, tok.eos_id) == (str(tokenizer_json), 0)
    assert len(tok.encode("the quick brown fox")) < len("the quick brown fox")  # merges used


def test_missing_or_wrong_files_get_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file; give 'byte' or the path"):
        load_tokenizer(str(tmp_path / "nope.json"))
    with pytest.raises(FileNotFoundError, match="has no tokenizer.json"):
        load_tokenizer(str(tmp_path))
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match="not a tokenizer.json"):
        load_tokenizer(str(tmp_path / "vocab.txt"))
    (tmp_path / "bad.json").write_text('{"model": 3}')
    with pytest.raises(ValueError, match="not a tokenizer.json that the tokenizers library"):
        load_tokenizer(str(tmp_path / "bad.json"))
