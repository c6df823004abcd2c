"""Bad input gives one clear line naming the fix (docs/bad_inputs.md lists every case).

The cheap cases run in-process here; the command-line ones are in tests/test_cli.py,
the run-directory ones in tests/experiments/test_rundir.py and test_resume.py.
"""

import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from configs.base import get_config, override
from experiments import cli, lra_table
from experiments import train as train_lib
from experiments.lra.common import DataMissingError
from experiments.lra.listops import read_split
from tests.experiments.test_train import TinyModel, TinyTask, tiny_config


def _raises(error, match, fn, *args, **kwargs):
    with pytest.raises(error, match=match) as caught:
        fn(*args, **kwargs)
    text = str(caught.value)
    assert "\n" not in text.strip() or text.count("\n") <= 1, text  # one or two lines
    return text


API_CASES = {
    "unknown architecture": (
        lambda: arch.build("gpt5", vocab_size=8),
        "unknown architecture 'gpt5'; valid: aft_conv",
    ),
    "non-positive width": (
        lambda: arch.build("mamba", vocab_size=8, d_model=0),
        r"d_model=0 must be a positive int",
    ),
    "non-positive vocabulary": (
        lambda: arch.build("mamba", vocab_size=-3),
        r"vocab_size=-3 must be a positive int",
    ),
    "dropout out of range": (
        lambda: arch.build("mamba", vocab_size=8, dropout=1.5),
        r"dropout=1.5 must be in \[0, 1\)",
    ),
    "option of another mixer": (
        lambda: arch.build("mamba", vocab_size=8, n_heads=2),
        "unknown option.* n_heads; the Mamba mixer takes: .*d_state",
    ),
    "unknown head": (
        lambda: arch.build("mamba", vocab_size=8, head="regress"),
        "unknown head 'regress'; valid: classify, lm, retrieval",
    ),
    "bidirectional without a bidirectional form": (
        lambda: arch.build("rwkv", vocab_size=8, head="classify", n_classes=2, bidirectional=True),
        "rwkv has no bidirectional form; valid bidirectional archs: transformer",
    ),
    "heads that do not divide the width": (
        lambda: arch.build("transformer", vocab_size=8, d_model=16, n_heads=3),
        "d_model=16 is not divisible by n_heads=3",
    ),
    "both token and feature inputs": (
        lambda: arch.build("mamba", vocab_size=8, d_input=3),
        "give exactly one of vocab_size",
    ),
    "unknown config key": (
        lambda: override(get_config(), {"train.lrr": 1.0}),
        "unknown config key 'train.lrr'; valid here: .*lr",
    ),
}


@pytest.mark.parametrize("case", sorted(API_CASES))
def test_api_errors_are_one_line(case):
    fn, match = API_CASES[case]
    _raises((ValueError, KeyError), match, fn)


def test_token_ids_outside_the_vocabulary_are_refused():
    model = arch.build("s4d", vocab_size=8, d_model=8, n_layers=1)
    ok = jnp.zeros((1, 4), jnp.int32)
    params = jax.jit(model.init)(jax.random.key(0), ok)
    bad = ok.at[0, 2].set(8)
    _raises(ValueError, r"token id 8 is outside the vocabulary \[0, 8\)", model.apply, params, bad)
    _raises(ValueError, r"token id -1 is outside", model.apply, params, ok.at[0, 0].set(-1))
    # Under jit the values are unknown: the check is the training loop's (below).
    assert jax.jit(model.apply)(params, ok).shape == (1, 4, 8)


def test_training_data_outside_the_vocabulary_stops_the_run(tmp_path):
    class BadTokens(TinyTask):
        def batch(self, split, step, batch_size, seed):
            batch = super().batch(split, step, batch_size, seed)
            if split == "train" and step == 1:
                batch["inputs"] = batch["inputs"].copy()
                batch["inputs"][0, 0] = self.spec.vocab_size
            return batch

    _raises(
        train_lib.TrainingError,
        "token id 11 in the train batch of step 1 is outside the vocabulary",
        train_lib.train,
        tiny_config(),
        str(tmp_path),
        model=TinyModel(),
        task=BadTokens(),
    )


def test_input_longer_than_max_len_is_refused():
    model = arch.build("transformer", vocab_size=8, d_model=8, n_layers=1, max_len=8)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
    _raises(ValueError, "length 9 exceeds max_len=8", model.apply, params, jnp.zeros((1, 9), int))


def test_config_argument_errors():
    from configs.lra import listops

    _raises(ValueError, "unknown architecture 'mambo' after ':'", listops.get_config, "mambo")
    _raises(ValueError, "expected 'arch' or 'arch,variant'", listops.get_config, "s4,huge")


