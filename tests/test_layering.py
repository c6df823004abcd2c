"""The layers of DESIGN.md import only downward: kernels < arch < experiments < configs < run.py.

Every import statement counts, including the deferred ones inside functions.
"""

import ast
import glob
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = ("kernels", "arch", "experiments", "configs", "run")


def _imports(path):
    tree = ast.parse(open(path).read(), filename=path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def _files(layer):
    if layer == "run":
        return [os.path.join(ROOT, "run.py")]
    return glob.glob(os.path.join(ROOT, layer, "**", "*.py"), recursive=True)


@pytest.mark.parametrize("layer", LAYERS)
def test_no_layer_imports_a_layer_above_it(layer):
    above = set(LAYERS[LAYERS.index(layer) + 1 :])
    found = []
    for path in _files(layer):
        for name in _imports(path):
            top = name.split(".")[0]
            if top in above:
                found.append(f"{os.path.relpath(path, ROOT)} imports {name}")
    assert _files(layer), layer
    assert not found, "back-arrows:\n" + "\n".join(found)
