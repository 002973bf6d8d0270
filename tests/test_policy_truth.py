"""Tasks that mean what they say: policy truth in every condition, no seams, lint-clean, kit faults contained.

The library help desk below is a domain package written outside the repository (members,
books, loans, holds; three policy rules as code; a kit of at most 60 lines). It generates in
all four conditions, and the rules are checked here by this file's own code over the
exported tasks and the raw database JSON, not by the verifier. The unit tests name the item
of issue 25 they pin down; each fails without its fix.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from trajectory2task.cli import app
from trajectory2task.domains.runtime import PolicyContext
from trajectory2task.programs.generation.adapting import BaselineAdaptation
from trajectory2task.programs.generation.exploration import BaselineExplorer
from trajectory2task.programs.generation.pipeline import GenerationConfig, GenerationPipeline, id_prefix, summarize
from trajectory2task.programs.generation.writing import BaselineWriter
from trajectory2task.programs.verification.conditions import check_ambiguous, check_changing
from trajectory2task.programs.verification.verifier import Verifier
from trajectory2task.signatures.models import Action, Reading, Task, UserScenario
from trajectory2task.store import TaskStore
from trajectory2task.store.failures import generation_items

DOMAIN_INIT = '''
    """A library help desk: members renew and return their loans and place holds on books."""

    from __future__ import annotations

    from pydantic import BaseModel

    from trajectory2task.domains.runtime import (Domain, PolicyRule, ToolError, Transaction, tool, tool_spec,
                                                 user_from_argument)


    class Member(BaseModel):
        member_id: str
        name: str
        fines: float
        loans: list[str]


    class Book(BaseModel):
        book_id: str
        title: str


    class Loan(BaseModel):
        loan_id: str
        member_id: str
        book_id: str
        renewals: int
        status: str  # "active" or "returned"


    class Hold(BaseModel):
        hold_id: str
        member_id: str
        book_id: str


    class LibraryDB(BaseModel):
        members: dict[str, Member]
        books: dict[str, Book]
        loans: dict[str, Loan]
        holds: dict[str, Hold]


    @tool("read", authenticates=user_from_argument("member_id"))
    def get_member(tx: Transaction, member_id: str) -> Member:
        """A member's profile: fines owed and the ids of their loans.

        Args:
            member_id: The member's card number, e.g. 'm1'.
        """
        member = tx.get("members", member_id)
        if member is None:
            raise ToolError("Member not found")
        return member


    @tool("read")
    def get_loan(tx: Transaction, loan_id: str) -> Loan:
        """One loan: the book, how often it was renewed, and whether it is still out.

        Args:
            loan_id: The loan's id, e.g. 'L11'.
        """
        loan = tx.get("loans", loan_id)
        if loan is None:
            raise ToolError("Loan not found")
        return loan


    def _active_loan(tx: Transaction, loan_id: str) -> Loan:
        loan = tx.for_update("loans", loan_id)
        if loan is None:
            raise ToolError("Loan not found")
        if loan.status != "active":
            raise ToolError("Loan is already returned")
        return loan


    @tool("write")
    def renew_loan(tx: Transaction, loan_id: str) -> Loan:
        """Renew a loan for another period.

        Args:
            loan_id: The loan's id, e.g. 'L11'.
        """
        loan = _active_loan(tx, loan_id)
        loan.renewals += 1
        return loan


    @tool("write")
    def return_book(tx: Transaction, loan_id: str) -> Loan:
        """Record that a loaned book has come back.

        Args:
            loan_id: The loan's id, e.g. 'L11'.
        """
        loan = _active_loan(tx, loan_id)
        loan.status = "returned"
        return loan


    @tool("write")
    def place_hold(tx: Transaction, member_id: str, book_id: str) -> Hold:
        """Put a hold on a book for a member.

        Args:
            member_id: The member's card number, e.g. 'm1'.
            book_id: The book's id, e.g. 'b1'.
        """
        if tx.get("members", member_id) is None or tx.get("books", book_id) is None:
            raise ToolError("Member or book not found")
        hold_id = f"H-{member_id}-{book_id}"
        if tx.get("holds", hold_id) is not None:
            raise ToolError("The member already holds this book")
        hold = Hold(hold_id=hold_id, member_id=member_id, book_id=book_id)
        tx.insert("holds", hold_id, hold)
        return hold


    def owner_of(episode, table, key):
        record = episode.get(table, key)
        if record is None:
            return None
        return key if table == "members" else getattr(record, "member_id", None)


    def _renewal_limit(episode, name, arguments, context):
        loan = episode.get("loans", str(arguments.get("loan_id"))) if name == "renew_loan" else None
        return f"loan {loan.loan_id} was renewed {loan.renewals} times" if loan and loan.renewals >= 3 else None


    def _hold_with_fines(episode, name, arguments, context):
        member = episode.get("members", str(arguments.get("member_id"))) if name == "place_hold" else None
        return f"{member.member_id} owes {member.fines}" if member and member.fines > 0 else None


    def _own_loans(episode, name, arguments, context):
        loan = episode.get("loans", str(arguments.get("loan_id"))) if name in ("renew_loan", "return_book") else None
        if loan and context.user_id is not None and loan.member_id != context.user_id:
            return f"loan {loan.loan_id} belongs to {loan.member_id}"
        return None


    RULES = (
        PolicyRule("max_three_renewals", "A loan is renewed at most three times.", _renewal_limit),
        PolicyRule("no_hold_with_fines", "No hold for a member who owes fines.", _hold_with_fines),
        PolicyRule("own_loans_only", "A member renews and returns only their own loans.", _own_loans),
    )

    DOMAIN = Domain(name="library", summary="A library help desk: loans, renewals, returns and holds.",
                    db_model=LibraryDB, tools=tuple(tool_spec(f) for f in (get_member, get_loan, renew_loan,
                                                                            return_book, place_hold)),
                    policy="Identify the member by card number first. Renew a loan at most three times. "
                           "No hold while the member owes fines. Act only on the member's own loans.",
                    policy_rules=RULES, owner_of=owner_of)
'''

# the whole generation kit: exploration only; the conditions come from the domain-general kit
DOMAIN_KIT = '''
    """The library with a generation kit, so the offline baselines can run on it."""

    from __future__ import annotations

    import dataclasses
    import random

    from trajectory2task.domains.generic_kit import describe_steps
    from trajectory2task.domains.kit import Call, ExplorationKit, GenerationKit, GroundingHints, Knowledge

    from library_pkg import DOMAIN as PLAIN


    def build_loan_write(knowledge: Knowledge, rng: random.Random) -> dict | None:
        loans = knowledge.known("loan_id")
        return {"loan_id": rng.choice(loans)} if loans else None


    def build_hold(knowledge: Knowledge, rng: random.Random) -> dict | None:
        members, books = knowledge.known("member_id"), knowledge.known("book_id")
        return {"member_id": members[0], "book_id": rng.choice(books)} if members and books else None


    EXPLORATION = ExplorationKit(
        hints=GroundingHints(id_keys={"loans": "loan_id", "loan_id": "loan_id", "book_id": "book_id",
                                      "member_id": "member_id"},
                             entity_keys=("loan_id", "member_id")),
        seed_table="members",
        seed_calls=lambda member: [Call(name="get_member", arguments={"member_id": member["member_id"]})],
        seed_description=lambda member: f"Member {member['member_id']} ({member['name']}).",
        walk_reads=("get_loan",),
        write_builders={"renew_loan": build_loan_write, "return_book": build_loan_write,
                        "place_hold": build_hold},
        describe=describe_steps,
        customer_id_kinds=("loan_id", "book_id", "member_id"),
    )

    DOMAIN = dataclasses.replace(PLAIN, kit=GenerationKit(exploration=EXPLORATION))
'''

# the same kit with a fault: its description of a task raises for one member in three
FAULTY_KIT = '''
    """The library kit with a bug in its describe function (a KeyError for some members)."""

    import dataclasses

    from library_pkg.kit import DOMAIN as GOOD, EXPLORATION


    def describe(env, steps, seed_entity):
        if seed_entity and seed_entity.endswith(("1", "4")):
            return {}["no such key"]
        return EXPLORATION.describe(env, steps, seed_entity)


    DOMAIN = dataclasses.replace(GOOD, kit=dataclasses.replace(
        GOOD.kit, exploration=dataclasses.replace(EXPLORATION, describe=describe)))
'''

MAX_RENEWALS = 3


def _library_db() -> dict[str, Any]:
    """Six members (two owe fines), eight books, three loans each with renewals 0..3, some returned."""
    members, books, loans = {}, {}, {}
    for b in range(1, 9):
        books[f"b{b}"] = {"book_id": f"b{b}", "title": f"Book {b}"}
    for m in range(1, 7):
        ids = []
        for k in range(1, 4):
            loan_id = f"L{m}{k}"
            ids.append(loan_id)
            loans[loan_id] = {"loan_id": loan_id, "member_id": f"m{m}", "book_id": f"b{(m + k) % 8 + 1}",
                              "renewals": (m + k) % 4, "status": "returned" if (m * k) % 5 == 0 else "active"}
        members[f"m{m}"] = {"member_id": f"m{m}", "name": f"Member {m}", "fines": 2.5 if m in (2, 5) else 0.0,
                            "loans": ids}
    return {"members": members, "books": books, "loans": loans, "holds": {}}


@pytest.fixture
def library(tmp_path, monkeypatch) -> Path:
    """The package written outside the repository, importable; returns its database's path."""
    root = tmp_path / "outside"
    (root / "library_pkg").mkdir(parents=True)
    for name, text in {"__init__.py": DOMAIN_INIT, "kit.py": DOMAIN_KIT, "faulty.py": FAULTY_KIT}.items():
        (root / "library_pkg" / name).write_text(textwrap.dedent(text).lstrip())
    monkeypatch.syspath_prepend(str(root))
    for name in list(os.environ):
        if name.startswith("T2T_"):
            monkeypatch.delenv(name)
    for module in [m for m in sys.modules if m == "library_pkg" or m.startswith("library_pkg.")]:
        monkeypatch.delitem(sys.modules, module)
    db = tmp_path / "library.json"
    db.write_text(json.dumps(_library_db()))
    return db


