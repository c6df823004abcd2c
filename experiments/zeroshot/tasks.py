"""The eight zero-shot tasks of the RWKV (arXiv 2305.13048) and Mamba (arXiv 2312.00752)
tables, read from local files and scored by lm-eval 0.4.13's rules.

``get_task(name).load(data_dir)`` reads ``<data_dir>/<name>/<files>`` into ``Doc``s
(``readers.py``: the prompts); the runner (``evaluate.score_docs``) scores every
request and hands each doc's results to ``process``, then the list of per-doc dicts to
``aggregate``. docs/zeroshot_tasks.md says where to get each file.

Metrics (lm-eval's ``metric_list`` in each task yaml): acc and acc_norm for the
multiple-choice tasks except WinoGrande (acc only, ``winogrande/default.yaml``);
LAMBADA acc (every continuation token greedy) and perplexity, exp(-mean over docs of
the continuation's summed log-likelihood) (``lambada/lambada_openai.yaml``, aggregation
``perplexity`` in ``lm_eval/api/metrics.py``). Accuracies are fractions, as lm-eval
reports them (the papers print percent).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path

from experiments.zeroshot import readers
from experiments.zeroshot.readers import Doc
from experiments.zeroshot.scoring import multiple_choice

__all__ = ["Doc", "TASKS", "ZeroShotTask", "get_task"]


@dataclasses.dataclass(frozen=True)
class ZeroShotTask:
    name: str  # lm-eval's task name
    metrics: tuple[str, ...]  # the keys ``aggregate`` returns
    headline: str  # the metric the papers report
    files: tuple[str, ...]  # under <data_dir>/<name>/, as the public release names them
    source: str  # where the files come from, and the split
    reader: Callable[[Sequence[Path]], list[Doc]] = dataclasses.field(repr=False)

    def load(self, data_dir) -> list[Doc]:
        paths = [Path(data_dir) / self.name / file for file in self.files]
        try:
            docs = self.reader(paths)
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"{err.filename}: no such file (source: {self.source}; "
                "docs/zeroshot_tasks.md lists every file; --data_dir names their root)"
            ) from None
        if not docs:
            raise ValueError(f"{paths[0]}: no documents")
        return docs

    def process(self, doc: Doc, results: Sequence[tuple[float, bool]]) -> dict[str, float]:
        """Per-doc scores from (loglikelihood, is_greedy) per request.

        LAMBADA: {"acc", "loglikelihood"} (the log-likelihood, not a perplexity: only
        the mean over docs makes one, in ``aggregate``). Others: the task's metrics."""
        if len(results) != len(doc.requests):
            raise ValueError(
                f"{self.name}: {len(results)} results for {len(doc.requests)} requests"
            )
        if "ppl" in self.metrics:
            ((loglik, greedy),) = results
            return {"acc": float(greedy), "loglikelihood": float(loglik)}
        scores = multiple_choice([loglik for loglik, _ in results], doc.choices, doc.gold)
        return {metric: scores[metric] for metric in self.metrics}

    def aggregate(self, per_doc: Sequence[dict[str, float]]) -> dict[str, float]:
        """Means over docs; LAMBADA's ppl = exp(-mean per-doc log-likelihood)."""
        if not per_doc:
            raise ValueError(f"{self.name}: no per-doc scores to aggregate")
        out = {}
        for metric in self.metrics:
            if metric == "ppl":
                out[metric] = math.exp(-_mean([d["loglikelihood"] for d in per_doc]))
            else:
                out[metric] = _mean([d[metric] for d in per_doc])
        return out


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


_MC = ("acc", "acc_norm")
_ARC_ZIP = "https://ai2-public-datasets.s3.amazonaws.com/arc/ARC-V1-Feb2018.zip"

TASKS: dict[str, ZeroShotTask] = {
    "lambada_openai": ZeroShotTask(
        name="lambada_openai",
        metrics=("acc", "ppl"),
        headline="acc",  # ppl is reported beside it
        files=("lambada_test.jsonl",),
        source="https://openaipublic.blob.core.windows.net/gpt-2/data/lambada_test.jsonl "
        "(OpenAI's LAMBADA), split test",
        reader=readers.lambada,
    ),
    "hellaswag": ZeroShotTask(
        name="hellaswag",
        metrics=_MC,
        headline="acc_norm",
        files=("hellaswag_val.jsonl",),
        source="https://raw.githubusercontent.com/rowanz/hellaswag/master/data/"
        "hellaswag_val.jsonl, split validation",
        reader=readers.hellaswag,
    ),
    "piqa": ZeroShotTask(
        name="piqa",
        metrics=_MC,
        headline="acc",
        files=("valid.jsonl", "valid-labels.lst"),
        source="https://yonatanbisk.com/piqa/data/valid.jsonl and valid-labels.lst, "
        "split validation",
        reader=readers.piqa,
    ),
    "arc_easy": ZeroShotTask(
        name="arc_easy",
        metrics=_MC,
        headline="acc",
        files=("ARC-Easy-Test.jsonl",),
        source=f"{_ARC_ZIP} (ARC-V1-Feb2018-2/ARC-Easy/ARC-Easy-Test.jsonl), split test",
        reader=readers.arc,
    ),
    "arc_challenge": ZeroShotTask(
        name="arc_challenge",
        metrics=_MC,
        headline="acc_norm",
        files=("ARC-Challenge-Test.jsonl",),
        source=f"{_ARC_ZIP} (ARC-V1-Feb2018-2/ARC-Challenge/ARC-Challenge-Test.jsonl), split test",
        reader=readers.arc,
    ),
    "winogrande": ZeroShotTask(
        name="winogrande",
        metrics=("acc",),  # winogrande/default.yaml lists acc only
        headline="acc",
        files=("dev.jsonl",),
        source="https://storage.googleapis.com/ai2-mosaic/public/winogrande/"
        "winogrande_1.1.zip (winogrande_1.1/dev.jsonl), split dev "
        "(lm-eval's winogrande_xl validation)",
        reader=readers.winogrande,
    ),
    "openbookqa": ZeroShotTask(
        name="openbookqa",
        metrics=_MC,
        headline="acc_norm",
        files=("test.jsonl",),
        source="https://ai2-public-datasets.s3.amazonaws.com/open-book-qa/"
        "OpenBookQA-V1-Sep2018.zip (OpenBookQA-V1-Sep2018/Data/Main/test.jsonl), "
        "split main test",
        reader=readers.openbookqa,
    ),
    "sciq": ZeroShotTask(
        name="sciq",
        metrics=_MC,
        headline="acc",
        files=("test.json",),
        source="https://ai2-public-datasets.s3.amazonaws.com/sciq/SciQ.zip "
        "(SciQ dataset-2 3/test.json), split test",
        reader=readers.sciq,
    ),
}


def get_task(name: str) -> ZeroShotTask:
    if name not in TASKS:
        raise ValueError(f"unknown zero-shot task {name!r}; valid: {', '.join(TASKS)}")
    return TASKS[name]
