"""Fixtures shared by the experiment tests."""

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

TEXTS = ["Hello, world!", "  leading spaces and ümlauts ✓", "tabs\tand\nnewlines", ""]


@pytest.fixture(scope="session")
def tokenizer_json(tmp_path_factory):
    """A byte-level BPE (GPT-NeoX's kind) trained here on a few lines, with an
    <|endoftext|> token, saved as tokenizer.json."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(
        TEXTS * 20 + ["the quick brown fox jumps over the lazy dog"] * 20, trainer
    )
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


@pytest.fixture(scope="session")
def zeroshot_dir(tmp_path_factory):
    """The eight zero-shot tasks' files in their release layouts (zeroshot_fixtures.py)."""
    from tests.experiments.zeroshot_fixtures import write_task_files

    root = tmp_path_factory.mktemp("zeroshot")
    write_task_files(root)
    return root
