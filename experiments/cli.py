"""The commands behind run.py: each turns parsed flags into one library call.

User-facing faults (an unknown arch, task or key, a missing data set, a diverged run)
print one line naming the fix and exit with status 2; ``--traceback`` shows the trace.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys

from experiments.config import load_config_file

DEFAULT_CONFIG = "configs/synthetic/mqar.py"
DEFAULT_WORKDIR = "runs/compare"


def cmd_compare(args, flags):
    from arch.registry import names
    from experiments.compare import compare

    # One architecture per family (ArchSpec.in_compare); `--archs` picks any of arch.ARCHS.
    archs = flags.archs or names(compare=True)
    workdir = flags.workdir or DEFAULT_WORKDIR
    compare(lambda name: config_for_arch(flags, name), archs, workdir)
    with open(os.path.join(workdir, "comparison.md")) as f:
        print("\n" + f.read().rstrip())  # the table and what it measured
    print(f"\nruns, table and plots (learning_curves.png, accuracy.png) in {workdir}/")


def cmd_train(args, flags):
    from experiments.train import train

    workdir = _require(flags.workdir, "--workdir (where the run's checkpoints and metrics go)")
    config = flags.config
    if flags["data_dir"].present:  # --data_dir D trains on D (the task checks it has it)
        with config.unlocked():
            config.task.options.data_dir = flags.data_dir
    results = train(config, workdir)
    print(json.dumps({"final": results.get("final"), "params": results.get("params")}, indent=1))


def cmd_eval(args, flags):
    """Evaluate a saved checkpoint of a run; trains nothing, writes only eval/<name>.json."""
    from experiments.evaluation import evaluate_run

    workdir = _require(flags.workdir, "--workdir of an existing run")
    out = evaluate_run(
        workdir,
        which=flags.checkpoint,
        split=flags.split,
        overrides=command_line_overrides(flags),
        name=flags.name,
    )
    print(json.dumps(out["metrics"], indent=1))
    print(f"checkpoint {out['checkpoint']}, split {out['split']}: written {out['path']}")


def config_for_arch(flags, name: str):
    """The ``--config`` file loaded for architecture ``name`` (keeping its variant, e.g.
    ``listops.py:s4,small`` -> ``listops.py:mamba,small``), so that each architecture
    gets its own recipe, with the command line's overrides on top."""
    from ml_collections import config_flags

    from experiments.config import override

    path, _, arg = config_flags.get_config_filename(flags["config"]).partition(":")
    variant = arg.partition(",")[2]
    config = load_config_file(f"{path}:{name}" + (f",{variant}" if variant else ""))
    changes = {k: v for k, v in command_line_overrides(flags).items() if k != "arch"}
    return override(config, changes)


def command_line_overrides(flags) -> dict:
    """The ``--config.X=V`` values given on the command line, as ``{dotted: value}``.

    The difference between ``flags.config`` and a fresh load of the same config file.
    """
    from ml_collections import config_flags

    from experiments.rundir import flatten

    fresh = load_config_file(config_flags.get_config_filename(flags["config"]))
    new, old = flatten(flags.config.to_dict()), flatten(fresh.to_dict())
    return {k: v for k, v in new.items() if k not in old or old[k] != v}


def cmd_data(args, flags):
    from experiments.lra import prepare

    if not args:
        raise ValueError(
            "say which data set: python run.py data <task>; tasks: "
            + ", ".join((*prepare.PREPARABLE, "lm"))
        )
    if args[0] == "lm":  # a corpus (--corpus; None: the stdlib) -> token files
        from experiments import lm_data

        data_dir = flags.data_dir
        if not flags["data_dir"].present:  # not the LRA default "data": its own folder
            data_dir = lm_data.default_data_dir(flags.corpus, flags.tokenizer)
        print(lm_data.prepare(data_dir, flags.corpus, flags.tokenizer))
        return
    options = {
        "resolution": flags.resolution,
        "difficulty": flags.difficulty,
        "n_examples": flags.n_examples,
    }
    print(prepare.prepare(args[0], flags.data_dir, **options))


