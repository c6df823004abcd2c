"""The eight zero-shot tasks: requests from the fixture files against strings written by
hand from lm-eval 0.4.13's task configs, per-doc and aggregate metrics, error messages,
and (where lm_eval is installed) the requests lm-eval's own configs build."""

import dataclasses
import json
import os

import numpy as np
import pytest

from experiments.zeroshot.tasks import TASKS, Doc, get_task
from tests.experiments.zeroshot_fixtures import write_hf_task_files

NAMES = [
    "lambada_openai",
    "hellaswag",
    "piqa",
    "arc_easy",
    "arc_challenge",
    "winogrande",
    "openbookqa",
    "sciq",
]


def _mc(context, choices, gold):
    """A multiple-choice Doc written out: each choice after a single space."""
    return Doc(tuple((context, " " + c) for c in choices), gold, tuple(choices))


HELLASWAG_WIKIHOW = (
    "Personal Care and Style: How to dye your hair with tea. Brew a strong pot of tea. "
    "Use three to five tea bags for every cup of water."
)
SCIQ_1 = (
    "Water boils at 100 degrees Celsius at sea level. At higher altitudes it boils at "
    "lower temperatures.\nQuestion: At sea level, water boils at what temperature?\nAnswer:"
)
ARC_C_2 = (
    "Question: Why does a metal spoon feel colder than a wooden spoon at the same "
    "temperature?\nAnswer:"
)

EXPECTED = {
    "lambada_openai": [
        Doc(
            (
                (
                    'The lamp flickered twice, then went dark. "Check the fuse box," said '
                    "Mara, handing her brother a",
                    " flashlight",
                ),
            ),
            0,
            ("flashlight",),
        ),
        Doc(
            (("Nobody else had a key, so the clerk handed the letter to", " O'Brien"),),
            0,
            ("O'Brien",),
        ),
        Doc(
            (
                (
                    "Amélie poured the café au lait and said “merci” to the waiter, who bowed to",
                    " Amélie",
                ),
            ),
            0,
            ("Amélie",),
        ),
        # split(' ') keeps the empty word between the two spaces: the context ends in one
        Doc(
            (
                (
                    "He asked for the bill twice before the waiter finally brought the ",
                    " check",
                ),
            ),
            0,
            ("check",),
        ),
    ],
    "hellaswag": [
        _mc(
            "Roof shingle removal: A man is sitting on a roof. He",
            [
                "is reading a map of the city.",
                "is eating a sandwich on the ladder.",
                "falls asleep in the sun.",
                "starts pulling up old shingles with a bar.",
            ],
            3,
        ),
        # strip, " [title]" -> ". ", brackets removed, "  " -> " " once; the stripped
        # ending that began with "[substeps]" keeps a leading space
        _mc(
            HELLASWAG_WIKIHOW,
            [
                " Let the tea cool completely before you use it.",
                "Pour the tea over your hair. and rinse it out at once.",
                "Drink the tea and then wash your hair.",
                "Add a cup of salt to the pot.",
            ],
            0,
        ),
        # str.capitalize lowercases the rest of ctx_b
        _mc(
            "Making a cake: A woman pours flour into a bowl. The woman then adds nacl",
            [
                "and throws the bowl away.",
                "and stirs the mixture with a spoon.",
                "and paints the wall.",
                "and sings to the oven.",
            ],
            1,
        ),
    ],
    "piqa": [
        _mc(
            "Question: To keep bread fresh longer,\nAnswer:",
            [
                "store it in a sealed bag at room temperature.",
                "store it in an open bowl of water.",
            ],
            0,
        ),
        _mc(
            "Question: How do I loosen a tight jar lid?\nAnswer:",
            [
                "Put the jar in the freezer for an hour, then twist.",
                "Run the lid under hot water for a minute, then twist.",
            ],
            1,
        ),
        _mc(
            "Question: Remove a splinter\nAnswer:",
            ["Push it deeper with a thumb.", "Pull it out with clean tweezers."],
            1,
        ),
    ],
    "arc_easy": [
        _mc(
            "Question: Which of these is a source of light?\nAnswer:",
            ["a mirror", "the Moon", "a candle flame", "a window"],
            2,
        ),
        _mc(
            "Question: Which unit is used to measure the mass of an apple?\nAnswer:",
            ["meter", "gram", "liter", "second"],
            1,
        ),
        _mc(
            "Question: What do plants take from the air to make food?\nAnswer:",
            ["oxygen", "carbon dioxide", "nitrogen"],
            1,
        ),
    ],
    "arc_challenge": [
        _mc(
            "Question: A student heats 10 g of ice until it melts. What is the mass of "
            "the water?\nAnswer:",
            ["5 g", "9 g", "10 g", "11 g", "20 g"],
            2,
        ),
        _mc(
            ARC_C_2,
            [
                "Metal is colder.",
                "Metal conducts heat away from the hand faster.",
                "Wood makes its own heat.",
                "Metal absorbs cold.",
            ],
            1,
        ),
        _mc(
            "Question: Which process moves water from the ocean into the air?\nAnswer:",
            ["evaporation", "condensation", "precipitation", "runoff"],
            0,
        ),
    ],
    "winogrande": [
        Doc(
            (
                ("Kevin lent his umbrella to Brian because Kevin", " was going out into the rain."),
                ("Kevin lent his umbrella to Brian because Brian", " was going out into the rain."),
            ),
            1,
            (
                "Kevin lent his umbrella to Brian because Kevin",
                "Kevin lent his umbrella to Brian because Brian",
            ),
        ),
        Doc(
            (
                ("Lisa borrowed Amy's notes because Lisa", " 's handwriting was neater."),
                ("Lisa borrowed Amy's notes because Amy", " 's handwriting was neater."),
            ),
            1,
            ("Lisa borrowed Amy's notes because Lisa", "Lisa borrowed Amy's notes because Amy"),
        ),
        Doc(
            (
                ("Jessica", " was afraid of the dog, so Megan walked Jessica home."),
                ("Megan", " was afraid of the dog, so Megan walked Jessica home."),
            ),
            0,
            ("Jessica", "Megan"),
        ),
    ],
    "openbookqa": [
        _mc(
            "A magnet will stick to",
            ["a wooden spoon", "an iron nail", "a glass cup", "a rubber band"],
            1,
        ),
        _mc("When water freezes it becomes", ["a gas", "warmer", "lighter than air", "a solid"], 3),
        _mc(
            "An animal that hunts others for food is a",
            ["predator", "producer", "decomposer", "prey"],
            0,
        ),
    ],
    "sciq": [
        _mc(
            SCIQ_1,
            [
                "50 degrees Celsius",
                "0 degrees Celsius",
                "212 degrees Celsius",
                "100 degrees Celsius",
            ],
            3,
        ),
        _mc(
            "\nQuestion: What is the closest star to Earth?\nAnswer:",
            ["Sirius", "Polaris", "Vega", "the Sun"],
            3,
        ),
        # lstrip only: the trailing spaces of the support stay
        _mc(
            "Mitochondria release energy from food.  \nQuestion: Which organelle releases "
            "energy from food?\nAnswer:",
            ["ribosome", "nucleus", "vacuole", "mitochondria"],
            3,
        ),
    ],
}