def test_bench_lengths_must_be_positive():
    flags = types.SimpleNamespace(lengths=["0"], out=None, archs=["s4d"])
    _raises(ValueError, "every length must be a positive integer", cli.cmd_bench, ["train"], flags)
    flags.lengths = ["1k"]
    _raises(ValueError, "give integers", cli.cmd_bench, ["train"], flags)
    flags.lengths, flags.batches = None, ["1", "x"]
    _raises(ValueError, "--batches 1,x: give integers", cli.cmd_bench, ["throughput"], flags)
    flags.batches, flags.d_model = None, 0
    message = "--d_model .0.: every d_model must be a positive"
    _raises(ValueError, message, cli.cmd_bench, ["train"], flags)
    flags.d_model = 64
    _raises(ValueError, "bench kernels has a fixed layout", cli.cmd_bench, ["kernels"], flags)
    flags.d_model, flags.batch = None, 4
    message = "takes --batches .a list., not --batch"
    _raises(ValueError, message, cli.cmd_bench, ["throughput"], flags)
    flags.batch, flags.time_chunk = None, ["1024"]
    message = "--time_chunk is an option of bench train, not of bench generate"
    _raises(ValueError, message, cli.cmd_bench, ["generate"], flags)
    flags.time_chunk = ["128", "-8"]
    message = "--time_chunk .128, -8.: every chunk length must be a positive integer"
    _raises(ValueError, message, cli.cmd_bench, ["train"], flags)
    flags.time_chunk = ["128x"]
    message = "--time_chunk 128x: give integers, e.g. 128,512"
    _raises(ValueError, message, cli.cmd_bench, ["train"], flags)


def test_corrupt_listops_row_names_file_and_line(tmp_path):
    path = tmp_path / "basic_train.tsv"
    path.write_text("Source\tTarget\n( [MAX 2 3 ] )\t3\n( [MIN 2 ] )\n")
    _raises(
        DataMissingError,
        r"basic_train.tsv, line 3: not 'expression<TAB>label",
        read_split,
        str(path),
    )
    path.write_text("Source\tTarget\n( [MAX 2 3 ] )\t12\n")
    _raises(DataMissingError, "line 2: .*label 12 is not in 0..9", read_split, str(path))
    path.write_text("x\ty\n")
    _raises(DataMissingError, "expected a header 'Source<TAB>Target'", read_split, str(path))


def test_table_skips_an_unreadable_results_file(tmp_path, capsys):
    run = tmp_path / "runs" / "broken"
    run.mkdir(parents=True)
    (run / "results.json").write_text('{"config": {"arch": "s4", "task": {"name": "lis')
    good = tmp_path / "runs" / "good"
    good.mkdir()
    results = {
        "config": {"arch": "s4", "task": {"name": "listops"}},
        "best": {"step": 1, "eval_loss": 1.0, "eval_accuracy": 0.4, "test_accuracy": 0.5},
    }
    (good / "results.json").write_text(json.dumps(results))
    scores, _ = lra_table.collect(str(tmp_path / "runs"))
    assert scores == {"s4": {"listops": 50.0}}
    assert f"skipped {run / 'results.json'}: unreadable" in capsys.readouterr().out
    assert os.path.exists(run / "results.json")  # reported, not touched


def test_malformed_multiplier_list():
    model = arch.build("s4d", vocab_size=8, d_model=8, n_layers=1)
    _raises(
        ValueError,
        r"train.wd_mults: each entry must be \(regex, multiplier\)",
        arch.param_rules,
        model,
        jnp.zeros((1, 4), jnp.int32),
        wd_mults=[(".*", "lots")],
    )


@pytest.mark.parametrize("name", ["transformer", "aft_full", "aft_local"])
def test_stepping_past_max_len_is_never_silent(name):
    model = arch.build(name, vocab_size=8, d_model=8, n_layers=1, max_len=4)
    tokens = jnp.zeros((1, 4), jnp.int32)
    params = jax.jit(model.init)(jax.random.key(0), tokens)
    state = model.apply(params, 1, method="init_state")
    state, _ = model.apply(params, state, tokens, method="prefill")  # the cache is full
    _raises(
        ValueError,
        "position 4 is past max_len=4",
        model.apply,
        params,
        state,
        tokens[:, 0],
        method="step",
    )
    step = jax.jit(lambda p, s, t: model.apply(p, s, t, method="step"))
    _, logits = step(params, state, tokens[:, 0])  # traced position: NaN, not garbage
    assert np.isnan(np.asarray(logits)).all()
    _, logits = step(params, model.apply(params, 1, method="init_state"), tokens[:, 0])
    assert np.isfinite(np.asarray(logits)).all()