def cmd_table(args, flags):
    from experiments import lra_table, sweep_table

    if len(args) != 2 or args[0] not in ("lra", "sweep", "zeroshot"):
        raise ValueError("usage: python run.py table lra|sweep|zeroshot <runs dir>")
    out = flags.out or args[1]
    if args[0] == "zeroshot":
        from experiments.zeroshot import table

        print(table.write_table(args[1], out=out))
        print(f"written: zeroshot_table.md, zeroshot_table.csv and zeroshot_figure.png in {out}")
    elif args[0] == "lra":
        print(lra_table.write_table(args[1], out=out))
        print(f"written: lra_table.md, lra_table.csv and lra_curves.png (if any runs) in {out}")
    else:
        print(sweep_table.write_table(args[1], out=out))
        print(f"written: sweep_table.md, sweep_table.csv and sweep_*.png in {out}")


def cmd_sweep(args, flags):
    """Train every point of a sweep config's grid (skipping finished runs), then tabulate."""
    from ml_collections import config_flags

    from experiments import sweep, sweep_table

    path = config_flags.get_config_filename(flags["config"]).partition(":")[0]
    if "grid" not in flags.config:
        raise ValueError(
            f"{path} is a training config; run.py sweep needs a sweep config, e.g. "
            "--config configs/sweeps/mqar_state.py (see configs/sweeps/)"
        )
    name = os.path.splitext(os.path.basename(path))[0]
    root = flags.workdir or os.path.join("runs", "sweeps", name)
    sweep.run_sweep(flags.config, root)
    print()
    print(sweep_table.write_table(root, out=flags.out or root))
    print(f"\nruns in {root}/; table and plots: python run.py table sweep {root}")


BENCH_LENGTHS = {  # CPU-sized defaults; pass --lengths for GPU-sized runs
    "kernels": [1024, 4096, 16384],
    "train": [1024, 2048, 4096, 8192, 16384],
    "attention": [256, 1024, 4096, 16384],
    "generate": [100, 1000, 10000],
    "throughput": [1024],  # the context the decode step follows
    "scoring": [128, 512],  # the zero-shot questions' context
}
BENCH_BATCHES = [1, 4, 16, 64]


def _positive_ints(values, default, flag: str, what: str, example: str) -> list[int]:
    """A list flag of positive integers (``default`` when not given), or one clear error."""
    try:
        out = [int(x) for x in values] if values else list(default)
    except ValueError:
        raise ValueError(f"{flag} {','.join(values)}: give integers, e.g. {example}") from None
    if not out or min(out) < 1:
        raise ValueError(f"{flag} {out}: every {what} must be a positive integer")
    return out


def cmd_bench(args, flags):
    from experiments import bench, bench_models

    which = args[0] if args else "kernels"
    if which not in BENCH_LENGTHS:
        raise ValueError(f"unknown benchmark {which!r}; valid: {', '.join(BENCH_LENGTHS)}")
    lengths = _positive_ints(
        flags.lengths, BENCH_LENGTHS[which], "--lengths", "length", "1024,4096"
    )
    out = flags.out or os.path.join("runs", "bench", which)
    archs = flags.archs or bench_models.default_archs()
    time_chunk = getattr(flags, "time_chunk", None) or []
    if which != "train" and time_chunk:
        raise ValueError(f"--time_chunk is an option of bench train, not of bench {which}")
    if time_chunk:
        time_chunk = _positive_ints(time_chunk, (), "--time_chunk", "chunk length", "128,512")
    shape = {  # the model's size: only what was given, else each benchmark's default
        k: _positive_ints([getattr(flags, k)], (), f"--{k}", k, "4")[0]
        for k in ("d_model", "n_layers", "batch")
        if getattr(flags, k, None) is not None
    }
    if which == "scoring":
        from experiments.zeroshot.bench import DEFAULT_ARCHS, bench_scoring

        if "batch" in shape:
            raise ValueError("bench scoring scores questions of 4 choices: drop --batch")
        bench_scoring(flags.archs or DEFAULT_ARCHS, lengths, out, **shape)
        print(f"CSV and PNG in {out}/")
        return
    if which in ("kernels", "attention") and shape:
        raise ValueError(f"bench {which} has a fixed layout: drop --d_model/--n_layers/--batch")
    if which == "kernels":
        bench.bench_kernels(lengths, None, out, passes=("forward", "backward"))
    elif which == "attention":
        bench.bench_attention(lengths, out)
    elif which == "train":
        bench_models.bench_train(archs, lengths, out, time_chunk=time_chunk, **shape)
    elif which == "generate":
        bench_models.bench_generate(archs, lengths, out, **shape)
    else:
        if "batch" in shape:
            raise ValueError("bench throughput takes --batches (a list), not --batch")
        batches = _positive_ints(flags.batches, BENCH_BATCHES, "--batches", "batch size", "1,4,16")
        bench_models.bench_throughput(archs, batches, out, contexts=lengths, **shape)
    print(f"CSV and PNG in {out}/")


