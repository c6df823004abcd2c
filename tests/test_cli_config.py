"""Command-line config handling, in-process: mixer options, overrides, per-arch recipes."""

import os

import pytest
from absl import flags as absl_flags
from ml_collections import config_flags

from experiments import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parsed(*argv):
    """A fresh absl FlagValues with run.py's --config flag, parsed from ``argv``."""
    rest, free = cli.split_free_form(["prog", *argv])
    values = absl_flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config",
        os.path.join(ROOT, cli.DEFAULT_CONFIG),
        "config",
        flag_values=values,
        lock_config=True,
        sys_argv=rest,  # config_flags defines the override flags it sees here
    )
    values(rest)
    cli.apply_free_form(values.config, free)
    return values


def test_mixer_options_are_settable_and_typed():
    values = parsed(
        "--config",
        os.path.join(ROOT, "configs/synthetic/mqar.py:mamba"),
        "--config.model.d_state=8",
        "--config.model.impl=sequential",
        "--config.model.d_model=32",
        "--config.task.options.seq_len=24",
        "--config.train.lr=0.5",
    )
    config = values.config
    assert config.model.d_state == 8 and config.model.impl == "sequential"
    assert config.model.d_model == 32 and isinstance(config.model.d_model, int)
    assert config.task.options.seq_len == 24 and config.train.lr == 0.5
    with pytest.raises(AttributeError):  # the rest of the config stays locked
        config.train.lrr = 1
    assert cli.command_line_overrides(values) == {
        "model.d_state": 8,
        "model.impl": "sequential",
        "model.d_model": 32,
        "task.options.seq_len": 24,
        "train.lr": 0.5,
    }


def test_a_typed_value_that_does_not_parse_is_one_line():
    with pytest.raises(ValueError, match=r"--config.model.n_layers=two: invalid literal"):
        parsed("--config.model.n_layers=two")


def test_unknown_key_message_lists_the_valid_keys_at_its_level():
    config = parsed().config
    message = cli._unknown_key_message("--config.train.lrr=1", config)
    assert message.startswith("unknown config key 'train.lrr'; valid at train: b1, b2")
    message = cli._unknown_key_message("--config.trian.lr=1", config)
    assert message.startswith("unknown config key 'trian.lr'; valid at the top level: arch")


def test_compare_gives_each_arch_its_own_lra_recipe():
    values = parsed(
        "--config", os.path.join(ROOT, "configs/lra/listops.py:s4,smoke"), "--config.train.steps=3"
    )
    s4d = cli.config_for_arch(values, "s4d")
    transformer = cli.config_for_arch(values, "transformer")
    mamba = cli.config_for_arch(values, "mamba")
    assert s4d.arch == "s4d" and transformer.arch == "transformer"
    assert transformer.train.lr == 0.05 and transformer.train.schedule == "rsqrt"  # LRA paper
    assert "d_state" not in transformer.model
    assert s4d.train.lr == 0.01 and s4d.model.d_state == 4  # the S4 ListOps row
    assert mamba.model.d_state == 8  # 16 from its recipe, capped by the smoke variant
    assert s4d.train.steps == transformer.train.steps == 3  # the command line on top
    assert transformer.model.d_model == 32  # still the smoke variant


def test_data_dir_reaches_the_task_options(monkeypatch):
    from experiments import train as train_lib

    seen = {}
    monkeypatch.setattr(train_lib, "train", lambda config, workdir: seen.update(c=config) or {})
    values = parsed("--config", os.path.join(ROOT, "configs/lra/listops.py:s4d,smoke"))
    absl_flags.DEFINE_string("data_dir", "data", "d", flag_values=values)
    absl_flags.DEFINE_string("workdir", None, "w", flag_values=values)
    values(["prog", "--data_dir", "/data/lra", "--workdir", "/tmp/x"])
    cli.cmd_train([], values)
    assert seen["c"].task.options.data_dir == "/data/lra"
