"""Every config file loads for every architecture and builds a model."""

import glob
import importlib.util
import os

import pytest

import arch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(
    p
    for p in glob.glob(os.path.join(ROOT, "configs", "*", "*.py"))
    if not os.path.basename(p).startswith("_") and os.path.basename(p) != "common.py"
)


def load(path):
    spec = importlib.util.spec_from_file_location("cfg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: os.path.relpath(p, ROOT))
def test_config_loads_for_every_arch(path):
    module = load(path)
    for name in arch.ARCHS:
        config = module.get_config(name)
        assert config.arch == name
        assert config.task.name
    with pytest.raises(ValueError, match="unknown architecture"):
        module.get_config("not_an_arch")
