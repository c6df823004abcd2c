"""Small hand-made items for the eight zero-shot tasks, written in the public releases'
layouts (``write_task_files``) or the Hugging Face exports' (``write_hf_task_files``).

The items are invented, not taken from the datasets. Each task has the tricky bits its
rules must get right: LAMBADA punctuation, quotes, non-ASCII and a double space before
the last word; HellaSwag WikiHow brackets, " [title]", an empty ctx_b and a ctx_b that
``capitalize`` lowercases; ARC digit answer keys and 3 or 5 choices; WinoGrande blanks
mid-sentence, before "'s" and at the start; SciQ supports with leading whitespace,
trailing whitespace, and none.
"""

from __future__ import annotations

import json
from pathlib import Path

LAMBADA = [
    'The lamp flickered twice, then went dark. "Check the fuse box," said Mara, '
    "handing her brother a flashlight",
    "Nobody else had a key, so the clerk handed the letter to O'Brien",
    "Amélie poured the café au lait and said “merci” to the waiter, who bowed to Amélie",
    "He asked for the bill twice before the waiter finally brought the  check",
]

HELLASWAG = [
    {
        "ind": 4,
        "activity_label": "Roof shingle removal",
        "ctx_a": "A man is sitting on a roof.",
        "ctx_b": "he",
        "ctx": "A man is sitting on a roof. he",
        "split": "val",
        "split_type": "indomain",
        "label": 3,
        "endings": [
            "is reading a map of the city.",
            "is eating a sandwich on the ladder.",
            "falls asleep in the sun.",
            "starts pulling up old shingles with a bar.",
        ],
        "source_id": "activitynet~v_example1",
    },
    {
        "ind": 17,
        "activity_label": "Personal Care and Style",
        "ctx_a": "[header] How to dye your hair with tea [title] Brew a strong pot of tea. "
        "[step] Use three to five tea bags for every cup of water.",
        "ctx_b": "",
        "ctx": "[header] How to dye your hair with tea [title] Brew a strong pot of tea. "
        "[step] Use three to five tea bags for every cup of water.",
        "split": "val",
        "split_type": "zeroshot",
        "label": 0,
        "endings": [
            "[substeps] Let the tea cool completely before you use it.",
            "Pour the tea over your hair [title] and rinse it out at once.",
            "Drink the tea [step] and then wash your hair.",
            "Add a cup of [unclear] salt to the pot.",
        ],
        "source_id": "wikihow~example2",
    },
    {
        "ind": 29,
        "activity_label": "Making a cake",
        "ctx_a": "A woman pours flour into a bowl.",
        "ctx_b": "the woman then adds NaCl",
        "ctx": "A woman pours flour into a bowl. the woman then adds NaCl",
        "split": "val",
        "split_type": "indomain",
        "label": 1,
        "endings": [
            "and throws the bowl away.",
            "and stirs the mixture with a spoon.",
            "and paints the wall.",
            "and sings to the oven.",
        ],
        "source_id": "activitynet~v_example3",
    },
]

PIQA = [
    {
        "id": "p-1",
        "goal": "To keep bread fresh longer,",
        "sol1": "store it in a sealed bag at room temperature.",
        "sol2": "store it in an open bowl of water.",
    },
    {
        "id": "p-2",
        "goal": "How do I loosen a tight jar lid?",
        "sol1": "Put the jar in the freezer for an hour, then twist.",
        "sol2": "Run the lid under hot water for a minute, then twist.",
    },
    {
        "id": "p-3",
        "goal": "Remove a splinter",
        "sol1": "Push it deeper with a thumb.",
        "sol2": "Pull it out with clean tweezers.",
    },
]
PIQA_LABELS = [0, 1, 1]


def _ai2_question(qid, stem, choices, key):
    """AI2's layout (ARC, OpenBookQA): question.stem, question.choices[{text, label}]."""
    return {
        "id": qid,
        "question": {"stem": stem, "choices": [{"text": t, "label": l} for l, t in choices]},
        "answerKey": key,
    }


ARC_EASY = [
    _ai2_question(
        "e-1",
        "Which of these is a source of light?",
        [("A", "a mirror"), ("B", "the Moon"), ("C", "a candle flame"), ("D", "a window")],
        "C",
    ),
    _ai2_question(
        "e-2",
        "Which unit is used to measure the mass of an apple?",
        [("1", "meter"), ("2", "gram"), ("3", "liter"), ("4", "second")],
        "2",
    ),
    _ai2_question(
        "e-3",
        "What do plants take from the air to make food?",
        [("A", "oxygen"), ("B", "carbon dioxide"), ("C", "nitrogen")],
        "B",
    ),
]

ARC_CHALLENGE = [
    _ai2_question(
        "c-1",
        "A student heats 10 g of ice until it melts. What is the mass of the water?",
        [("A", "5 g"), ("B", "9 g"), ("C", "10 g"), ("D", "11 g"), ("E", "20 g")],
        "C",
    ),
    _ai2_question(
        "c-2",
        "Why does a metal spoon feel colder than a wooden spoon at the same temperature?",
        [
            ("1", "Metal is colder."),
            ("2", "Metal conducts heat away from the hand faster."),
            ("3", "Wood makes its own heat."),
            ("4", "Metal absorbs cold."),
        ],
        "2",
    ),
    _ai2_question(
        "c-3",
        "Which process moves water from the ocean into the air?",
        [("A", "evaporation"), ("B", "condensation"), ("C", "precipitation"), ("D", "runoff")],
        "A",
    ),
]

