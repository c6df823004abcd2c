"""Scoring throughput with and without reusing the shared context's state.

    python run.py bench scoring --archs mamba,rwkv,transformer --lengths 128,512

Multiple-choice questions shaped like HellaSwag's (a context of L tokens, 4 choices of
20 tokens; random ids, so only the time means anything) are scored twice by
``evaluate.score_encoded``: row by row (each choice with its whole context, as
lm-eval's HF model does) and from one prefill of the context per question
(``shared_context``). Each way runs once to compile every shape, then is timed over the
same questions; the table gives requests per second and the ratio, measured side by
side in one run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from experiments import plots, tables
from experiments.zeroshot.evaluate import Scorers, score_encoded

DEFAULT_ARCHS = ("mamba", "rwkv", "transformer")
COLUMNS = ("arch", "context", "choices", "rows_req_per_s", "reuse_req_per_s", "speedup")


def questions(n: int, context: int, choices: int, choice_len: int, vocab: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ctx = rng.integers(0, vocab, context).tolist()
        out.append([(ctx, rng.integers(0, vocab, choice_len).tolist()) for _ in range(choices)])
    return out


def _timed(fn) -> float:
    fn()  # compiles every shape
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_scoring(
    archs: Sequence[str],
    contexts: Sequence[int],
    out_dir: str,
    *,
    d_model: int = 128,
    n_layers: int = 2,
    n_questions: int = 32,
    choices: int = 4,
    choice_len: int = 20,
    vocab: int = 512,
    batch_size: int = 16,
) -> list[dict]:
    import arch

    rows = []
    for name in archs:
        for context in contexts:
            max_len = context + 2 * choice_len + 8
            model = arch.build(
                name, vocab_size=vocab, d_model=d_model, n_layers=n_layers, max_len=max_len
            )
            params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
            docs = questions(n_questions, context, choices, choice_len, vocab)
            scorers = Scorers(model, params)
            n_requests = n_questions * choices

            def run(reuse, model=model, params=params, docs=docs, scorers=scorers):
                score_encoded(
                    model, params, docs, reuse=reuse, batch_size=batch_size, scorers=scorers
                )

            plain = _timed(lambda: run(False))
            reused = _timed(lambda: run(True))
            rows.append(
                {
                    "arch": name,
                    "context": context,
                    "choices": choices,
                    "rows_req_per_s": n_requests / plain,
                    "reuse_req_per_s": n_requests / reused,
                    "speedup": plain / reused,
                }
            )
            print(tables.markdown(rows[-1:], COLUMNS).splitlines()[-1], flush=True)
    os.makedirs(out_dir, exist_ok=True)
    tables.write_csv(rows, COLUMNS, os.path.join(out_dir, "scoring_bench.csv"))
    series = {}
    for r in rows:
        series.setdefault(r["arch"], []).append((r["context"], r["speedup"]))
    plots.lines(
        series, "context", "speedup of state reuse", os.path.join(out_dir, "scoring_bench.png")
    )
    print(f"backend: {jax.default_backend()}; d_model {d_model}, {n_layers} layers")
    print(tables.markdown(rows, COLUMNS))
    return rows
