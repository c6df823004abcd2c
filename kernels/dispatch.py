"""Choosing one implementation of a recurrence by name.

Every public kernel keeps a small table ``{impl name: function}`` and a table of
per-backend defaults for ``impl="auto"``. Later implementations (chunked, Pallas)
register by adding a row, never by growing an if-chain.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax

AUTO = "auto"


def current_backend() -> str:
    """'cpu', 'gpu' or 'tpu' for the default JAX backend."""
    return jax.default_backend()


def pick(
    kernel: str,
    impls: Mapping[str, Callable],
    impl: str,
    auto: Mapping[str, str],
) -> Callable:
    """Return ``impls[impl]``; ``impl="auto"`` looks the backend up in ``auto``.

    ``auto`` maps a backend name ('cpu', 'gpu', 'tpu') to an implementation name;
    a backend missing from it falls back to ``auto['default']``.
    """
    if impl == AUTO:
        backend = current_backend()
        impl = auto.get(backend, auto["default"])
    try:
        return impls[impl]
    except KeyError:
        valid = ", ".join(sorted([*impls, AUTO]))
        raise ValueError(f"{kernel}: unknown impl={impl!r}; valid: {valid}") from None
