"""Data parallelism with jax.sharding: one mesh axis "data", params replicated.

JAX is the distributed engine: under ``jit`` the batch-sharded loss yields
all-reduced gradients on every device. Multi-host runs call
``jax.distributed.initialize`` first; each process then loads only its own rows
of the global batch.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA = "data"


class ShardingError(ValueError):
    """The batch does not split evenly over the data-parallel devices."""


def init_distributed(dist_cfg) -> None:
    """``jax.distributed.initialize`` from the config (None fields: auto-detected).

    Nothing else to set for CPU processes: JAX's cross-process CPU collectives default
    to gloo over TCP (``jax_cpu_collectives_implementation``), which
    ``tests/experiments/test_distributed.py`` runs with 2 local processes.
    """
    if not dist_cfg.enabled or jax.distributed.is_initialized():
        return
    jax.distributed.initialize(
        coordinator_address=dist_cfg.coordinator_address,
        num_processes=dist_cfg.num_processes,
        process_id=dist_cfg.process_id,
    )


def make_mesh(n_data: int = -1) -> Mesh:
    """A 1-D mesh over ``n_data`` devices (-1: every device of every process)."""
    devices = jax.devices()
    if n_data == -1:
        n_data = len(devices)
    if not 1 <= n_data <= len(devices):
        raise ShardingError(
            f"mesh.data={n_data} but {len(devices)} device(s) are available; "
            "use -1 for all of them or a number between 1 and the device count"
        )
    return Mesh(np.asarray(devices[:n_data]), (DATA,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over "data", everything else whole."""
    return NamedSharding(mesh, PartitionSpec(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    n = mesh.shape[DATA]
    if batch_size % n:
        raise ShardingError(
            f"batch_size={batch_size} is not divisible by the {n} data-parallel devices; "
            f"use a multiple of {n} or set mesh.data to a divisor of {batch_size}"
        )


def local_rows(batch_size: int) -> slice:
    """This process's rows of a global batch (all of them on a single host)."""
    per_process = batch_size // jax.process_count()
    start = jax.process_index() * per_process
    return slice(start, start + per_process)


def put_batch(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """The global numpy ``batch`` as arrays sharded over the batch axis.

    Every process computes the same global batch (it is a pure function of seed and
    step) and contributes its own rows.
    """
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)
    rows = local_rows(len(next(iter(batch.values()))))
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)[rows], np.shape(v))
        for k, v in batch.items()
    }


def put_replicated(tree: Any, mesh: Mesh) -> Any:
    return jax.device_put(tree, replicated(mesh))