def _environment(library: Path, module: str = "library_pkg.kit"):
    domain = importlib.import_module(module).DOMAIN
    return domain.environment(domain.load_db(str(library)))


# ---------------------------------------------------------------- the rules, as this file states them


def _breaches(db: dict[str, Any], actions: Sequence[dict[str, Any]]) -> list[str]:
    """The library's rules broken by the writes of ``actions`` (tau2-shaped dicts), replayed on a
    copy of the raw database by this function alone: renewals past three, a hold while owing
    fines, and any write on a loan or for a member other than the one the card number named."""
    state = json.loads(json.dumps(db))
    member: str | None = None
    out = []
    for action in actions:
        name, args = action["name"], action.get("arguments") or {}
        if name == "get_member" and member is None and args.get("member_id") in state["members"]:
            member = args["member_id"]
        if name not in ("renew_loan", "return_book", "place_hold"):
            continue
        if member is None:
            out.append(f"{name} before the member is identified")
            continue
        if name == "place_hold":
            if args["member_id"] != member:
                out.append(f"hold for {args['member_id']}, not {member}")
            if state["members"][args["member_id"]]["fines"] > 0:
                out.append(f"hold while {args['member_id']} owes fines")
            continue
        loan = state["loans"][args["loan_id"]]
        if loan["member_id"] != member:
            out.append(f"{name} on {loan['loan_id']} of {loan['member_id']}, not {member}")
        if name == "renew_loan":
            if loan["renewals"] >= MAX_RENEWALS:
                out.append(f"renewal {loan['renewals'] + 1} of {loan['loan_id']}")
            loan["renewals"] += 1
        else:
            loan["status"] = "returned"
    return out


