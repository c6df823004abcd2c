"""A new cell in one file: one class and one ``register`` call reach every entry point.

The toy cell below is a diagonal linear recurrence with a learned decay. It declares
its own optimizer rule (``decay`` frozen through a learning-rate multiplier of 0), and
the tests train it by name through ``train``, ``compare`` and ``bench`` and check that
the rule reached the optimizer.
"""

import json
import os
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import arch
from arch import params as P
from arch import protocol, registry
from kernels.linear_scan import linear_scan

FROZEN = P.ParamRule(base="ssm_lr", lr_mult=0.0)


class ToyState(NamedTuple):
    h: jax.Array  # [B, d_model]


class ToyCell(nn.Module):
    """h_t = sigmoid(decay) * h_{t-1} + W_in x_t,  y_t = W_out h_t."""

    d_model: int
    layer_id: int = 0
    n_layers: int = 1

    PARAM_RULES: ClassVar = {"decay": FROZEN}

    def setup(self):
        self.decay = self.param("decay", nn.initializers.constant(0.5), (self.d_model,))
        self.inp = nn.Dense(self.d_model)
        self.out = nn.Dense(self.d_model)

    def __call__(self, x, *, train: bool = False):
        return self.prefill(self.init_state(x.shape[0]), x)[1]

    def init_state(self, batch_size: int) -> ToyState:
        return ToyState(jnp.zeros((batch_size, self.d_model), jnp.float32))

    def prefill(self, state: ToyState, x):
        b = self.inp(x)
        hs, h = linear_scan(jnp.broadcast_to(nn.sigmoid(self.decay), b.shape), b, state.h)
        return ToyState(h), self.out(hs)

    def step(self, state: ToyState, x_t):
        return protocol.step_via_prefill(self, state, x_t)


@pytest.fixture(scope="module")
def toy():
    arch.register("toy", arch.ArchSpec(ToyCell, channel="glu", doc="a test cell"))
    yield "toy"
    registry.unregister("toy")


def tiny_mqar(name):
    from configs.synthetic import mqar

    config = mqar.get_config(name)
    config.train.steps, config.train.warmup_steps = 4, 1
    config.train.log_every = config.train.eval_every = config.train.checkpoint_every = 2
    config.train.eval_steps, config.train.progress, config.train.tensorboard = 1, False, False
    config.model.d_model = 16
    return config


def test_registered_cell_keeps_the_protocol(toy):
    assert toy in arch.ARCHS and toy in registry.names(compare=True)
    model = arch.build(toy, vocab_size=11, d_model=8, n_layers=2)
    x = jax.random.randint(jax.random.key(0), (2, 7), 0, 11)
    params = jax.jit(model.init)(jax.random.key(1), x)
    y = model.apply(params, x)
    y_rec, _ = protocol.recurrent_apply(model, params, x)
    y_pre, _ = protocol.prefill_then_step(model, params, x, split=3)
    np.testing.assert_allclose(y_rec, y, atol=1e-5)
    np.testing.assert_allclose(y_pre, y, atol=1e-5)


def test_train_by_name_uses_the_cells_own_rules(toy, tmp_path):
    from experiments import checkpoint, optim
    from experiments.train import train

    config = tiny_mqar(toy)
    model = arch.build(toy, vocab_size=config.task.options.vocab_size, d_model=16, n_layers=2)
    rules = arch.param_rules(model, jnp.zeros((1, 4), jnp.int32))
    assert rules["backbone"]["blocks_0"]["mixer"]["decay"] == FROZEN
    assert FROZEN.key in optim.groups(rules)

    results = train(config, str(tmp_path))
    assert results["config"]["arch"] == toy and np.isfinite(results["final"]["eval_loss"])
    ckpts = checkpoint.Checkpoints(str(tmp_path / "checkpoints"), keep=2)
    try:
        trained = ckpts.load()["params"]["backbone"]["blocks_0"]["mixer"]
    finally:
        ckpts.close()
    init = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]
    # The frozen rule reached the optimizer; the default-rule kernel did train.
    np.testing.assert_array_equal(trained["decay"], np.full(16, 0.5, np.float32))
    assert not np.allclose(
        trained["inp"]["kernel"], init["backbone"]["blocks_0"]["mixer"]["inp"]["kernel"]
    )