def test_the_eight_tasks():
    assert list(TASKS) == NAMES
    assert all(TASKS[n].name == n for n in NAMES)
    headline_norm = {n for n in NAMES if TASKS[n].headline == "acc_norm"}
    assert headline_norm == {"hellaswag", "arc_challenge", "openbookqa"}
    assert TASKS["lambada_openai"].metrics == ("acc", "ppl")
    assert TASKS["winogrande"].metrics == ("acc",)
    for name in set(NAMES) - {"lambada_openai", "winogrande"}:
        assert TASKS[name].metrics == ("acc", "acc_norm")
    for task in TASKS.values():
        assert task.headline in task.metrics
        assert "http" in task.source and "\n" not in task.source


@pytest.mark.parametrize("name", NAMES)
def test_requests_from_release_files(zeroshot_dir, name):
    assert get_task(name).load(zeroshot_dir) == EXPECTED[name]


@pytest.mark.parametrize("name", NAMES)
def test_hugging_face_exports_read_the_same(tmp_path, name):
    files = {n: TASKS[n].files[0] for n in NAMES}
    write_hf_task_files(tmp_path, files)
    assert get_task(name).load(tmp_path) == EXPECTED[name]


def test_multiple_choice_process_and_aggregate():
    piqa = get_task("piqa")
    doc = Doc((("q", " ab"), ("q", " abcdef")), gold=1, choices=("ab", "abcdef"))
    # -3 > -4.8 picks choice 0; per character -1.5 < -0.8 picks choice 1
    first = piqa.process(doc, [(-3.0, False), (-4.8, True)])
    assert first == {"acc": 0.0, "acc_norm": 1.0}
    second = piqa.process(doc, [(-9.0, False), (-1.0, False)])
    assert second == {"acc": 1.0, "acc_norm": 1.0}
    assert piqa.aggregate([first, second]) == {"acc": 0.5, "acc_norm": 1.0}
    with pytest.raises(ValueError, match="1 results for 2 requests"):
        piqa.process(doc, [(-1.0, True)])
    with pytest.raises(ValueError, match="no per-doc scores"):
        piqa.aggregate([])