def _generate(store: Path, library: Path, module: str, n: int, seed: int) -> Any:
    return CliRunner().invoke(app, ["generate", "--domain", module, "--db", str(library), "--n", str(n),
                                    "--seed", str(seed), "--store", str(store)])


def test_a_library_package_generates_all_four_conditions_without_breaking_its_own_rules(library, tmp_path):
    assert len(textwrap.dedent(DOMAIN_KIT).strip().splitlines()) <= 60
    store = tmp_path / "t2t.duckdb"
    done = _generate(store, library, "library_pkg.kit", 30, 5)
    assert done.exit_code == 0, done.output
    exported = tmp_path / "tasks.json"
    out = CliRunner().invoke(app, ["export", "--format", "tau2", "--where", "verified", "--out", str(exported),
                                   "--store", str(store)])
    assert out.exit_code == 0, out.output
    raw_db = json.loads(library.read_text())
    tasks = json.loads(exported.read_text())
    conditions = {t["t2t"]["condition"] for t in tasks}
    assert {"general", "ambiguous", "changing", "infeasible"} <= conditions, conditions
    broken = {t["id"]: b for t in tasks if (b := _breaches(raw_db, t["evaluation_criteria"]["actions"]))}
    assert broken == {}
    # every reading of an ambiguous opening is a write the rules allow, after the gold before it
    with TaskStore(store, read_only=True) as s:
        ambiguous = [t for t in s.tasks("condition = 'ambiguous'") if t.id in {x["id"] for x in tasks}]
    assert ambiguous
    for task in ambiguous:
        gold = [a.model_dump() for a in task.gold_actions]
        for reading in task.readings:
            assert _breaches(raw_db, gold[:reading.action_index] + [reading.action.model_dump()]) == [], reading