WINOGRANDE = [
    {
        "qID": "w-1",
        "sentence": "Kevin lent his umbrella to Brian because _ was going out into the rain.",
        "option1": "Kevin",
        "option2": "Brian",
        "answer": "2",
    },
    {
        "qID": "w-2",
        "sentence": "Lisa borrowed Amy's notes because _'s handwriting was neater.",
        "option1": "Lisa",
        "option2": "Amy",
        "answer": "2",
    },
    {
        "qID": "w-3",
        "sentence": "_ was afraid of the dog, so Megan walked Jessica home.",
        "option1": "Jessica",
        "option2": "Megan",
        "answer": "1",
    },
]

OPENBOOKQA = [
    _ai2_question(
        "o-1",
        "A magnet will stick to",
        [
            ("A", "a wooden spoon"),
            ("B", "an iron nail"),
            ("C", "a glass cup"),
            ("D", "a rubber band"),
        ],
        "B",
    ),
    _ai2_question(
        "o-2",
        "When water freezes it becomes",
        [("A", "a gas"), ("B", "warmer"), ("C", "lighter than air"), ("D", "a solid")],
        "D",
    ),
    _ai2_question(
        "o-3",
        "An animal that hunts others for food is a",
        [("A", "predator"), ("B", "producer"), ("C", "decomposer"), ("D", "prey")],
        "A",
    ),
]

SCIQ = [
    {
        "question": "At sea level, water boils at what temperature?",
        "distractor3": "212 degrees Celsius",
        "distractor1": "50 degrees Celsius",
        "distractor2": "0 degrees Celsius",
        "correct_answer": "100 degrees Celsius",
        "support": " \nWater boils at 100 degrees Celsius at sea level. "
        "At higher altitudes it boils at lower temperatures.",
    },
    {
        "question": "What is the closest star to Earth?",
        "distractor3": "Vega",
        "distractor1": "Sirius",
        "distractor2": "Polaris",
        "correct_answer": "the Sun",
        "support": "",
    },
    {
        "question": "Which organelle releases energy from food?",
        "distractor3": "vacuole",
        "distractor1": "ribosome",
        "distractor2": "nucleus",
        "correct_answer": "mitochondria",
        "support": "Mitochondria release energy from food.  ",
    },
]


def _write_jsonl(path: Path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def write_task_files(root) -> None:
    """The eight tasks' files, as the public releases lay them out, under root/<task>/."""
    root = Path(root)
    _write_jsonl(root / "lambada_openai" / "lambada_test.jsonl", [{"text": t} for t in LAMBADA])
    _write_jsonl(root / "hellaswag" / "hellaswag_val.jsonl", HELLASWAG)
    _write_jsonl(root / "piqa" / "valid.jsonl", PIQA)
    (root / "piqa" / "valid-labels.lst").write_text("".join(f"{x}\n" for x in PIQA_LABELS))
    _write_jsonl(root / "arc_easy" / "ARC-Easy-Test.jsonl", ARC_EASY)
    _write_jsonl(root / "arc_challenge" / "ARC-Challenge-Test.jsonl", ARC_CHALLENGE)
    _write_jsonl(root / "winogrande" / "dev.jsonl", WINOGRANDE)
    _write_jsonl(root / "openbookqa" / "test.jsonl", OPENBOOKQA)
    (root / "sciq").mkdir(parents=True, exist_ok=True)
    (root / "sciq" / "test.json").write_text(json.dumps(SCIQ, indent=1), encoding="utf-8")


# ---------------------------------------------------------------- Hugging Face layouts


def _hf_choices(record: dict, stem_field: str) -> dict:
    """AI2's nested question -> the Hugging Face ai2_arc / openbookqa fields."""
    choices = record["question"]["choices"]
    return {
        "id": record["id"],
        stem_field: record["question"]["stem"],
        "choices": {"text": [c["text"] for c in choices], "label": [c["label"] for c in choices]},
        "answerKey": record["answerKey"],
    }


def hf_records() -> dict[str, list[dict]]:
    """The same items as the Hugging Face datasets lm-eval loads lay them out."""
    return {
        "lambada_openai": [{"text": t} for t in LAMBADA],
        # Rowan/hellaswag stores the label as a string
        "hellaswag": [{**r, "label": str(r["label"])} for r in HELLASWAG],
        "piqa": [{**r, "label": x} for r, x in zip(PIQA, PIQA_LABELS, strict=True)],
        "arc_easy": [_hf_choices(r, "question") for r in ARC_EASY],
        "arc_challenge": [_hf_choices(r, "question") for r in ARC_CHALLENGE],
        "winogrande": WINOGRANDE,
        "openbookqa": [_hf_choices(r, "question_stem") for r in OPENBOOKQA],
        "sciq": SCIQ,
    }


def write_hf_task_files(root, files: dict[str, str]) -> None:
    """``hf_records`` as JSONL under root/<task>/<files[task]>."""
    for task, records in hf_records().items():
        _write_jsonl(Path(root) / task / files[task], records)
