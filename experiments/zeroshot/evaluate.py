"""Run zero-shot tasks on a language model and write what it measured.

    results = evaluate(model, params, tokenizer, ["piqa", "lambada_openai"], "data/zeroshot")
    run_zeroshot("pythia-160m/", ["piqa"], "data/zeroshot", "runs/zs/pythia160m")

Every request of a task is encoded by lm-eval's rules (``scoring.encode_pair``). A
question whose choices share their context is scored from one pass over it
(``shared_context``; ``reuse=False`` scores every row whole, as lm-eval's HF model
does: the numbers agree, only the time differs); the other requests (WinoGrande's
partial scoring, whose contexts differ, and anything longer than a Transformer's KV
cache) go through the batched row scorer. Per-item log-likelihoods are kept so that a
result can be checked request by request.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence

import jax
from tqdm import tqdm

from experiments.zeroshot import tasks as zs_tasks
from experiments.zeroshot.scoring import RowScorer, encode_pair
from experiments.zeroshot.shared_context import SharedContextScorer

DEFAULT_TASKS = tuple(zs_tasks.TASKS)


def _encode_doc(tokenizer, doc) -> list[tuple[list[int], list[int]]]:
    return [encode_pair(tokenizer, c, x) for c, x in doc.requests]


class Scorers:
    """The row scorer and the shared-context scorer of one model (each keeps its
    compiled programs, so a second task or pass compiles nothing new)."""

    def __init__(self, model, params):
        self.rows = RowScorer(model, params)
        self._shared = None
        self._model, self._params = model, params

    @property
    def shared(self) -> SharedContextScorer:
        if self._shared is None:
            self._shared = SharedContextScorer(self._model, self._params)
        return self._shared


def score_docs(
    model,
    params,
    tokenizer,
    docs: Sequence,
    *,
    reuse: bool = True,
    batch_size: int = 16,
    scorers: Scorers | None = None,
    progress: str | None = None,
) -> list[list[tuple[float, bool]]]:
    """(log-likelihood, greedy) per request of every doc, in order."""
    encoded = [_encode_doc(tokenizer, doc) for doc in docs]
    return score_encoded(
        model,
        params,
        encoded,
        reuse=reuse,
        batch_size=batch_size,
        scorers=scorers,
        progress=progress,
    )


def score_encoded(
    model,
    params,
    encoded: Sequence[Sequence[tuple[list[int], list[int]]]],
    *,
    reuse: bool = True,
    batch_size: int = 16,
    scorers: Scorers | None = None,
    progress: str | None = None,
) -> list[list[tuple[float, bool]]]:
    """``score_docs`` on docs already encoded: per doc, (context ids, continuation ids)
    per request. Pass the same ``scorers`` to later calls to keep their compiled shapes."""
    scorers = scorers or Scorers(model, params)
    results: list[list] = [[None] * len(pairs) for pairs in encoded]
    rows = []  # (doc index, request index, pair) for the row scorer
    shared = []
    for d, pairs in enumerate(encoded):
        contexts = {tuple(c) for c, _ in pairs}
        if reuse and len(pairs) > 1 and len(contexts) == 1:
            shared.append(d)
        else:
            rows.extend((d, r, pair) for r, pair in enumerate(pairs))
    if shared:
        scorer = scorers.shared
        for d in tqdm(shared, desc=progress, disable=progress is None, leave=False):
            context = encoded[d][0][0]
            continuations = [x for _, x in encoded[d]]
            if scorer.fits(context, continuations):
                results[d] = scorer.score(context, continuations)
            else:
                rows.extend((d, r, pair) for r, pair in enumerate(encoded[d]))
    if rows:
        scores = scorers.rows.score([p for _, _, p in rows], batch_size=batch_size)
        for (d, r, _), score in zip(rows, scores, strict=True):
            results[d][r] = score
    return results


def evaluate(
    model,
    params,
    tokenizer,
    task_names: Sequence[str],
    data_dir: str,
    *,
    limit: int | None = None,
    reuse: bool = True,
    batch_size: int = 16,
    progress: bool = True,
) -> dict:
    """{"tasks": {name: metrics}, "items": {name: [[loglik, ...] per doc]}, "timing": ...}."""
    return evaluate_docs(
        model,
        params,
        tokenizer,
        load_docs(task_names, data_dir, limit),
        reuse=reuse,
        batch_size=batch_size,
        progress=progress,
    )


def load_docs(task_names: Sequence[str], data_dir: str, limit: int | None = None) -> dict:
    """{task name: its first ``limit`` docs}, every file read (and every name checked)."""
    loaded = {}
    for name in task_names:
        docs = zs_tasks.get_task(name).load(data_dir)[:limit]
        if not docs:
            raise ValueError(f"{name}: no documents read from {data_dir}")
        loaded[name] = docs
    return loaded


def evaluate_docs(
    model,
    params,
    tokenizer,
    loaded: dict,
    *,
    reuse: bool = True,
    batch_size: int = 16,
    progress: bool = True,
) -> dict:
    """``evaluate`` on docs already read (``load_docs``)."""
    scorers = Scorers(model, params)
    out = {"tasks": {}, "items": {}, "timing": {}}
    for name, docs in loaded.items():
        task = zs_tasks.get_task(name)
        start = time.perf_counter()
        results = score_docs(
            model,
            params,
            tokenizer,
            docs,
            reuse=reuse,
            batch_size=batch_size,
            scorers=scorers,
            progress=task.name if progress else None,
        )
        seconds = time.perf_counter() - start
        per_doc = [task.process(doc, res) for doc, res in zip(docs, results, strict=True)]
        metrics = task.aggregate(per_doc)
        n_requests = sum(len(doc.requests) for doc in docs)
        out["tasks"][task.name] = {**metrics, "n_docs": len(docs), "n_requests": n_requests}
        out["items"][task.name] = [[ll for ll, _ in res] for res in results]
        out["timing"][task.name] = {"seconds": seconds, "requests_per_s": n_requests / seconds}
        if progress:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
            print(f"{task.name}: {shown} ({len(docs)} docs, {n_requests / seconds:.1f} req/s)")
    return out


def run_zeroshot(
    weights: str,
    task_names: Sequence[str] | None,
    data_dir: str,
    out_dir: str,
    *,
    tokenizer: str | None = None,
    limit: int | None = None,
    reuse: bool = True,
    batch_size: int = 16,
    published: str | None = None,
) -> dict:
    """Load ``weights`` (a save_pretrained directory, a BlinkDL .pth or a run directory
    of ours), run the tasks, write ``out_dir/results.json`` and ``out_dir/items/<task>.json``.

    ``published``: the published row to set this run beside in ``table zeroshot``
    (e.g. "Mamba-130M"; None: matched by the weights' name). An existing results.json
    is never overwritten: the command stops and says so.
    """
    from experiments.lm_loading import load_lm

    results_path = os.path.join(out_dir, "results.json")
    if os.path.exists(results_path):
        raise FileExistsError(
            f"{results_path} exists (a finished evaluation); give another --workdir"
        )
    if published is not None:
        from experiments.zeroshot.table import matching_rows

        matching_rows({"published": published})  # an unknown row name fails now
    # Unknown names and missing files fail before the (long) load of the weights.
    docs = load_docs(task_names or DEFAULT_TASKS, data_dir, limit)
    model, params, tok = load_lm(weights, tokenizer=tokenizer)
    result = evaluate_docs(model, params, tok, docs, reuse=reuse, batch_size=batch_size)
    os.makedirs(os.path.join(out_dir, "items"), exist_ok=True)
    for name, items in result.pop("items").items():
        with open(os.path.join(out_dir, "items", f"{name}.json"), "w") as f:
            json.dump(items, f)
    record = {
        "weights": os.path.abspath(weights),
        "n_params": int(sum(x.size for x in jax.tree_util.tree_leaves(params))),
        "tokenizer": getattr(tok, "name", None),
        "data_dir": os.path.abspath(data_dir),
        "limit": limit,
        "reuse_state": reuse,
        "published": published,
        **result,
    }
    tmp = results_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, results_path)
    return record