def test_acc_norm_divides_by_the_choice_without_its_leading_space(zeroshot_dir):
    doc = get_task("arc_easy").load(zeroshot_dir)[2]  # oxygen / carbon dioxide / nitrogen
    # per character of "oxygen" (6), "carbon dioxide" (14), "nitrogen" (8)
    scores = get_task("arc_easy").process(doc, [(-6.6, False), (-14.7, False), (-8.0, False)])
    assert scores == {"acc": 0.0, "acc_norm": 0.0}  # -1.1, -1.05, -1.0: nitrogen
    scores = get_task("arc_easy").process(doc, [(-6.6, False), (-13.3, False), (-8.0, False)])
    assert scores == {"acc": 0.0, "acc_norm": 1.0}  # -0.95 for carbon dioxide


def test_winogrande_reports_acc_only(zeroshot_dir):
    wino = get_task("winogrande")
    doc = wino.load(zeroshot_dir)[0]
    assert wino.process(doc, [(-5.0, False), (-2.0, True)]) == {"acc": 1.0}
    assert wino.aggregate([{"acc": 1.0}, {"acc": 0.0}, {"acc": 0.0}]) == {"acc": 1 / 3}


def test_lambada_acc_and_perplexity(zeroshot_dir):
    lambada = get_task("lambada_openai")
    docs = lambada.load(zeroshot_dir)
    logliks = [-2.0, -0.5, -7.25, -1.5]
    greedy = [True, False, True, True]
    per_doc = [lambada.process(d, [(x, g)]) for d, x, g in zip(docs, logliks, greedy, strict=True)]
    assert per_doc[1] == {"acc": 0.0, "loglikelihood": -0.5}
    out = lambada.aggregate(per_doc)
    assert out["acc"] == 0.75
    np.testing.assert_allclose(out["ppl"], np.exp(-np.mean(logliks)), rtol=1e-12)
    assert set(out) == {"acc", "ppl"}


@pytest.mark.parametrize("name", NAMES)
def test_missing_file_names_the_path_and_the_source(tmp_path, name):
    task = get_task(name)
    with pytest.raises(FileNotFoundError) as err:
        task.load(tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / name / task.files[0]) in message
    assert task.source in message


def test_piqa_needs_its_labels_file(zeroshot_dir, tmp_path):
    (tmp_path / "piqa").mkdir()
    (tmp_path / "piqa" / "valid.jsonl").write_bytes(
        (zeroshot_dir / "piqa" / "valid.jsonl").read_bytes()
    )
    with pytest.raises(FileNotFoundError, match="valid-labels.lst: no such file"):
        get_task("piqa").load(tmp_path)
    (tmp_path / "piqa" / "valid-labels.lst").write_text("0\n1\n")
    with pytest.raises(ValueError, match=r"valid-labels.lst: 2 labels for the 3 questions"):
        get_task("piqa").load(tmp_path)


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


GOOD_ARC = json.dumps(
    {
        "id": "x",
        "question": {"stem": "Q?", "choices": [{"text": "a", "label": "A"}]},
        "answerKey": "A",
    }
)


@pytest.mark.parametrize(
    ("name", "file", "text", "match"),
    [
        (
            "arc_easy",
            "ARC-Easy-Test.jsonl",
            GOOD_ARC + '\n{"question": {"stem": "Q?"}}\n',
            r"ARC-Easy-Test.jsonl:2: missing field 'question.choices'",
        ),
        (
            "arc_easy",
            "ARC-Easy-Test.jsonl",
            GOOD_ARC.replace('"answerKey": "A"', '"answerKey": "C"') + "\n",
            r"ARC-Easy-Test.jsonl:1: answerKey 'C' is not one of the labels \['A'\]",
        ),
        (
            "lambada_openai",
            "lambada_test.jsonl",
            '{"text": "a b"}\n\n{"txt": "c d"}\n',
            r"lambada_test.jsonl:3: missing field 'text'",
        ),
        (
            "lambada_openai",
            "lambada_test.jsonl",
            '{"text": "a b"\n',
            r"lambada_test.jsonl:1: not valid JSON",
        ),
        (
            "hellaswag",
            "hellaswag_val.jsonl",
            '{"activity_label": "A", "ctx_a": "b", "ctx_b": "c", "label": 0}\n',
            r"hellaswag_val.jsonl:1: missing field 'endings'",
        ),
        (
            "winogrande",
            "dev.jsonl",
            '{"sentence": "no blank", "option1": "a", "option2": "b", "answer": "1"}\n',
            r"dev.jsonl:1: field 'sentence' has no blank",
        ),
        (
            "openbookqa",
            "test.jsonl",
            '{"question_stem": "s", "choices": {"text": ["a"], "label": ["A"]}}\n',
            r"test.jsonl:1: missing field 'answerKey'",
        ),
        (
            "sciq",
            "test.json",
            '[{"question": "q", "support": "s"}]',
            r"test.json item 0: missing field 'distractor1'",
        ),
    ],
    ids=[
        "arc-missing-choices",
        "arc-unknown-key",
        "lambada-missing-text",
        "lambada-bad-json",
        "hellaswag-missing-endings",
        "winogrande-no-blank",
        "obqa-missing-key",
        "sciq-missing-distractor",
    ],
)
def test_malformed_line_names_file_line_and_field(tmp_path, name, file, text, match):
    _write(tmp_path / name / file, text)
    with pytest.raises(ValueError, match=match):
        get_task(name).load(tmp_path)


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown zero-shot task 'lambada'") as err:
        get_task("lambada")
    assert all(name in str(err.value) for name in NAMES)


