"""Choosing one implementation of a recurrence by name, and the backend it runs on.

Every public kernel keeps a small table ``IMPLS = {impl name: function}`` and a table
``AUTO`` of per-backend defaults for ``impl="auto"``. A new implementation registers by
adding a row, never by growing an if-chain. Options that only one implementation takes
(a chunk size, a Pallas block size) are that function's keyword-only parameters, and
``call`` passes them through from the public function after checking their names.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping

import jax

AUTO = "auto"


def backend() -> str:
    """'cpu', 'gpu' or 'tpu' for the default JAX backend.

    The one place the kernels ask; tests that pretend to be on a GPU monkeypatch it.
    """
    return jax.default_backend()


def resolve(kernel: str, impls: Mapping[str, Callable], impl: str, auto: Mapping[str, str]) -> str:
    """The implementation name ``impl`` stands for; ``"auto"`` looks the backend up in
    ``auto`` (a backend missing from it falls back to ``auto['default']``)."""
    if impl == AUTO:
        impl = auto.get(backend(), auto["default"])
    if impl not in impls:
        valid = ", ".join(sorted([*impls, AUTO]))
        raise ValueError(f"{kernel}: unknown impl={impl!r}; valid: {valid}")
    return impl


def pick(
    kernel: str,
    impls: Mapping[str, Callable],
    impl: str,
    auto: Mapping[str, str],
) -> Callable:
    """Return the function ``impl`` names (see ``resolve``)."""
    return impls[resolve(kernel, impls, impl, auto)]


def call(
    kernel: str,
    impls: Mapping[str, Callable],
    impl: str,
    auto: Mapping[str, str],
    *args,
    **options,
):
    """``fn(*args, **options)`` for the function ``impl`` names.

    ``options`` must be keyword-only parameters of that function: an option meant for
    another implementation (``chunk_size`` with ``impl="pallas"``) is an error rather
    than silently ignored.
    """
    name = resolve(kernel, impls, impl, auto)
    fn = impls[name]
    accepted = [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"{kernel}: impl={name!r} takes no option {', '.join(unknown)}; "
            f"its options: {', '.join(accepted) or 'none'}"
        )
    return fn(*args, **options)
