"""No module outside domains/ knows a built-in domain: the names of its tools, their
parameters and its tables are derived here from the loaded domains' tool specs and database
models, and looked for in the code of programs/, signatures/, optimize/, store/ and t2t/.

Also: each retail fact the issue counted has one home (the cancel reasons)."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

from trajectory2task.domains import get_domain, list_domains
from tests.cli import REPO

GENERAL_PACKAGES = ("programs", "signatures", "optimize", "store", "t2t")

# Names a built-in domain shares with our own domain-general vocabulary, and why they may appear:
ALLOWED_STRINGS = {
    "state": "an Optuna trial's state and the store's columns; retail's address field is named the same",
    "summary": "Domain.summary (every domain has one); the hand-off tool's argument is named the same",
}
ALLOWED_NAMES = {
    # the authenticated user: what ToolSpec.authenticates returns, in any domain; never a key
    "user_id": "a Python name for the id an authenticating tool returns",
}


def _domain_names() -> dict[str, str]:
    """Every tool, parameter and table name of the built-in domains -> where it comes from."""
    names: dict[str, str] = {}
    for domain_name in list_domains():
        domain = get_domain(domain_name)
        for spec in domain.tools:
            names.setdefault(spec.name, f"{domain_name} tool")
            for parameter in spec.arguments_model.model_fields:
                names.setdefault(parameter, f"{domain_name} parameter of {spec.name}")
        for table in domain.db_model.model_fields:
            names.setdefault(table, f"{domain_name} table")
    return names


def _mentions(path: Path, names: dict[str, str], root: Path = REPO) -> list[str]:
    """Where the source names a domain name: as a Python name (identifier-like names, those
    with an underscore), as a word inside a string, or as a whole string ('orders',
    'email': a key or a table). Comments are not code and are not read."""
    source = path.read_text(encoding="utf-8")
    found = []
    where = path.relative_to(root)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.NAME and "_" in token.string and token.string in names \
                and token.string not in ALLOWED_NAMES:
            found.append(f"{where}:{token.start[0]}: name {token.string} ({names[token.string]})")
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            continue
        text = node.value
        if text in names and text not in ALLOWED_STRINGS:
            found.append(f"{where}:{node.lineno}: string {text!r} ({names[text]})")
            continue
        for word in set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text)):
            if "_" in word and word in names:
                found.append(f"{where}:{node.lineno}: {word} in a string ({names[word]})")
    return found


def test_the_names_come_from_the_domains_not_a_hand_written_list():
    names = _domain_names()
    # a sample of what the specs hold, so that an empty derivation cannot pass the test below
    assert {"cancel_pending_order", "order_id", "email", "orders", "get_reservation_details", "flights"} <= set(names)


def test_no_module_outside_domains_names_a_builtin_domains_tools_parameters_or_tables():
    names = _domain_names()
    found = [hit for package in GENERAL_PACKAGES for path in sorted((REPO / package).rglob("*.py"))
             for hit in _mentions(path, names)]
    assert found == [], "\n".join(found)


def test_the_scan_finds_a_domain_name_where_there_is_one(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text('X = {"order_id": 1}\n\ndef f(tx):\n    return tx.get("orders")  # a comment on email\n')
    hits = _mentions(planted, _domain_names(), root=tmp_path)
    assert len(hits) == 2 and any("order_id" in h for h in hits) and any("'orders'" in h for h in hits)


def test_retail_cancel_reasons_have_one_home_and_one_wording_each():
    from trajectory2task.domains.retail import conditions, models, tools

    assert tools.CANCEL_REASONS is models.CANCEL_REASONS
    assert set(conditions.CANCEL_REASON_WORDS) == set(models.CANCEL_REASONS)
    for reason in models.CANCEL_REASONS:
        assert reason in conditions.cancel_reason_words(reason)
        assert any(p in conditions.cancel_reason_words(reason) for p in conditions.cancel_reason_phrases(reason))
    sources = [p for p in (REPO / "domains" / "retail").glob("*.py")
               if re.search(r"^CANCEL_REASONS\s*=", p.read_text(), re.M)]
    assert [p.name for p in sources] == ["models.py"]
