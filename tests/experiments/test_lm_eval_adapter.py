"""The lm-evaluation-harness adapter: lm-eval's own evaluator, offline, on task files this
test writes (multiple choice, rolling log-likelihood, generation) gives the native
scorer's numbers; the model also loads from a run directory by ``pretrained=``."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

lm_eval = pytest.importorskip(
    "lm_eval", reason="lm-evaluation-harness is a dev requirement (requirements-dev.txt)"
)
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.api.registry import get_model  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

import arch  # noqa: E402
from experiments.generate import generate_text  # noqa: E402
from experiments.lm_loading import LoadError, load_lm  # noqa: E402
from experiments.tokenizer import load_tokenizer  # noqa: E402
from experiments.zeroshot import scoring  # noqa: E402
from experiments.zeroshot.lm_eval_adapter import SubquadraticLM, rolling_windows  # noqa: E402

MAX_LEN = 16
MC_DOCS = [
    {"question": "the quick brown", "choices": ["fox", "dog", "lazy"], "label": 0},
    {"question": "jumps over the", "choices": ["lazy dog", "quick fox"], "label": 0},
    {"question": "Hello,", "choices": ["world!", "brown", "the fox"], "label": 0},
    {"question": "tabs and", "choices": ["newlines", "spaces"], "label": 1},
]
ROLLING_TEXT = "the quick brown fox jumps over the lazy dog. Hello, world! " * 3
GEN_CONTEXT, MAX_GEN_TOKS = "the quick brown", 10


@pytest.fixture(scope="module")
def lm(tokenizer_json):
    tok = load_tokenizer(str(tokenizer_json))
    model = arch.build("mamba", vocab_size=tok.vocab_size, d_model=16, n_layers=2, max_len=MAX_LEN)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
    leaves, tree = jax.tree.flatten(params)  # perturbed: a model with preferences
    keys = jax.random.split(jax.random.key(1), len(leaves))
    noisy = [x + 0.5 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    return model, jax.tree.unflatten(tree, noisy), tok


def _write_task(directory, name, docs, **config):
    data = directory / f"{name}.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    config = {
        "task": name,
        "dataset_path": "json",  # datasets' local JSON builder: no network
        "dataset_kwargs": {
            "data_files": {"test": str(data)},
            "cache_dir": str(directory / "hf_cache"),
        },
        "test_split": "test",
        **config,
    }
    (directory / f"{name}.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))


@pytest.fixture(scope="module")
def greedy_text(lm):
    model, params, tok = lm
    text, _ = generate_text(
        model, params, tok, GEN_CONTEXT, max_new_tokens=MAX_GEN_TOKS, prefill_in_pieces=True
    )
    assert len(text) >= 4, text  # room for an until string that is not at the start
    return text


@pytest.fixture(scope="module")
def evaluated(lm, greedy_text, tmp_path_factory):
    """One lm-eval run over the three tasks, with per-sample logs."""
    directory = tmp_path_factory.mktemp("lm_eval_tasks")
    _write_task(
        directory,
        "toy_mc",
        MC_DOCS,
        output_type="multiple_choice",
        doc_to_text="{{question}}",
        doc_to_choice="choices",
        doc_to_target="label",
        metric_list=[{"metric": "acc"}, {"metric": "acc_norm"}],
    )
    _write_task(
        directory,
        "toy_rolling",
        [{"text": ROLLING_TEXT}],
        output_type="loglikelihood_rolling",
        doc_to_text="",
        doc_to_target="{{text}}",
        metric_list=[{"metric": "word_perplexity"}],
    )
    _write_task(
        directory,
        "toy_gen",
        [{"context": GEN_CONTEXT, "target": "fox"}],
        output_type="generate_until",
        doc_to_text="{{context}}",
        doc_to_target="{{target}}",
        generation_kwargs={"until": [greedy_text[2:4]], "max_gen_toks": MAX_GEN_TOKS},
        metric_list=[{"metric": "exact_match"}],
    )
    model, params, tok = lm
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HF_DATASETS_OFFLINE", "1")
        env.setenv("HF_HUB_OFFLINE", "1")
        return lm_eval.simple_evaluate(
            model=SubquadraticLM.from_model(model, params, tok, batch_size=3),
            tasks=["toy_mc", "toy_rolling", "toy_gen"],
            task_manager=TaskManager(include_path=str(directory), include_defaults=False),
            bootstrap_iters=0,
            log_samples=True,
        )


def test_multiple_choice_equals_the_native_scorer(lm, evaluated):
    model, params, tok = lm
    native, by_request = [], {}
    for doc in MC_DOCS:
        requests = [(doc["question"], " " + c) for c in doc["choices"]]
        scores = scoring.loglikelihood(model, params, tok, requests)
        by_request.update(zip(requests, scores, strict=True))
        native.append(scoring.multiple_choice([s for s, _ in scores], doc["choices"], doc["label"]))
    results = evaluated["results"]["toy_mc"]
    for metric in ("acc", "acc_norm"):
        assert results[f"{metric},none"] == pytest.approx(np.mean([n[metric] for n in native]))
    for sample in evaluated["samples"]["toy_mc"]:
        for args, [(logp, greedy)] in zip(sample["arguments"], sample["resps"], strict=True):
            assert logp == pytest.approx(by_request[tuple(args)][0], abs=1e-4)
            assert greedy == by_request[tuple(args)][1]


def direct_rolling(model, params, ids, eos_id):
    """Every token predicted once, by unpadded forward passes of MAX_LEN inputs: the first
    window after end of text, the later ones from the token before them, the last one with
    a full window of context (lm-eval's loglikelihood_rolling)."""
    seq, total, start = [eos_id, *ids], 0.0, 0
    while start < len(ids):
        end = min(start + MAX_LEN, len(ids))
        first = max(0, end - MAX_LEN) if end == len(ids) and start > 0 else start
        logp = jax.nn.log_softmax(model.apply(params, jnp.asarray([seq[first:end]])), -1)[0]
        total += float(sum(logp[j - first, ids[j]] for j in range(start, end)))
        start = end
    return total


def test_rolling_loglikelihood_equals_a_direct_computation(lm, evaluated):
    model, params, tok = lm
    ids = tok.encode(ROLLING_TEXT)
    assert len(ids) > 2 * MAX_LEN and len(ids) % MAX_LEN  # several windows, a partial last
    [sample] = evaluated["samples"]["toy_rolling"]
    got = sample["resps"][0][0]
    assert got == pytest.approx(direct_rolling(model, params, ids, tok.eos_id), abs=1e-3)


def test_rolling_windows_predict_each_token_once():
    # The example of lm-eval's LM.loglikelihood_rolling docstring (max length 4).
    assert rolling_windows(list(range(10)), -1, 4) == [
        ([-1], [0, 1, 2, 3]),
        ([3], [4, 5, 6, 7]),
        ([5, 6, 7], [8, 9]),
    ]
    assert rolling_windows([], -1, 4) == []


def test_generate_until_stops_before_the_until_string(evaluated, greedy_text):
    [sample] = evaluated["samples"]["toy_gen"]
    until = greedy_text[2:4]
    assert sample["arguments"][0][1]["until"] == [until]
    [[text]] = sample["resps"]
    assert text == greedy_text[: greedy_text.index(until)] and until not in text


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory of a two-step MQAR training run over 256 token ids."""
    from configs.synthetic import mqar
    from experiments import train as train_lib

    config = mqar.get_config("mamba")
    config.task.options.vocab_size = 256
    config.model.d_model, config.model.n_layers = 16, 1
    config.train.steps, config.train.warmup_steps, config.train.log_every = 2, 1, 1
    config.train.eval_every = config.train.checkpoint_every = 2
    config.train.eval_steps, config.train.progress, config.train.tensorboard = 1, False, False
    workdir = str(tmp_path_factory.mktemp("lm_eval_run") / "run")
    train_lib.train(config, workdir)
    return workdir


def test_pretrained_run_directory_as_lm_eval_builds_it(run_dir, tokenizer_json):
    adapter = get_model("subquadratic").create_from_arg_string(
        f"pretrained={run_dir},batch_size=2", {"batch_size": None, "device": None}
    )
    model, params, tok = load_lm(run_dir)
    assert tok.name == "byte" and adapter.tokenizer_name == "byte"
    requests = [("Hello", " world"), ("ab", "c"), ("x", "yz")]
    instances = [
        Instance("loglikelihood", {}, r, i, metadata=("toy", i, 1)) for i, r in enumerate(requests)
    ]
    native = scoring.loglikelihood(model, params, tok, requests)
    for (logp, greedy), (want, want_greedy) in zip(
        adapter.loglikelihood(instances, disable_tqdm=True), native, strict=True
    ):
        assert logp == pytest.approx(want, abs=1e-4) and greedy == want_greedy
    with pytest.raises(LoadError, match="300 ids but the model only 256"):
        load_lm(run_dir, tokenizer=str(tokenizer_json))


def test_load_errors_are_one_line(tmp_path):
    with pytest.raises(LoadError, match="no such file or directory") as error:
        load_lm(str(tmp_path / "missing"))
    assert "\n" not in str(error.value)