# ---------------------------------------------------------------- item 1: policy truth in every condition


def _task(condition: str, gold: list[tuple[str, dict[str, Any]]], **fields: Any) -> Task:
    actions = [Action(name=n, arguments=a, action_id=str(i)) for i, (n, a) in enumerate(gold)]
    scenario = fields.pop("scenario", UserScenario(reason_for_call="You want to renew loan L14."))
    return Task(id=f"t-{condition}", domain="library", condition=condition, scenario=scenario, gold_actions=actions,
                **fields)


def test_a_gold_write_that_breaks_a_rule_fails_verification_naming_the_rule(library):
    env = _environment(library)
    # L13 of m1 has been renewed (1 + 3) % 4 = 0 times; L12 three times: a fourth renewal breaks the rule
    fourth = _task("general", [("get_member", {"member_id": "m1"}), ("renew_loan", {"loan_id": "L12"})])
    verdict = Verifier(env).verify_task(fourth)
    assert not verdict.passed and "gold_breaks_policy" in verdict.reasons
    assert any("max_three_renewals" in d for d in verdict.details), verdict.details
    allowed = _task("general", [("get_member", {"member_id": "m1"}), ("renew_loan", {"loan_id": "L13"})])
    assert Verifier(env).verify_task(allowed).passed


def test_every_domain_gets_the_ownership_rule_from_its_owner_function(library):
    env = _environment(library)
    without_own_rule = dataclasses.replace(env.domain, policy_rules=env.domain.policy_rules[:2])
    bare = without_own_rule.environment(env.base.db)
    violations = bare.policy_violations(bare.episode(), "return_book", {"loan_id": "L23"}, PolicyContext(user_id="m1"))
    assert [v.split(":")[0] for v in violations] == ["own_records_only"]
    assert bare.policy_violations(bare.episode(), "return_book", {"loan_id": "L13"}, PolicyContext(user_id="m1")) == []
    # a general task whose gold acts on another member's loan is not verified, even with no rule of the domain's own
    other = _task("general", [("get_member", {"member_id": "m1"}), ("return_book", {"loan_id": "L23"})])
    verdict = Verifier(bare).verify_task(other)
    assert "gold_breaks_policy" in verdict.reasons and any("own_records_only" in d for d in verdict.details)


def test_changing_and_ambiguous_checks_reject_golds_and_readings_that_break_a_rule(library):
    env = _environment(library)
    first = [Action(name="get_member", arguments={"member_id": "m1"}),
             Action(name="renew_loan", arguments={"loan_id": "L13"})]
    revised_episode = env.episode()
    gold = [("get_member", {"member_id": "m1"}), ("place_hold", {"member_id": "m2", "book_id": "b1"})]
    for name, args in gold:
        revised_episode.call(name, args)
    changing = _task("changing", gold, expected_state_hash=revised_episode.state_hash(),
                     scenario=UserScenario(reason_for_call="You want to renew loan L13.",
                                           change_trigger="the agent asks you to confirm",
                                           revised_request="You want a hold on book b1 for card m2 instead."))
    check = check_changing(env, changing, first)
    assert check.reason == "gold_breaks_policy" and "no_hold_with_fines" in check.detail
    parent = _task("general", [("get_member", {"member_id": "m1"}), ("renew_loan", {"loan_id": "L13"})])
    stated = {"call": "renew_loan", "open": "loan_id", "arguments": {}, "values": ["L13", "L11", "L12"],
              "user": "m1"}
    readings = [Reading(candidate=k, action_index=1, action=Action(name="renew_loan", arguments={"loan_id": k}),
                        target=k == "L13") for k in ("L13", "L11", "L12")]
    ambiguous = parent.model_copy(update={"condition": "ambiguous", "readings": readings, "scenario": UserScenario(
        reason_for_call="You want to renew one of your loans.", withheld_info=["The loan is L13."])})
    check = check_ambiguous(env, parent, ambiguous, stated, 1)
    assert check.reason == "reading_breaks_policy" and "max_three_renewals" in check.detail and "L12" in check.detail


