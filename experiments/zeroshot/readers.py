"""The eight zero-shot tasks' files -> loglikelihood requests, by lm-eval 0.4.13's rules.

Each reader takes the task's file paths (``ZeroShotTask.files`` under the data
directory) and returns one ``Doc`` per question. The prompts follow the task configs
in ``lm_eval/tasks/`` (cited at each builder); the continuation of a multiple-choice
request is ``target_delimiter + choice``, the delimiter being " " for all of them
(``lm_eval/config/task.py`` ``target_delimiter: str = " "``, joined in
``lm_eval/api/task.py`` ``ConfigurableTask.construct_requests``).

Two layouts are read, told apart by their fields: the public release files (OpenAI's
LAMBADA, rowanz/hellaswag, the PIQA site, AI2's ARC / WinoGrande / OpenBookQA / SciQ
zips) and JSONL exports of the Hugging Face datasets lm-eval loads. A missing or
malformed field raises ValueError naming ``file:line`` and the field.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

# lm-eval's default target_delimiter: joins a context and each choice.
DELIMITER = " "


@dataclasses.dataclass(frozen=True)
class Doc:
    """One question: its loglikelihood requests and which of them is correct.

    ``requests``: (context, continuation) pairs, lm-eval's strings exactly.
    ``gold``: index of the correct request (0 for LAMBADA's single request).
    ``choices``: lm-eval's ``doc_to_choice`` strings (no leading delimiter); acc_norm
    divides each request's log-likelihood by its choice's length in characters.
    """

    requests: tuple[tuple[str, str], ...]
    gold: int
    choices: tuple[str, ...]


# ---------------------------------------------------------------- file access


def _jsonl(path: Path) -> Iterator[tuple[str, dict]]:
    """("file:line", record) for each non-blank line of a JSONL file."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not valid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
            yield where, record


def _json_or_jsonl(path: Path) -> Iterator[tuple[str, dict]]:
    """SciQ's release is one JSON list (items named "file item i"); its Hugging Face
    export is JSONL. The first character tells which."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not text.lstrip().startswith("["):
        yield from _jsonl(path)
        return
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    for i, item in enumerate(items):
        where = f"{path} item {i}"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(item).__name__}")
        yield where, item


def _field(record: dict, name: str, where: str, kind: type = str):
    """record["a"]["b"] for name "a.b", checked to be a ``kind``."""
    value = record
    for key in name.split("."):
        if not isinstance(value, dict) or key not in value:
            raise ValueError(f"{where}: missing field {name!r}")
        value = value[key]
    if not isinstance(value, kind):
        raise ValueError(
            f"{where}: field {name!r} must be a {kind.__name__}, got {type(value).__name__}"
        )
    return value


def _strings(values: list, name: str, where: str) -> list[str]:
    if not values or not all(isinstance(v, str) for v in values):
        raise ValueError(f"{where}: field {name!r} must be a non-empty list of strings")
    return values


def _integer(value, name: str, where: str) -> int:
    """An int or a string of digits (Hugging Face exports store some labels as strings)."""
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())
    ):
        raise ValueError(f"{where}: field {name!r} must be an integer, got {value!r}")
    return int(value)


def _choice_doc(context: str, choices: Sequence[str], gold: int, where: str) -> Doc:
    if not 0 <= gold < len(choices):
        raise ValueError(f"{where}: answer {gold} is not one of {len(choices)} choices")
    requests = tuple((context, DELIMITER + choice) for choice in choices)
    return Doc(requests=requests, gold=gold, choices=tuple(choices))


def _label_index(labels: list[str], key: str, where: str) -> int:
    # arc_easy.yaml / openbookqa.yaml: doc_to_target "{{choices.label.index(answerKey)}}":
    # the key is looked up among the labels as written, letters ("A".."E") or digits
    # ("1".."5") alike.
    if key not in labels:
        raise ValueError(f"{where}: answerKey {key!r} is not one of the labels {labels}")
    return labels.index(key)


def _stem_and_choices(record: dict, where: str, hf_stem: str) -> tuple[str, list, list]:
    """(stem, choice texts, choice labels) from AI2's layout (question.stem,
    question.choices[{text, label}]) or the Hugging Face one (``hf_stem``, choices.text,
    choices.label), told apart by whether "question" is an object."""
    if isinstance(record.get("question"), dict):
        stem = _field(record, "question.stem", where)
        choices = _field(record, "question.choices", where, list)
        texts, labels = [], []
        for i, choice in enumerate(choices):
            at = f"{where}: question.choices[{i}]"
            if not isinstance(choice, dict):
                raise ValueError(f"{at} must be an object with text and label")
            texts.append(_field(choice, "text", at))
            labels.append(_field(choice, "label", at))
        return stem, _strings(texts, "question.choices", where), labels
    stem = _field(record, hf_stem, where)
    texts = _strings(_field(record, "choices.text", where, list), "choices.text", where)
    labels = _strings(_field(record, "choices.label", where, list), "choices.label", where)
    return stem, texts, labels


# ---------------------------------------------------------------- the tasks


def lambada(paths: Sequence[Path]) -> list[Doc]:
    """lm_eval/tasks/lambada/lambada_openai.yaml: doc_to_text
    "{{text.split(' ')[:-1]|join(' ')}}", doc_to_target "{{' '+text.split(' ')[-1]}}"
    (split on single spaces only: a newline inside the last "word" stays in it)."""
    docs = []
    for where, record in _jsonl(paths[0]):
        words = _field(record, "text", where).split(" ")
        request = (" ".join(words[:-1]), " " + words[-1])
        docs.append(Doc(requests=(request,), gold=0, choices=(words[-1],)))
    return docs


def hellaswag_preprocess(text: str) -> str:
    """lm_eval/tasks/hellaswag/utils.py ``preprocess``: WikiHow items carry bracketed
    markers ("[title]", "[step]", ...). The order matters: strip first, so a removed
    marker at the start leaves a leading space; double spaces are replaced once."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag(paths: Sequence[Path]) -> list[Doc]:
    """lm_eval/tasks/hellaswag/utils.py ``process_docs``: query = preprocess(activity_label
    + ": " + ctx_a + " " + ctx_b.capitalize()), choices = preprocessed endings, gold =
    int(label) (an int in rowanz's file, a string in the Hugging Face one)."""
    docs = []
    for where, record in _jsonl(paths[0]):
        ctx_b = _field(record, "ctx_b", where).capitalize()  # lowercases the rest too
        ctx = _field(record, "ctx_a", where) + " " + ctx_b
        query = hellaswag_preprocess(_field(record, "activity_label", where) + ": " + ctx)
        endings = _strings(_field(record, "endings", where, list), "endings", where)
        choices = [hellaswag_preprocess(e) for e in endings]
        gold = _integer(_field(record, "label", where, object), "label", where)
        docs.append(_choice_doc(query, choices, gold, where))
    return docs


