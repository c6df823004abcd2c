"""The commands behind run.py: each turns parsed flags into one library call.

User-facing faults (an unknown arch, task or key, a missing data set, a diverged run)
print one line naming the fix and exit with status 2; ``--traceback`` shows the trace.
"""

from __future__ import annotations

import json
import os
import re
import sys

DEFAULT_CONFIG = "configs/synthetic/mqar.py"
# One architecture per family; `--archs` picks any of arch.ARCHS.
DEFAULT_ARCHS = ("transformer", "aft_simple", "rwkv", "s4d", "mamba")
DEFAULT_WORKDIR = "runs/compare"


def cmd_compare(args, flags):
    from experiments.compare import COLUMNS, compare
    from experiments.tables import markdown

    archs = flags.archs or list(DEFAULT_ARCHS)
    workdir = flags.workdir or DEFAULT_WORKDIR
    rows = compare(flags.config, archs, workdir)
    print()
    print(markdown(rows, COLUMNS))
    print(f"\nruns, table and plots (learning_curves.png, accuracy.png) in {workdir}/")


def cmd_train(args, flags):
    from experiments.train import train

    workdir = _require(flags.workdir, "--workdir (where the run's checkpoints and metrics go)")
    results = train(flags.config, workdir)
    print(json.dumps({"final": results.get("final"), "params": results.get("params")}, indent=1))


def cmd_eval(args, flags):
    """Re-evaluate a run from its own config.json (its last checkpoint)."""
    from experiments.train import train

    workdir = _require(flags.workdir, "--workdir of an existing run")
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: --workdir must be a run directory made by `python run.py train`"
        )
    with open(path) as f:
        config = json.load(f)
    results = train(config, workdir)
    print(json.dumps(results.get("final"), indent=1))


def cmd_data(args, flags):
    from experiments.lra import prepare

    if not args:
        raise ValueError(
            "say which data set: python run.py data <task>; tasks: " + ", ".join(prepare.PREPARABLE)
        )
    options = {
        "resolution": flags.resolution,
        "difficulty": flags.difficulty,
        "n_examples": flags.n_examples,
    }
    print(prepare.prepare(args[0], flags.data_dir, **options))


def cmd_table(args, flags):
    from experiments import lra_table

    if len(args) != 2 or args[0] != "lra":
        raise ValueError("usage: python run.py table lra <runs dir>")
    out = flags.out or args[1]
    print(lra_table.write_table(args[1], out=out))
    print(f"written: lra_table.md, lra_table.csv and lra_curves.png (if any runs) in {out}")


BENCH_LENGTHS = {  # CPU-sized defaults; pass --lengths for GPU-sized runs
    "kernels": [1024, 4096, 16384],
    "train": [1024, 2048, 4096, 8192, 16384],
    "generate": [100, 1000, 10000],
}


def cmd_bench(args, flags):
    from experiments import bench, bench_models

    which = args[0] if args else "kernels"
    if which not in BENCH_LENGTHS:
        raise ValueError(f"unknown benchmark {which!r}; valid: {', '.join(BENCH_LENGTHS)}")
    lengths = [int(x) for x in flags.lengths] if flags.lengths else BENCH_LENGTHS[which]
    out = flags.out or os.path.join("runs", "bench", which)
    archs = flags.archs or list(bench_models.ALL)
    if which == "kernels":
        bench.bench_kernels(lengths, None, out, passes=("forward", "backward"))
    elif which == "train":
        bench_models.bench_train(archs, lengths, out)
    else:
        bench_models.bench_generate(archs, lengths, out)
    print(f"CSV and PNG in {out}/")


COMMANDS = {
    "compare": cmd_compare,
    "train": cmd_train,
    "eval": cmd_eval,
    "data": cmd_data,
    "table": cmd_table,
    "bench": cmd_bench,
}


def _require(value, what: str):
    if not value:
        raise ValueError(f"missing {what}")
    return value


def _user_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ValueError, KeyError, FileNotFoundError]
    try:
        from experiments.lra.common import DataMissingError

        errors.append(DataMissingError)
    except ImportError:
        pass
    return tuple(errors)


def _innermost(message: str) -> str:
    """The last 'SomeError: text' of a chained message (config_flags nests them)."""
    found = re.findall(r"(?:\w+Error|Exception): ([^\n]+(?:\n {4,}[^\n]+)*)", message)
    text = found[-1] if found else message
    text = " ".join(text.replace("\\n", " ").replace("\\'", "'").split()).strip("'\"")
    if "Did you mean" in text:  # ml_collections' unknown-key message
        text = f"unknown config key {text}"
    return text


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with a bad --config (file, arch or key) as one line, not a trace."""
    from absl import flags as absl_flags

    try:
        rest = absl_flags.FLAGS(argv)
        _ = absl_flags.FLAGS.config.arch  # config files load lazily: surface errors now
        return rest
    except (absl_flags.Error, AttributeError, KeyError, ValueError, TypeError, OSError) as error:
        print(f"error: {_innermost(str(error))} (in the command-line flags)", file=sys.stderr)
        sys.exit(2)


def main(args: list[str], flags) -> int:
    from absl import logging

    if not flags.traceback:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    command = args[0] if args else "compare"
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; valid: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        COMMANDS[command](args[1:], flags)
    except _user_errors() as error:
        if flags.traceback:
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0