# ---------------------------------------------------------------- item 2: no record of another user


def test_the_generic_kit_keeps_readings_and_revisions_with_the_tasks_member(library):
    from trajectory2task.domains.generic_kit import GenericConditions

    env = _environment(library)
    facts = GenericConditions(env)
    episode = env.episode()
    episode.call("get_member", {"member_id": "m1"})
    own = {"L11", "L12", "L13"}
    revisions = facts.change_alternatives(episode, {"name": "renew_loan", "arguments": {"loan_id": "L13"}})
    assert revisions and {a.arguments["loan_id"] for a in revisions} <= own - {"L12"}  # L12: renewed 3 times
    calls = [{"name": "get_member", "arguments": {"member_id": "m1"}},
             {"name": "get_loan", "arguments": {"loan_id": "L23"}},  # another member's loan, seen in the talk
             {"name": "renew_loan", "arguments": {"loan_id": "L13"}}]
    proposals = facts.ambiguity_proposals(env.episode(), calls)
    keys = {c.key for p in proposals for c in p.candidates}
    assert "L23" not in keys
    stated = {"call": "renew_loan", "open": "loan_id", "arguments": {}, "values": ["L13", "L23", "L11"],
              "user": "m1"}
    assert [c.key for c in facts.ambiguity_candidates(episode, stated)] == ["L13", "L11"]


# ---------------------------------------------------------------- item 3: revised requests that say something new


def test_a_revised_request_in_the_same_words_as_the_first_is_rejected(library):
    env = _environment(library)
    first = [Action(name="get_member", arguments={"member_id": "m1"}),
             Action(name="renew_loan", arguments={"loan_id": "L13"})]
    gold = [("get_member", {"member_id": "m1"}), ("renew_loan", {"loan_id": "L11"})]
    episode = env.episode()
    for name, args in gold:
        episode.call(name, args)
    # the loans are named by their book alone, and both books are called alike in the words
    same = UserScenario(reason_for_call="You want to renew the loan of your copy of Book 4.",
                        change_trigger="the agent asks you to confirm",
                        revised_request="You have changed your mind: instead, you want to renew the loan of your "
                                        "copy of Book 4.")
    task = _task("changing", gold, expected_state_hash=episode.state_hash(), scenario=same)
    assert check_changing(env, task, first).reason == "revised_request_same_words"
    said_new = same.model_copy(update={"revised_request": "You want to renew loan L11 instead."})
    assert check_changing(env, task.model_copy(update={"scenario": said_new}), first).reason != \
        "revised_request_same_words"


class _LMLikeWording(BaselineAdaptation):
    """Words the way an LM tends to write a revision: with its own change of mind in front."""

    def word_changing(self, ctx, facts):
        scenario, trigger, revised, claims = super().word_changing(ctx, facts)
        return scenario, trigger, f"I've changed my mind: {revised}", claims


@pytest.mark.parametrize("adaptation", [BaselineAdaptation(), _LMLikeWording()], ids=["baseline", "lm-like"])
def test_a_changing_task_says_its_change_of_mind_once(library, adaptation):
    env = _environment(library)
    made = 0
    for seed in range(8):
        trajectory = BaselineExplorer().explore(env, seed).trajectory
        if trajectory is None:
            continue
        general = BaselineWriter().write(trajectory, env).task
        changing = adaptation.adapt(general, trajectory, "changing", env, seed).task
        if changing is None:
            continue
        made += 1
        folded = changing.scenario.folded_instructions().lower()
        assert folded.count("mind") == 1, folded
        assert "changed" not in changing.scenario.revised_request.lower()
    assert made


# ---------------------------------------------------------------- items 4 and 5: lint-clean, faults contained


class _MemorySink:
    def __init__(self) -> None:
        self.items: list[Any] = []
        self.verdicts: list[Any] = []

    def recorded(self, run_id):
        return [i for i, *_ in self.items]

    def add(self, run_id, item, trajectories, tasks, verdicts, lm_calls):
        self.items.append((item, tasks))
        self.verdicts += verdicts

    def finish(self, run_id, status):
        pass