def _piqa_labels(path: Path) -> list[int]:
    labels = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                labels.append(_integer(line.strip(), "label", f"{path}:{number}"))
    return labels


def piqa(paths: Sequence[Path]) -> list[Doc]:
    """lm_eval/tasks/piqa/piqa.yaml: doc_to_text "Question: {{goal}}\\nAnswer:",
    doc_to_choice [sol1, sol2], doc_to_target label. The release keeps the labels in a
    separate file, one per line; the Hugging Face export has a "label" field."""
    questions, labels = paths
    records = list(_jsonl(questions))
    if records and "label" in records[0][1]:
        golds = [_integer(_field(r, "label", w, object), "label", w) for w, r in records]
    else:
        golds = _piqa_labels(labels)
        if len(golds) != len(records):
            raise ValueError(
                f"{labels}: {len(golds)} labels for the {len(records)} questions in {questions}"
            )
    docs = []
    for (where, record), gold in zip(records, golds, strict=True):
        context = f"Question: {_field(record, 'goal', where)}\nAnswer:"
        choices = [_field(record, "sol1", where), _field(record, "sol2", where)]
        docs.append(_choice_doc(context, choices, gold, where))
    return docs


def arc(paths: Sequence[Path]) -> list[Doc]:
    """lm_eval/tasks/arc/arc_easy.yaml (arc_challenge.yaml includes it): doc_to_text
    "Question: {{question}}\\nAnswer:", doc_to_choice choices.text, gold = the answerKey's
    index among choices.label. Some questions have 3 or 5 choices."""
    docs = []
    for where, record in _jsonl(paths[0]):
        question, texts, labels = _stem_and_choices(record, where, hf_stem="question")
        gold = _label_index(labels, _field(record, "answerKey", where), where)
        docs.append(_choice_doc(f"Question: {question}\nAnswer:", texts, gold, where))
    return docs


def winogrande(paths: Sequence[Path]) -> list[Doc]:
    """lm_eval/tasks/winogrande/preprocess_winogrande.py, partial scoring: each option
    fills the blank and ends its own context (doc_to_choice: sentence[:blank] + option);
    the rest of the sentence after the blank, stripped, is the one continuation scored
    for both (doc_to_target), after the " " delimiter; gold = answer "1"/"2" -> 0/1
    (doc_to_text). Both layouts have the same fields."""
    docs = []
    for where, record in _jsonl(paths[0]):
        sentence = _field(record, "sentence", where)
        if "_" not in sentence:
            raise ValueError(f"{where}: field 'sentence' has no blank '_'")
        blank = sentence.index("_")
        options = [_field(record, "option1", where), _field(record, "option2", where)]
        answer = str(_field(record, "answer", where, object))  # "1"/"2"; 1/2 accepted too
        if answer not in ("1", "2"):
            raise ValueError(f"{where}: field 'answer' must be '1' or '2', got {answer!r}")
        contexts = tuple(sentence[:blank] + option for option in options)
        continuation = DELIMITER + sentence[blank + 1 :].strip()
        requests = tuple((context, continuation) for context in contexts)
        docs.append(Doc(requests=requests, gold=int(answer) - 1, choices=contexts))
    return docs


def openbookqa(paths: Sequence[Path]) -> list[Doc]:
    """lm_eval/tasks/openbookqa/openbookqa.yaml: doc_to_text question_stem (the bare stem,
    no "Question:"), doc_to_choice choices.text, gold = choices.label.index(
    answerKey.lstrip())."""
    docs = []
    for where, record in _jsonl(paths[0]):
        stem, texts, labels = _stem_and_choices(record, where, hf_stem="question_stem")
        gold = _label_index(labels, _field(record, "answerKey", where).lstrip(), where)
        docs.append(_choice_doc(stem, texts, gold, where))
    return docs


def sciq(paths: Sequence[Path]) -> list[Doc]:
    """lm_eval/tasks/sciq/sciq.yaml: doc_to_text "{{support.lstrip()}}\\nQuestion:
    {{question}}\\nAnswer:" (only leading whitespace removed; an empty support leaves the
    context starting with a newline), doc_to_choice [distractor1, distractor2,
    distractor3, correct_answer], doc_to_target 3."""
    docs = []
    for where, record in _json_or_jsonl(paths[0]):
        support = _field(record, "support", where).lstrip()
        context = f"{support}\nQuestion: {_field(record, 'question', where)}\nAnswer:"
        names = ("distractor1", "distractor2", "distractor3", "correct_answer")
        choices = [_field(record, name, where) for name in names]
        docs.append(_choice_doc(context, choices, 3, where))
    return docs
