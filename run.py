"""Command line: flags -> config -> a library call in experiments/.

    python run.py                                   # main job: every family on MQAR (CPU)
    python run.py train --config configs/synthetic/mqar.py:mamba --workdir runs/mqar_mamba
    python run.py train --config configs/lra/listops.py:s4 --config.train.steps=100 --workdir runs/x
    python run.py eval --workdir runs/mqar_mamba --checkpoint best --split test  # read-only
    python run.py compare --config configs/synthetic/mqar.py --archs transformer,mamba
    python run.py data listops                      # prepare a data set (see `python run.py data`)
    python run.py sweep --config configs/sweeps/mqar_state.py --config.workers=2  # grid x seeds
    python run.py table lra runs/lra                # ours beside the published numbers
    python run.py table sweep runs/sweeps/mqar_state  # mean ± std over seeds, best lr, plots
    python run.py bench kernels --out runs/bench    # kernels|train|attention|generate|throughput
    python run.py data lm --corpus texts/ --tokenizer 20B_tokenizer.json  # LM token files
    python run.py zeroshot --weights pythia-160m/ --tokenizer 20B_tokenizer.json --workdir runs/zs/a
    python run.py table zeroshot runs/zs            # ours beside the RWKV and Mamba papers
    python run.py generate --weights mamba-130m/ --tokenizer 20B_tokenizer.json --prompt "The"

Add --traceback to see the full Python traceback of an error.
"""

import functools
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from experiments import cli

HERE = os.path.dirname(os.path.abspath(__file__))
# --config.model.* / --config.task.options.* may name keys the config file does not set
# (mixer and task options); they are applied after the file loads, not by config_flags.
sys.argv, FREE_FORM = cli.split_free_form(sys.argv)

config_flags.DEFINE_config_file(
    "config",
    os.path.join(HERE, cli.DEFAULT_CONFIG),
    "Config file[:arch] (big_vision style).",
    lock_config=True,
)
flags.DEFINE_string("workdir", None, "Run directory (train/eval) or output root (compare, sweep).")
flags.DEFINE_list("archs", None, "Architectures for `compare` (default: one per family).")
flags.DEFINE_string("data_dir", "data", "Where data sets are generated / looked for.")
flags.DEFINE_string("out", None, "Output directory for `bench` and `table`.")
flags.DEFINE_integer("resolution", 32, "Pathfinder resolution for `data pathfinder`.")
flags.DEFINE_string("difficulty", "curv_contour_length_14", "Pathfinder difficulty.")
flags.DEFINE_integer("n_examples", None, "How many examples `data` generates (task default).")
flags.DEFINE_list("lengths", None, "Sequence lengths for `bench` (the context for `throughput`).")
flags.DEFINE_list("batches", None, "Batch sizes for `bench throughput` (default 1,4,16,64).")
flags.DEFINE_integer("batch", None, "Batch size for `bench train|generate` (default 1).")
flags.DEFINE_integer("d_model", None, "Model width for `bench train|generate|throughput`.")
flags.DEFINE_integer("n_layers", None, "Layers for `bench train|generate|throughput`.")
flags.DEFINE_list(
    "time_chunk", None, "`bench train`: also time chunks of these many tokens along time."
)
flags.DEFINE_string("corpus", None, "Text for `data lm`: a file, a directory, JSONL or tfds:NAME.")
flags.DEFINE_string(
    "tokenizer", None, "'byte' or a tokenizer.json (`data lm`, `zeroshot`, `generate`)."
)
flags.DEFINE_string(
    "weights", None, "Pretrained weights (`zeroshot`, `generate`): a dir, a .pth or a run."
)
flags.DEFINE_list("tasks", None, "Zero-shot tasks for `zeroshot` (default: all eight).")
flags.DEFINE_integer("limit", None, "Score only the first N items of each zero-shot task.")
flags.DEFINE_string("prompt", None, "Prompt for `generate`.")
flags.DEFINE_integer("max_new_tokens", 64, "Tokens `generate` adds.")
flags.DEFINE_float("temperature", 0.0, "Sampling temperature for `generate` (0: greedy).")
flags.DEFINE_integer("top_k", None, "Sample among the k most likely tokens (`generate`).")
flags.DEFINE_float("top_p", None, "Nucleus sampling mass (`generate`).")
flags.DEFINE_integer("seed", 0, "Random seed for `generate`.")
flags.DEFINE_enum("split", "val", ["val", "test"], "Split for `eval`.")
flags.DEFINE_string("checkpoint", "best", "Checkpoint for `eval`: best, latest or a step.")
flags.DEFINE_string(
    "name", None, "`eval`: the result's name; `zeroshot`: the published row to compare with."
)
flags.DEFINE_bool("traceback", False, "Show the full traceback of an error.")


def main(argv):
    return cli.main(argv[1:], flags.FLAGS)


if __name__ == "__main__":
    app.run(main, flags_parser=functools.partial(cli.parse_flags, free=FREE_FORM))
