"""Zero-shot end to end: random GPT-NeoX / RWKV / Mamba models written by
``save_pretrained``, the eight tasks' files in their release layouts, and the per-item
log-likelihoods of ``run.py zeroshot`` against transformers' own log-probabilities of
the same token ids."""

import json
import shutil

import numpy as np
import pytest

from arch.convert import load_pretrained
from experiments.tokenizer import load_tokenizer
from experiments.zeroshot import tasks as zs_tasks
from experiments.zeroshot.evaluate import evaluate, score_docs
from experiments.zeroshot.scoring import encode_pair

ALL = tuple(zs_tasks.TASKS)


def torch_logliks(torch_model, tokenizer, docs_per_task):
    """{task: per doc, per request: sum of log p(continuation token)} from transformers'
    logits. Every request of every task goes in one right-padded batch (causal: padding
    after a position never reaches it): transformers' Mamba without its CUDA kernels
    loops over time steps, so one long batch costs the least."""
    import torch

    pairs = [
        encode_pair(tokenizer, c, x)
        for docs in docs_per_task.values()
        for doc in docs
        for c, x in doc.requests
    ]
    width = max(len(c) + len(x) for c, x in pairs)
    batch = torch.zeros((len(pairs), width), dtype=torch.long)
    for i, (c, x) in enumerate(pairs):
        batch[i, : len(c) + len(x)] = torch.as_tensor(c + x)
    with torch.no_grad():
        logp = torch.log_softmax(torch_model(batch, use_cache=False).logits.double(), -1)
    flat = iter(
        float(logp[i, torch.arange(len(c) - 1, len(c) + len(x) - 1), torch.as_tensor(x)].sum())
        for i, (c, x) in enumerate(pairs)
    )
    return {
        name: [[next(flat) for _ in doc.requests] for doc in docs]
        for name, docs in docs_per_task.items()
    }


# Both scoring paths against transformers: the shared-context one (one prefill per
# question, the KV cache for GPT-NeoX) and the row-by-row one; they agree with each other
# in test_state_reuse_gives_the_row_scores.
@pytest.mark.parametrize("kind, reuse", [("gpt_neox", True), ("rwkv", False), ("mamba", True)])
def test_every_task_matches_transformers(hf_checkpoints, tokenizer_json, zeroshot_dir, kind, reuse):
    directory, torch_model = hf_checkpoints[kind]
    tokenizer = load_tokenizer(str(tokenizer_json))
    model, params, _ = load_pretrained(directory)
    result = evaluate(model, params, tokenizer, ALL, str(zeroshot_dir), reuse=reuse, progress=False)
    docs = {name: zs_tasks.get_task(name).load(zeroshot_dir) for name in ALL}
    reference = torch_logliks(torch_model, tokenizer, docs)
    for name in ALL:
        ours = result["items"][name]
        assert len(ours) == len(docs[name])
        for a, b in zip(ours, reference[name], strict=True):
            np.testing.assert_allclose(a, b, atol=2e-4, rtol=1e-5, err_msg=name)
        assert set(zs_tasks.get_task(name).metrics) <= set(result["tasks"][name])


def test_state_reuse_gives_the_row_scores(hf_checkpoints, tokenizer_json, zeroshot_dir):
    """The shared-context path (one prefill per question) and the row-by-row path, for
    RWKV (scored row by row against transformers above)."""
    directory, _ = hf_checkpoints["rwkv"]
    tokenizer = load_tokenizer(str(tokenizer_json))
    model, params, _ = load_pretrained(directory)
    docs = zs_tasks.get_task("hellaswag").load(zeroshot_dir)
    reused = score_docs(model, params, tokenizer, docs, reuse=True)
    rows = score_docs(model, params, tokenizer, docs, reuse=False)
    for a, b in zip(reused, rows, strict=True):
        np.testing.assert_allclose([s for s, _ in a], [s for s, _ in b], atol=1e-4)
        assert [g for _, g in a] == [g for _, g in b]


def test_run_zeroshot_writes_and_never_overwrites(hf_checkpoints, tokenizer_json, zeroshot_dir,
                                                  tmp_path):  # fmt: skip
    pytest.importorskip("experiments.lm_loading", reason="lm_loading lands with generation")
    from experiments.zeroshot.evaluate import run_zeroshot
    from experiments.zeroshot.table import write_table

    weights = tmp_path / "pythia-160m"  # a name the table matches to the published rows
    shutil.copytree(hf_checkpoints["gpt_neox"][0], weights)
    shutil.copy(tokenizer_json, weights / "tokenizer.json")
    out = tmp_path / "runs" / "p160"
    record = run_zeroshot(str(weights), ["piqa", "lambada_openai"], str(zeroshot_dir), str(out))
    saved = json.loads((out / "results.json").read_text())
    assert saved["tasks"] == record["tasks"] and saved["n_params"] > 0
    items = json.loads((out / "items" / "piqa.json").read_text())
    assert len(items) == record["tasks"]["piqa"]["n_docs"] and len(items[0]) == 2
    with pytest.raises(FileExistsError, match="exists"):
        run_zeroshot(str(weights), ["piqa"], str(zeroshot_dir), str(out))
    text = write_table(str(tmp_path / "runs"), out=str(tmp_path / "table"))
    assert "ours: p160" in text and "Pythia 160M" in text and "difference vs" in text
    assert (tmp_path / "table" / "zeroshot_figure.png").stat().st_size > 1000


def test_a_question_too_long_for_the_kv_cache_goes_row_by_row():
    """A context that leaves no room for the padded choices in a Transformer's cache is
    scored whole and truncated as lm-eval truncates, not from a state that overflowed."""
    import jax
    import jax.numpy as jnp

    import arch
    from experiments.zeroshot.evaluate import score_encoded
    from experiments.zeroshot.scoring import loglikelihood_ids
    from experiments.zeroshot.shared_context import SharedContextScorer

    model = arch.build("transformer", vocab_size=50, d_model=16, n_layers=1, max_len=32)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
    rng = np.random.default_rng(0)
    context = rng.integers(0, 50, 30).tolist()
    long_q = [(context, rng.integers(0, 50, n).tolist()) for n in (3, 5)]
    short_q = [(long_q[0][0][:10], [7, 8]), (long_q[0][0][:10], [9])]
    scorer = SharedContextScorer(model, params)
    assert not scorer.fits(long_q[0][0], [x for _, x in long_q])
    assert scorer.fits(short_q[0][0], [x for _, x in short_q])
    got = score_encoded(model, params, [long_q, short_q], reuse=True)
    want = loglikelihood_ids(model, params, long_q + short_q)
    np.testing.assert_allclose([s for q in got for s, _ in q], [s for s, _ in want], atol=1e-5)
