"""Where a sweep's runs execute. Each backend maps ``sweep.run_spec`` over the runs.

No scheduler of our own: one process (``workers=1``) or a process pool, a Ray cluster
(each run a Ray task, ``ray.init(address)``), or SLURM through submitit (a job array).
Every run is an ordinary run directory, so whichever backend ran it, killing the sweep
and starting it again resumes exactly; a backend only decides where ``run_spec`` runs.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any

# ROOT: the repository; workers in other processes import `experiments` from there.
from experiments.sweep import ROOT, RunSpec, SweepError, run_spec


def _with_progress_off(specs: Sequence[RunSpec]) -> list[RunSpec]:
    """Runs in other processes print no progress bars (they would interleave);
    ``train.progress`` is a bookkeeping field, so this never blocks a resume."""
    return [
        RunSpec(s.name, s.workdir, s.config_file, (*s.overrides, ("train.progress", False)))
        for s in specs
    ]


def run_local(sweep, root: str, specs: Sequence[RunSpec]) -> list[dict[str, Any]]:
    """``workers`` runs at a time: 1 runs them here, in order; more uses spawned worker
    processes (not forked: XLA's thread pools do not survive a fork)."""
    if sweep.workers == 1:
        outcomes = []
        for i, spec in enumerate(specs, 1):
            print(f"== [{i}/{len(specs)}] {spec.name}", flush=True)
            outcomes.append(_report(run_spec(spec)))
        return outcomes
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(sweep.workers, mp_context=context) as pool:
        futures = [pool.submit(run_spec, s) for s in _with_progress_off(specs)]
        return [_report(f.result()) for f in concurrent.futures.as_completed(futures)]


def run_ray(sweep, root: str, specs: Sequence[RunSpec]) -> list[dict[str, Any]]:
    """Each run a Ray task on ``ray.init(ray.address)``: None starts a local Ray instance,
    "auto" or "ray://host:10001" joins a running cluster (whose nodes see ``root``)."""
    try:
        import ray
    except ImportError:
        raise SweepError(
            "backend 'ray' needs Ray: pip install -r requirements-cluster.txt"
        ) from None
    started = not ray.is_initialized()
    if started:
        python_path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
        ray.init(
            address=sweep.ray.address,
            runtime_env={"env_vars": {"PYTHONPATH": python_path}},
            include_dashboard=False,
            log_to_driver=False,
        )
    try:
        task = ray.remote(num_cpus=sweep.ray.cpus_per_run, num_gpus=sweep.ray.gpus_per_run)(
            run_spec
        )
        pending = {task.remote(s): s for s in _with_progress_off(specs)}
        outcomes = []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            spec = pending.pop(done[0])
            try:
                outcomes.append(_report(ray.get(done[0])))
            except ray.exceptions.RayError as error:  # the worker died, not a training fault
                outcomes.append(_report(_crashed(spec, error)))
        return outcomes
    finally:
        if started:
            ray.shutdown()


def run_submitit(sweep, root: str, specs: Sequence[RunSpec]) -> list[dict[str, Any]]:
    """A submitit job array: SLURM where ``sbatch`` exists (or ``submitit.cluster =
    "slurm"``), else local subprocesses; waits for the jobs and reports each."""
    try:
        import submitit
    except ImportError:
        raise SweepError(
            "backend 'submitit' needs submitit: pip install -r requirements-cluster.txt"
        ) from None
    options = sweep.submitit
    folder = options.folder or os.path.join(root, "submitit", "%j")
    executor = submitit.AutoExecutor(folder=folder, cluster=options.cluster)
    executor.update_parameters(
        timeout_min=options.timeout_min,
        gpus_per_node=options.gpus_per_node,
        cpus_per_task=options.cpus_per_task,
        mem_gb=options.mem_gb,
        slurm_partition=options.partition,
        slurm_array_parallelism=options.array_parallelism,
    )
    specs = _with_progress_off(specs)
    # Local jobs are subprocesses: they import `experiments` from the repository root.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    jobs = executor.map_array(run_spec, specs)
    print(f"submitted {len(jobs)} jobs ({executor.cluster}); logs in {folder}", flush=True)
    outcomes = []
    for job, spec in zip(jobs, specs, strict=True):
        try:
            outcomes.append(_report(job.result()))
        except Exception as error:  # noqa: BLE001 - submitit re-raises the job's failure
            outcomes.append(_report(_crashed(spec, error)))
    return outcomes


def _crashed(spec: RunSpec, error: BaseException) -> dict[str, Any]:
    first = str(error).strip().splitlines()
    return {"name": spec.name, "status": "failed", "error": first[-1] if first else repr(error)}


def _report(outcome: dict[str, Any]) -> dict[str, Any]:
    if outcome["status"] == "failed":
        print(f"   {outcome['name']}: failed: {outcome['error']}", flush=True)
    else:
        print(f"   {outcome['name']}: {outcome['status']}", flush=True)
    return outcome


BACKENDS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "local": run_local,
    "ray": run_ray,
    "submitit": run_submitit,
}


def check(sweep) -> None:
    """A backend name and worker count that exist, before anything is created."""
    if sweep.backend not in BACKENDS:
        raise SweepError(f"unknown backend {sweep.backend!r}; valid: {', '.join(BACKENDS)}")
    if sweep.workers < 1:
        raise SweepError(f"workers = {sweep.workers}: give 1 or more")


def run(sweep, root: str, specs: Sequence[RunSpec]) -> list[dict[str, Any]]:
    """Run ``specs`` with ``sweep.backend`` (``check``ed by ``sweep.run_sweep`` first)."""
    if not specs:
        return []
    return BACKENDS[sweep.backend](sweep, root, specs)
