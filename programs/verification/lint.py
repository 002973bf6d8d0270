"""Lint: text a customer would say, checked by code on every task the pipeline keeps.

Rules (each finding names its rule, the field and an excerpt):

- ``doubled_word``: the same word twice in a row ("When when");
- ``doubled_sentence``: the same sentence twice in the user's text (across its fields);
- ``double_punctuation``: two punctuation marks in a row (".;", ",.", "..") other than an
  ellipsis, "?!" or a closing quote or bracket;
- ``raw_id``: an identifier a customer would not know (a payment-method, item, product or
  user id), taken from the initial database by the kit's grounding hints;
- ``option_list``: options written as ``key: value`` pairs ("color: black, size: L");
- ``stale_description``: no description, a description that names a trajectory instead of
  saying what the task is, or an adapted task's description that does not say its condition.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any

from trajectory2task.domains import Environment
from trajectory2task.signatures.models import LintFinding, Task

_WORD_REPEAT = re.compile(r"\b([A-Za-z]+)\s+\1\b", re.IGNORECASE)
_DOUBLE_PUNCT = re.compile(r"(?<!\.)[.;,:!?]\s*[.;,:](?!\.)")
_OPTION_PAIRS = re.compile(r"\b[a-z][a-z ]{0,20}: [^,;:()\s]+(?:, [a-z][a-z ]{0,20}: [^,;:()\s]+)+")
_OPTION_PAREN = re.compile(r"\(\s*[a-z][a-z ]{0,20}: [^)]+\)")
_TOKEN = re.compile(r"[A-Za-z0-9_#@.\-]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")  # a full stop inside "0.5" or "#W1.2" ends nothing
# words that legitimately repeat ("that that" is rare enough to flag; numbers are not words here)
_REPEAT_OK = {"had", "ha", "bye"}


def user_text_fields(task: Task) -> Iterator[tuple[str, str]]:
    """(field, text) of everything the simulated user reads."""
    yield from task.scenario.read_fields()


def _folded(task: Task) -> str:
    """The scenario as one free text, as exported for tau2 (where "When when" used to come from)."""
    return task.scenario.folded_instructions()


def _excerpt(text: str, start: int, end: int) -> str:
    return text[max(0, start - 20):end + 20].strip()


def _doubled_words(field: str, text: str) -> Iterator[LintFinding]:
    for match in _WORD_REPEAT.finditer(text):
        if match.group(1).lower() not in _REPEAT_OK:
            yield LintFinding(rule="doubled_word", field=field, excerpt=_excerpt(text, match.start(), match.end()))


def _double_punctuation(field: str, text: str) -> Iterator[LintFinding]:
    for match in _DOUBLE_PUNCT.finditer(text):
        yield LintFinding(rule="double_punctuation", field=field, excerpt=_excerpt(text, match.start(), match.end()))


def _option_lists(field: str, text: str) -> Iterator[LintFinding]:
    for pattern in (_OPTION_PAIRS, _OPTION_PAREN):
        for match in pattern.finditer(text):
            yield LintFinding(rule="option_list", field=field, excerpt=_excerpt(text, match.start(), match.end()))


def _doubled_sentences(fields: list[tuple[str, str]]) -> Iterator[LintFinding]:
    """A sentence of 4+ words that occurs twice in the texts, on its own or inside another
    sentence (a revised request repeated inside the instructions)."""
    texts = [" ".join(text.lower().split()) for _, text in fields]
    reported: set[str] = set()
    for (field, _), text in zip(fields, texts):
        for part in _SENTENCE_END.split(text):
            sentence = part.strip(" \"'")
            if len(sentence.split()) < 4 or sentence in reported:
                continue
            if sum(t.count(sentence) for t in texts) > 1:
                reported.add(sentence)
                yield LintFinding(rule="doubled_sentence", field=field, excerpt=sentence[:120])


def _raw_ids(field: str, text: str, private: frozenset[str]) -> Iterator[LintFinding]:
    for match in _TOKEN.finditer(text):
        token = match.group(0).strip(".-")
        if token in private:
            yield LintFinding(rule="raw_id", field=field, excerpt=token)


def _description(task: Task) -> Iterator[LintFinding]:
    purpose = (task.description.purpose if task.description else None) or ""
    if not purpose.strip():
        yield LintFinding(rule="stale_description", field="description", excerpt="(none)")
    elif re.search(r"\btrajectory\b", purpose, re.IGNORECASE):
        yield LintFinding(rule="stale_description", field="description", excerpt=purpose[:120])
    elif task.condition != "general" and task.condition not in purpose.lower():
        yield LintFinding(rule="stale_description", field="description", excerpt=purpose[:120])


def lint_task(task: Task, private_ids: Iterable[str] = ()) -> list[LintFinding]:
    """Every finding of the rules above on one task."""
    private = frozenset(private_ids)
    fields = list(user_text_fields(task))
    findings: list[LintFinding] = []
    for field, text in fields:
        findings += _doubled_words(field, text)
        findings += _double_punctuation(field, text)
        findings += _option_lists(field, text)
        if private:
            findings += _raw_ids(field, text, private)
    findings += _doubled_sentences(fields)
    folded = _folded(task)
    findings += _doubled_words("task_instructions (exported)", folded)
    findings += _double_punctuation("task_instructions (exported)", folded)
    findings += _doubled_sentences([("task_instructions (exported)", folded)])
    findings += _description(task)
    return findings


# ---------------------------------------------------------------- ids a customer would not know


def private_ids(environment: Environment[Any]) -> frozenset[str]:
    """Ids in the initial database that a customer would not say: every value under an id
    key of the kit's grounding hints whose kind is not one the kit marks as known to
    customers (an order number is; a payment-method id is not). Empty without a kit."""
    kit = environment.domain.kit
    if kit is None:
        return frozenset()
    hints = kit.exploration.hints
    known = set(kit.exploration.customer_id_kinds)
    private_keys = {key for key, kind in hints.id_keys.items() if kind not in known}
    return _private_ids(environment, frozenset(private_keys))


@lru_cache(maxsize=8)
def _private_ids(environment: Environment[Any], keys: frozenset[str]) -> frozenset[str]:
    episode = environment.episode()
    out: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                if key in keys:
                    if isinstance(inner, str):
                        out.add(inner)
                    elif isinstance(inner, list):
                        out.update(i for i in inner if isinstance(i, str))
                    elif isinstance(inner, dict):
                        out.update(inner)
                walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)

    for table in _tables(environment):
        for key in episode.keys(table):
            walk(episode.record(table, key))
    # short or all-letter values ("paypal", "pending") are words, not ids
    return frozenset(i for i in out if len(i) >= 5 and re.search(r"\d", i))


def _tables(environment: Environment[Any]) -> list[str]:
    return list(environment.domain.db_model.model_fields)
