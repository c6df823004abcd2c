"""The README's "Add a new cell" snippet runs as printed and gives a working cell."""

import os
import re

import jax
import numpy as np

import arch
from arch import protocol, registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_add_a_new_cell_snippet_runs_as_printed():
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text[text.index("## Add a new cell") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert code.count("arch.register(") == 1
    try:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
        model = arch.build("mycell", vocab_size=11, d_model=8, n_layers=2)
        x = jax.random.randint(jax.random.key(0), (2, 7), 0, 11)
        params = model.init(jax.random.key(1), x)
        y_rec, _ = protocol.recurrent_apply(model, params, x)
        np.testing.assert_allclose(y_rec, model.apply(params, x), atol=1e-5)
        rules = arch.param_rules(model, x)["backbone"]["blocks_0"]["mixer"]
        assert rules["decay"] == arch.params.SSM
    finally:
        if "mycell" in arch.ARCHS:
            registry.unregister("mycell")