def test_compare_and_bench_by_name(toy, tmp_path):
    from experiments import bench_models
    from experiments.compare import compare

    rows = compare(tiny_mqar(toy), [toy, "aft_simple"], str(tmp_path / "compare"))
    assert [r["arch"] for r in rows] == [toy, "aft_simple"]
    assert all(np.isfinite(r["loss"]) for r in rows)
    assert rows[0]["state_per_layer"] > 0  # the recurrent state, counted from init_state
    assert rows[0]["lr"] == tiny_mqar(toy).train.lr
    with open(tmp_path / "compare" / toy / "results.json") as f:
        assert json.load(f)["config"]["arch"] == toy
    table = (tmp_path / "compare" / "comparison.md").read_text()
    assert "accuracy and loss on the validation split after the last step" in table
    again = compare(tiny_mqar(toy), [toy, "aft_simple"], str(tmp_path / "compare"))
    assert again == rows  # read back from results.json: nothing retrained
    assert (tmp_path / "compare" / "comparison.md").read_text() == table

    train_rows = bench_models.bench_train([toy], [8], str(tmp_path / "bench"), repeats=1)
    gen_rows = bench_models.bench_generate([toy], [4], str(tmp_path / "gen"), repeats=1)
    assert train_rows[0]["arch"] == toy and train_rows[0]["seconds"] > 0
    assert gen_rows[0]["state_kib"] > 0
    assert toy in bench_models.default_archs()
    assert os.path.exists(tmp_path / "bench" / "train_bench.csv")


def test_lra_config_needs_the_cells_recipe(toy):
    from configs.lra import listops

    with pytest.raises(
        ValueError, match=r"'toy' has no 'lra' recipe.*'lr': \.\.\., 'weight_decay'"
    ):
        listops.get_config(toy)
    arch.register("toy_lra", arch.ArchSpec(ToyCell, recipes={"lra": {"lr": 1e-3}}), replace=True)
    try:
        with pytest.raises(ValueError, match="recipe of 'toy_lra' has no 'weight_decay'"):
            listops.get_config("toy_lra")
        arch.register(
            "toy_lra",
            arch.ArchSpec(
                ToyCell, recipes={"lra": {"lr": 1e-3, "weight_decay": registry.FROM_TASK}}
            ),
            replace=True,
        )
        config = listops.get_config("toy_lra,smoke")
        assert config.train.lr == 1e-3 and config.train.weight_decay == 0.05  # the S4 table
        assert config.model.bidirectional is False  # ToyCell has no causal field
    finally:
        registry.unregister("toy_lra")


def test_register_rejects_malformed_specs(toy):
    with pytest.raises(ValueError, match="already registered; pass replace=True"):
        arch.register(toy, arch.ArchSpec(ToyCell))

    class NoStep(nn.Module):
        d_model: int
        layer_id: int = 0
        n_layers: int = 1

        def __call__(self, x):
            return x

    with pytest.raises(TypeError, match="lacks init_state, prefill, step"):
        arch.register("nostep", arch.ArchSpec(NoStep))

    class Shadowing(ToyCell):
        init: str = "zeros"  # would hide flax's Module.init

    with pytest.raises(TypeError, match="field named init, which hides flax's Module"):
        arch.register("shadowing", arch.ArchSpec(Shadowing))
    with pytest.raises(ValueError, match="unknown channel mixer of 'bad'"):
        arch.register("bad", arch.ArchSpec(ToyCell, channel="kan"))
    with pytest.raises(ValueError, match="unknown lra recipe field of 'bad' 'lr_decay'"):
        arch.register("bad", arch.ArchSpec(ToyCell, recipes={"lra": {"lr_decay": 1}}))
    assert not {"nostep", "bad", "shadowing"} & set(arch.ARCHS)
