"""Retail's audit checks (``trajectory2task.domains.audit_checks``), read from its policy.

The policy (``policy.md``, tau2's retail rules) transfers to a human only a request outside
the agent's actions, and denies what it forbids: a refused write is never a hand-off. An
exchange or a modification must change an item's options, so a request for the very variant
held is one the customer makes knowingly ("another one exactly like it"); and a customer
names an option with its name ("size S"), not by a value that could be anything ("S").
Retail sets no compensation, so it has no ``compensation_off_policy`` check.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, cast

from trajectory2task.domains.audit_checks import AuditCheck, handoff_findings, writes_with_state
from trajectory2task.domains.retail.models import Product
from trajectory2task.domains.runtime import Environment, Episode

if TYPE_CHECKING:
    from trajectory2task.signatures.models import Task

# words that say the new item is the one already held
_SAME = re.compile(r"\b(?:same|identical|exactly like|just like)\b", re.IGNORECASE)
# where an option list that follows "with" ends
_LIST_END = re.compile(r"[.;!?]| for | from | in (?:your|one|the)\b| instead\b| using | paying | settling ")


def _handoff_not_required(task: Task, environment: Environment[Any]) -> list[str]:
    return handoff_findings(environment, task, lambda state, write: False)


def _item_pairs(arguments: dict[str, Any]) -> list[tuple[str, str]]:
    held, new = arguments.get("item_ids"), arguments.get("new_item_ids")
    if not isinstance(held, list) or not isinstance(new, list):
        return []
    return [(str(a), str(b)) for a, b in zip(held, new)]


def _options_by_product(episode: Episode[Any], item_ids: set[str]) -> dict[str, dict[str, set[str]]]:
    """Product name -> option name -> every value its variants take, for the products of ``item_ids``."""
    out: dict[str, dict[str, set[str]]] = {}
    for key in episode.keys("products"):
        product = cast(Product, episode.get("products", key))
        if item_ids.isdisjoint(product.variants):
            continue
        options = out.setdefault(product.name, {})
        for variant in product.variants.values():
            for name, value in variant.options.items():
                options.setdefault(name, set()).add(value)
    return out


def _says_its_option(name: str, value: str) -> bool:
    """Whether a value read alone says which option it is: it holds the option's words ("full
    size" of size, "Brand A" of brand) or is one of a name's alternatives ("bagless")."""
    words = value.lower().split()
    return set(name.lower().split()) <= set(words) or value.lower() in name.lower().split("/")


def _bare_values(text: str, options: dict[str, dict[str, set[str]]]) -> list[str]:
    """Option values said alone in "<product or one> with <list>" (e.g. "the T-Shirt with S")."""
    found = []
    for product, named in options.items():
        for match in re.finditer(r"\b(?:one|" + re.escape(product) + r") with (.+)", text):
            listed = _LIST_END.split(match.group(1), maxsplit=1)[0]
            for part in re.split(r", (?:and )?| and ", listed):
                part = part.strip().removeprefix("the ")
                bare = [n for n, values in named.items() if part in values and not _says_its_option(n, part)]
                if bare:
                    found.append(f"'{part}' ({bare[0]} of the {product}) stands alone in '{match.group(0)[:80]}'")
    return list(dict.fromkeys(found))


def _same_variant_request(task: Task, environment: Environment[Any]) -> list[str]:
    text = task.scenario.read_text()
    out: list[str] = []
    named: set[str] = set()
    for where, _, action in writes_with_state(environment, task):
        pairs = _item_pairs(action.arguments)
        named.update(i for pair in pairs for i in pair)
        same = [held for held, new in pairs if held == new]
        if same and not _SAME.search(text):
            out.append(f"the {where} {action.name} asks for item {same[0]}, the very variant held, "
                       "and the words never say it is the same one")
    if named:
        out += _bare_values(text, _options_by_product(environment.episode(), named))
    return list(dict.fromkeys(out))


AUDIT_CHECKS = (
    AuditCheck("handoff_not_required", "A refused write is denied, never handed off to a human.",
               _handoff_not_required),
    AuditCheck("same_variant_request",
               "A request for the variant held says it is the same one; an option is said with its name.",
               _same_variant_request),
)