class _DoubledWordWriter(BaselineWriter):
    """A writer whose wording has a seam: a doubled word."""

    def write(self, trajectory, env, provenance=None):
        written = super().write(trajectory, env, provenance)
        if written.task is not None:
            scenario = written.task.scenario
            written.task = written.task.model_copy(update={"scenario": scenario.model_copy(
                update={"task_instructions": "Please please " + scenario.task_instructions})})
        return written


def _config(env, n: int, conditions: list[str]) -> GenerationConfig:
    config = GenerationConfig(domain="library", n=n, conditions=conditions, seed=2,
                              db_initial_hash=env.initial_hash(), roles={"explorer": "baseline"})
    config.id_prefix = id_prefix(config, None)
    return config


def test_a_task_with_a_lint_finding_is_not_verified(library):
    env = _environment(library)
    sink = _MemorySink()
    pipeline = GenerationPipeline(env, sink, _config(env, 4, ["general"]), explorer=BaselineExplorer(),
                                  writer=_DoubledWordWriter(), adaptation=None)
    pipeline.run("run")
    assert sink.verdicts
    for verdict in sink.verdicts:
        assert not verdict.passed and "lint" in verdict.reasons
        assert any(d.startswith("lint: doubled_word") for d in verdict.details), verdict.details
    assert not any(v for item, _ in sink.items for v in item.verified.values())


def test_a_kit_that_raises_fails_its_items_and_the_run_goes_on(library, tmp_path):
    env = _environment(library, "library_pkg.faulty")
    sink = _MemorySink()
    GenerationPipeline(env, sink, _config(env, 12, ["general", "changing"]), explorer=BaselineExplorer(),
                       writer=BaselineWriter(), adaptation=BaselineAdaptation()).run("run")
    items = [item for item, _ in sink.items]
    assert len(items) == 12
    failed = [i for i in items if i.reason == "kit_error"]
    assert failed and any(i.status == "done" for i in items)
    for item in failed:
        assert item.status == "failed" and "\n" not in item.detail
        assert item.detail.startswith("the kit's describe raised KeyError"), item.detail
    # the command line records the same and says so in its summary
    store = tmp_path / "t2t.duckdb"
    done = _generate(store, library, "library_pkg.faulty", 12, 2)
    assert done.exit_code == 0, done.output
    assert f"failed items: kit_error {len(failed)}" in done.output
    with TaskStore(store, read_only=True) as s:
        _, [(run_id,)] = s.query("SELECT run_id FROM runs")
        stored = generation_items(s, run_id)
    assert sum(1 for i in stored if i.reason == "kit_error") == len(failed)


def test_a_condition_kit_that_raises_while_adapting_fails_the_item_and_keeps_none_of_its_tasks(library):
    from trajectory2task.domains.kit import ChangeKit, ConditionKit

    def change_alternatives(episode, call):
        raise RuntimeError("no alternatives today\nsecond line")

    # one piece of the domain's own: the generic kit gives the others
    raising = ConditionKit(change=ChangeKit(change_alternatives=change_alternatives))
    env = _environment(library)
    domain = env.domain
    env.domain = dataclasses.replace(domain, kit=dataclasses.replace(domain.kit, conditions=raising))
    sink = _MemorySink()
    GenerationPipeline(env, sink, _config(env, 3, ["general", "changing"]), explorer=BaselineExplorer(),
                       writer=BaselineWriter(), adaptation=BaselineAdaptation()).run("run")
    items = [item for item, _ in sink.items]
    assert len(items) == 3
    for item in items:
        assert (item.status, item.stage, item.reason) == ("failed", "adapt", "kit_error"), item
        assert item.detail == "the kit's change_alternatives raised RuntimeError: no alternatives today"
        assert not item.tasks and item.trajectory_id  # the trajectory is kept, as a write fault keeps it
    assert not any(tasks for _, tasks in sink.items) and not sink.verdicts
    assert summarize("run", items, ["general", "changing"]).failed == {"kit_error": 3}


def test_a_revised_request_that_already_says_instead_says_it_once():
    # retail's payment change reads "... with your card ending in 3669 instead"; the baseline's
    # "You want to ... instead." once made it "instead instead." and lint refused the task
    import trajectory2task as t2t

    result = t2t.generate("retail", n=40, seed=0, conditions=["general", "changing"])
    changing = [t for t in result.tasks if t.condition == "changing"]
    assert changing and all(t.id in {v.task_id for v in result.verdicts if v.passed} for t in changing)
    assert not [t.id for t in changing if "instead instead" in (t.scenario.revised_request or "")]