ZEROSHOT_DATA = "data/zeroshot"


def cmd_zeroshot(args, flags):
    """Score pretrained weights (or a run of ours) on the zero-shot tasks."""
    from experiments.zeroshot.evaluate import run_zeroshot

    weights = _require(flags.weights, "--weights (a save_pretrained dir, a .pth or a run dir)")
    workdir = _require(flags.workdir, "--workdir (where results.json goes)")
    data_dir = flags.data_dir if flags["data_dir"].present else ZEROSHOT_DATA
    if args:
        raise ValueError(f"zeroshot takes no arguments (got {' '.join(args)}); use --tasks")
    if flags.limit is not None and flags.limit < 1:
        raise ValueError(f"--limit={flags.limit} must be >= 1")
    record = run_zeroshot(
        weights,
        flags.tasks,
        data_dir,
        workdir,
        tokenizer=flags.tokenizer,
        limit=flags.limit,
        published=flags.name,
    )
    print(json.dumps(record["tasks"], indent=1))
    print(
        f"written: {workdir}/results.json and {workdir}/items/; compare with "
        f"`python run.py table zeroshot {os.path.dirname(workdir.rstrip('/')) or '.'}`"
    )


def cmd_generate(args, flags):
    """Continue --prompt with --weights, printing the text as it comes and tokens/s."""
    import functools

    from experiments.generate import generate_text
    from experiments.lm_loading import load_lm
    from experiments.sampling import Sampling, check_seed

    weights = _require(flags.weights, "--weights (a save_pretrained dir, a .pth or a run dir)")
    if flags.prompt is None:
        raise ValueError("give --prompt 'text to continue'")
    if flags.max_new_tokens < 1:
        raise ValueError(f"--max_new_tokens={flags.max_new_tokens} must be >= 1")
    Sampling(flags.temperature, flags.top_k, flags.top_p)  # bad values stop before loading
    check_seed(flags.seed)
    model, params, tokenizer = load_lm(weights, tokenizer=flags.tokenizer)
    print(flags.prompt, end="", flush=True)
    _, stats = generate_text(
        model,
        params,
        tokenizer,
        flags.prompt,
        max_new_tokens=flags.max_new_tokens,
        temperature=flags.temperature,
        top_k=flags.top_k,
        top_p=flags.top_p,
        seed=flags.seed,
        stream=functools.partial(print, end="", flush=True),
    )
    print(
        "\n\n"
        + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items()
        )
    )


COMMANDS = {
    "compare": cmd_compare,
    "train": cmd_train,
    "eval": cmd_eval,
    "data": cmd_data,
    "table": cmd_table,
    "sweep": cmd_sweep,
    "bench": cmd_bench,
    "zeroshot": cmd_zeroshot,
    "generate": cmd_generate,
}


def _require(value, what: str):
    if not value:
        raise ValueError(f"missing {what}")
    return value


def _user_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ValueError, KeyError, FileNotFoundError, FileExistsError]
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


# Free-form parts of the config: their keys are validated by arch.build / the task, so a
# command-line value may add a key that the config file did not set.
FREE_FORM = ("model", "task.options")


