"""Test-session setup: the opt-in markers.

``slow`` tests run only with RUN_SLOW=1; ``gpu`` tests only on a GPU backend. Each skip
says why in the pytest summary (``-ra``).

The suite compiles hundreds of tiny programs and runs each only a few times, so XLA's
LLVM optimisation is most of its time: the tests compile at optimisation level 0
(about half the compile time, same float semantics), unless ``XLA_FLAGS`` already
chooses a level. Subprocesses the tests start inherit it.
"""

import os

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

import jax  # noqa: E402  (after XLA_FLAGS: the backend reads it when it starts)
import pytest


def pytest_collection_modifyitems(config, items):
    run_slow = os.environ.get("RUN_SLOW") == "1"
    on_gpu = jax.default_backend() == "gpu"
    skip_slow = pytest.mark.skip(reason="slow: set RUN_SLOW=1 to run it")
    skip_gpu = pytest.mark.skip(reason="needs a GPU backend (jax.default_backend() != 'gpu')")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not on_gpu:
            item.add_marker(skip_gpu)
