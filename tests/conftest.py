"""Test-session setup: the opt-in markers.

``slow`` tests run only with RUN_SLOW=1; ``gpu`` tests only on a GPU backend. Each skip
says why in the pytest summary (``-ra``).

The suite compiles hundreds of tiny programs and runs each only a few times, so XLA's
LLVM optimisation is most of its time: the tests compile at optimisation level 0
(about half the compile time, same float semantics), unless ``XLA_FLAGS`` already
chooses a level. Subprocesses the tests start inherit it.

The two xdist workers, the subprocesses (``run.py``) and the notebook kernels compile
many of the same programs (eager ops above all), so they share JAX's persistent
compilation cache: one directory per user in the temp dir, unless
``JAX_COMPILATION_CACHE_DIR`` names another. Entries are keyed by the program, the JAX
version and the flags, so a stale entry is never used for a different program.
"""

import os
import tempfile

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"subquadratic-tests-xla-cache-{os.getuid()}"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # tiny ops too

import jax  # noqa: E402  (after XLA_FLAGS: the backend reads it when it starts)
import pytest  # noqa: E402

# In case a plugin imported jax before this file set the environment.
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
    "jax_persistent_cache_min_compile_time_secs",
    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
)


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


@pytest.fixture(scope="session")
def hf_checkpoints(tmp_path_factory):
    """{kind: (directory, torch model)}: random transformers models written by
    save_pretrained (tests/hf_models.py), once per test worker."""
    pytest.importorskip("torch", reason="torch is a dev requirement (parity tests)")
    pytest.importorskip("transformers", reason="transformers is a dev requirement")
    from tests.hf_models import KINDS, save_random

    root = tmp_path_factory.mktemp("hf")
    return {kind: (str(root / kind), save_random(kind, str(root / kind))) for kind in KINDS}