def split_free_form(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """``argv`` without the ``--config.model.K=V`` / ``--config.task.options.K=V`` items,
    and those items as ``(dotted key, raw value)``."""
    rest, free = [], []
    for item in argv:
        key, eq, value = item.partition("=")
        dotted = key[len("--config.") :] if key.startswith("--config.") else ""
        parent = dotted.rpartition(".")[0]
        if eq and parent in FREE_FORM:
            free.append((dotted, value))
        else:
            rest.append(item)
    return rest, free


def _parse_value(raw: str, current):
    """A command-line value, typed like the current value (or as a Python literal)."""
    if isinstance(current, bool):
        if raw.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"expected true or false, got {raw!r}")
        return raw.lower() in ("true", "1")
    if isinstance(current, int):
        return int(raw)
    if isinstance(current, float):
        return float(raw)
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw  # a bare string: --config.model.impl=pallas


def apply_free_form(config, free: list[tuple[str, str]]) -> None:
    with config.unlocked():
        for dotted, raw in free:
            *parents, leaf = dotted.split(".")
            node = config
            for part in parents:
                node = node[part]
            try:
                node[leaf] = _parse_value(raw, node.get(leaf))
            except ValueError as error:
                raise ValueError(f"--config.{dotted}={raw}: {error}") from None


def _unknown_key_message(text: str, config) -> str | None:
    """'unknown config key a.b.c; valid at a.b: ...' for an unknown dotted key."""
    found = re.search(r"--config\.([\w.]+)", text) or re.search(r"'config\.([\w.]+)'", text)
    if config is None or not found:
        return None
    *parents, leaf = found.group(1).split(".")
    node, where = config, []
    for part in parents:
        if not hasattr(node, "keys") or part not in node:
            break
        node, where = node[part], [*where, part]
    if not hasattr(node, "keys") or leaf in node:
        return None
    level = ".".join(where) or "the top level"
    return f"unknown config key {found.group(1)!r}; valid at {level}: {', '.join(sorted(node))}"


def _config_named_in(argv: list[str]):
    """The config that ``--config`` in ``argv`` names (for error messages), or None."""
    spec = DEFAULT_CONFIG
    for i, item in enumerate(argv):
        if item == "--config" and i + 1 < len(argv):
            spec = argv[i + 1]
        elif item.startswith("--config="):
            spec = item.partition("=")[2]
    try:
        return load_config_file(spec)
    except Exception:  # the file itself is broken: the original message says so
        return None


def parse_flags(argv: list[str], free: list[tuple[str, str]] = ()) -> list[str]:
    """absl flag parsing, with a bad --config (file, arch or key) as one line, not a trace.

    ``free``: the free-form overrides ``split_free_form`` took out of the command line
    before absl saw it; applied to the loaded config here.
    """
    from absl import flags as absl_flags

    argv, more = split_free_form(argv)
    free = [*free, *more]
    try:
        rest = absl_flags.FLAGS(argv)
        config = absl_flags.FLAGS.config  # config files load lazily: surface errors now
        _ = config.get("arch")
        apply_free_form(config, free)
        return rest
    except (absl_flags.Error, AttributeError, KeyError, ValueError, TypeError, OSError) as error:
        message = _innermost(str(error))
        config = _config_named_in(argv)
        message = _unknown_key_message(" ".join(argv), config) or message
        print(f"error: {message} (in the command-line flags)", file=sys.stderr)
        sys.exit(2)
    except SyntaxError as error:  # a config file that is not valid Python
        print(
            f"error: {error.filename}:{error.lineno}: {error.msg} (in the config file)",
            file=sys.stderr,
        )
        sys.exit(2)


def main(args: list[str], flags) -> int:
    from absl import logging

    if not flags.traceback:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    command = args[0] if args else "compare"
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; valid: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from experiments.preemption import Preempted

    try:
        COMMANDS[command](args[1:], flags)
    except Preempted as stopped:
        print(f"stopped: {stopped}", file=sys.stderr)
        return stopped.exit_code
    except KeyboardInterrupt:
        if flags.traceback:
            raise
        print("interrupted (Ctrl-C) before training started; nothing was saved", file=sys.stderr)
        return 130
    except _user_errors() as error:
        if flags.traceback:
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0