# ---------------------------------------------------------------- against lm-eval itself

LM_EVAL_CONFIGS = {  # task -> (config under lm_eval/tasks/, the split it evaluates)
    "lambada_openai": ("lambada/lambada_openai.yaml", "test"),
    "hellaswag": ("hellaswag/hellaswag.yaml", "validation"),
    "piqa": ("piqa/piqa.yaml", "validation"),
    "arc_easy": ("arc/arc_easy.yaml", "test"),
    "arc_challenge": ("arc/arc_challenge.yaml", "test"),
    "winogrande": ("winogrande/default.yaml", "validation"),
    "openbookqa": ("openbookqa/openbookqa.yaml", "test"),
    "sciq": ("sciq/sciq.yaml", "test"),
}


def _lm_eval_docs(lm_eval, root, name, cache_dir) -> list[Doc]:
    """lm-eval's own task, its dataset swapped for the local JSONL export: the requests
    its construct_requests builds, gold from doc_to_target (doc_to_text for WinoGrande's
    multiple inputs), choices from doc_to_choice."""
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    config_file, split = LM_EVAL_CONFIGS[name]
    config = load_yaml(os.path.join(os.path.dirname(lm_eval.__file__), "tasks", config_file))
    data_file = str(root / name / TASKS[name].files[0])
    config.update(
        dataset_path="json",
        dataset_name=None,
        dataset_kwargs={"data_files": {split: data_file}, "cache_dir": str(cache_dir)},
        training_split=None,
        validation_split=None,
        test_split=None,
    )
    config[f"{split}_split"] = split
    task = ConfigurableTask(config=config)
    docs = []
    for doc in task.eval_docs:
        context = task.fewshot_context(doc, num_fewshot=0)
        requests = task.construct_requests(doc, context)
        requests = requests if isinstance(requests, list) else [requests]
        pairs = tuple(tuple(r.arguments) for r in requests)
        if task.OUTPUT_TYPE == "loglikelihood":
            docs.append(Doc(pairs, 0, (pairs[0][1][1:],)))
            continue
        gold = task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc)
        docs.append(Doc(pairs, int(gold), tuple(task.doc_to_choice(doc))))
    return docs


def test_requests_equal_lm_evals_own(tmp_path):
    lm_eval = pytest.importorskip("lm_eval", reason="compares with lm-eval's task configs")
    files = {n: TASKS[n].files[0] for n in NAMES}
    write_hf_task_files(tmp_path / "data", files)
    for name in NAMES:
        theirs = _lm_eval_docs(lm_eval, tmp_path / "data", name, tmp_path / "hf_cache")
        assert theirs == EXPECTED[name], name
        ours = get_task(name).load(tmp_path / "data")
        assert [dataclasses.astuple(d) for d in ours] == [dataclasses.astuple(d) for d in theirs]


def test_published_rows_use_the_headline_metrics():
    from experiments.zeroshot.published import ROWS

    assert [r.model for r in ROWS] == [
        "RWKV-4 169M",
        "Pythia 160M",
        "RWKV-4 430M",
        "Pythia 410M",
        "Pythia-160M",
        "Mamba-130M",
        "Pythia-410M",
        "Mamba-370M",
    ]
    for row in ROWS:
        assert row.family in {"rwkv4", "pythia", "mamba"} and row.params > 1e8
        for task, values in row.scores.items():
            expected = {"ppl", "acc"} if task == "lambada_openai" else {TASKS[task].headline}
            assert set(values) == expected, (row.model, task)
        assert set(row.scores) >= set(NAMES) - {"sciq"}
    assert ROWS[0].scores["sciq"]["acc"] == 77.50
    assert ROWS[5].scores["lambada_openai"] == {"ppl": 16.07, "acc": 44.3}  # Mamba-130M
    with pytest.raises(TypeError):  # read-only
        ROWS[0].scores["piqa"]["acc"] = 0.0
