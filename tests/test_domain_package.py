"""A new domain is one package: written outside the repository, loaded by name, generating.

The package below (two tools, a database model, a policy) lives in a temporary directory.
Without a generation kit it generates verified tasks in all four conditions through a real
``dspy.LM`` against the local scripted server, the conditions proven by the domain-general
kit from tool specs, observations and forks; with a small kit of its own (also inside the
package) it generates all four offline. No code outside the package names its tools.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from trajectory2task.store import TaskStore
from trajectory2task.cli import app
from tests.cli import REPO, run_t2t
from tests.llm_server import ScriptedLLMServer, Text, chat_fields, output_field_names
from tests.test_generate_lm import _adaptation_answer, _inputs, _json

PACKAGE = {
    "__init__.py": '''
        """Bike rentals: members rent bikes and return them."""

        from __future__ import annotations

        from pydantic import BaseModel

        from trajectory2task.domains.runtime import Domain, ToolError, Transaction, tool, tool_spec, user_from_argument


        class Member(BaseModel):
            member_id: str
            name: str
            bikes: list[str]


        class Bike(BaseModel):
            bike_id: str
            member_id: str
            colour: str
            status: str  # "rented" or "returned"


        class RentalsDB(BaseModel):
            members: dict[str, Member]
            bikes: dict[str, Bike]


        @tool("read", authenticates=user_from_argument("member_id"))
        def get_member(tx: Transaction, member_id: str) -> Member:
            """A member's profile with the ids of every bike they have rented.

            Args:
                member_id: The member's id, e.g. 'm1'.
            """
            member = tx.get("members", member_id)
            if member is None:
                raise ToolError("Member not found")
            return member


        @tool("write")
        def return_bike(tx: Transaction, bike_id: str) -> Bike:
            """Record that a rented bike has been brought back.

            Args:
                bike_id: The bike's id, e.g. 'b1'.
            """
            bike = tx.for_update("bikes", bike_id)
            if bike is None:
                raise ToolError("Bike not found")
            if bike.status != "rented":
                raise ToolError("Bike is not rented")
            bike.status = "returned"
            return bike


        DOMAIN = Domain(name="rentals", summary="A bike rental desk: members return the bikes they rented.",
                        db_model=RentalsDB, tools=(tool_spec(get_member), tool_spec(return_bike)),
                        policy="Identify the member by their member id before returning a bike for them.")
    ''',
    "with_kit.py": '''
        """The same domain with a generation kit, so the offline baselines can run on it."""

        from __future__ import annotations

        import dataclasses
        import random

        from trajectory2task.domains.generic_kit import describe_steps
        from trajectory2task.domains.kit import Call, ExplorationKit, GenerationKit, GroundingHints, Knowledge

        from rentals_pkg import DOMAIN as PLAIN


        def build_return(knowledge: Knowledge, rng: random.Random) -> dict | None:
            bikes = knowledge.known("bike_id")  # a returned one fails, and the walk tries again
            return {"bike_id": rng.choice(bikes)} if bikes else None


        EXPLORATION = ExplorationKit(
            hints=GroundingHints(id_keys={"bikes": "bike_id", "bike_id": "bike_id", "member_id": "member_id"},
                                 entity_keys=("bike_id", "member_id")),
            seed_table="members",
            seed_calls=lambda member: [Call(name="get_member", arguments={"member_id": member["member_id"]})],
            seed_description=lambda member: f"Member {member['member_id']} ({member['name']}).",
            walk_reads=(),
            write_builders={"return_bike": build_return},
            describe=describe_steps,
        )

        DOMAIN = dataclasses.replace(PLAIN, kit=GenerationKit(exploration=EXPLORATION))
    ''',
    "with_pieces.py": '''
        """The kit above plus two condition pieces in the rental desk's words; the domain-general
        kit gives the other pieces."""

        from __future__ import annotations

        import dataclasses

        from trajectory2task.domains.kit import Call, ConditionKit, IdentityKit, WordingKit

        from rentals_pkg.with_kit import DOMAIN as WITH_KIT


        def identity_lookup(episode, user_id):
            return Call(name="get_member", arguments={"member_id": user_id})


        def identity_text(call):
            return f"Your member number is {call['arguments']['member_id']}."


        def describe_call(episode, name, arguments, stated=None):
            if stated is not None and "bike_id" not in stated.get("arguments", {}):
                return "hand back one of your rented bikes"  # the open request: which bike is withheld
            bike = episode.record("bikes", arguments["bike_id"])
            return f"hand back your {bike['colour']} bike {arguments['bike_id']}"


        WORDING = WordingKit(describe_call=describe_call,
                             action_label=lambda name, arguments: f"the return of bike {arguments['bike_id']}",
                             user_stated_ids=lambda name, arguments: [arguments["bike_id"]],
                             change_mentions=lambda episode, initial, revised: [revised["arguments"]["bike_id"]])
        CONDITIONS = ConditionKit(identity=IdentityKit(identity_lookup=identity_lookup, identity_text=identity_text),
                                  wording=WORDING)
        DOMAIN = dataclasses.replace(WITH_KIT, kit=dataclasses.replace(WITH_KIT.kit, conditions=CONDITIONS))
    ''',
    "ambiguity_without_wording.py": '''
        """A kit whose ambiguity proposals no wording of its own can say: refused when it loads."""

        from __future__ import annotations

        import dataclasses

        from trajectory2task.domains.generic_kit import GenericConditions
        from trajectory2task.domains.kit import AmbiguityKit, ConditionKit

        from rentals_pkg.with_kit import DOMAIN as WITH_KIT

        _generic = GenericConditions  # its functions, unbound: this kit never gets far enough to call them
        AMBIGUITY = AmbiguityKit(ambiguity_proposals=_generic.ambiguity_proposals,
                                 ambiguity_candidates=_generic.ambiguity_candidates,
                                 ambiguity_target=_generic.ambiguity_target, withheld_values=_generic.withheld_values)
        DOMAIN = dataclasses.replace(WITH_KIT, kit=dataclasses.replace(WITH_KIT.kit,
                                                                       conditions=ConditionKit(ambiguity=AMBIGUITY)))
    ''',
}


def _db() -> dict[str, Any]:
    members, bikes = {}, {}
    for m in range(1, 7):
        ids = [f"b{m}{k}" for k in range(1, 4)]
        members[f"m{m}"] = {"member_id": f"m{m}", "name": f"Member {m}", "bikes": ids}
        for k, bike_id in enumerate(ids):
            bikes[bike_id] = {"bike_id": bike_id, "member_id": f"m{m}", "colour": ("red", "blue", "green")[k],
                              "status": "returned" if k == 2 else "rented"}
    return {"members": members, "bikes": bikes}


@pytest.fixture
def package(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "outside"
    (root / "rentals_pkg").mkdir(parents=True)
    for name, text in PACKAGE.items():
        (root / "rentals_pkg" / name).write_text(textwrap.dedent(text).lstrip())
    monkeypatch.syspath_prepend(str(root))
    for name in list(os.environ):
        if name.startswith("T2T_"):
            monkeypatch.delenv(name)
    db = tmp_path / "rentals.json"
    db.write_text(json.dumps(_db()))
    return db


def _respond(body: dict[str, Any]):
    """The LM for a domain it was never told about: reads the request, answers in kind."""
    fields = output_field_names(body)
    inputs = _inputs(body)
    if fields == ["tool_call"]:  # explorer: look the member up, then return their first bike
        steps = _json(inputs["trajectory"]) or []
        if not steps:
            member_id = re.search(r'"member_id":"(\w+)"', inputs["seed_entity"]).group(1)
            answer = {"tool_call": {"name": "get_member", "arguments": {"member_id": member_id}}}
        else:
            first_bike = json.loads(steps[0]["observation"])["bikes"][0]
            answer = {"tool_call": {"name": "return_bike", "arguments": {"bike_id": first_bike}}}
    elif "communicate_info" in fields:  # writer: state every fact the task needs
        facts = "; ".join(_json(inputs["required_facts"]))
        answer = {"scenario": {"reason_for_call": f"You are returning a bike. Details: {facts}.",
                               "task_instructions": "Answer what the agent asks."}, "communicate_info": [],
                  "claims": []}
    else:
        answer = _adaptation_answer(fields, inputs)
    return Text(json.dumps(answer)) if body.get("response_format") else Text(chat_fields(**answer))


def _conditions(store_path: Path) -> dict[str, int]:
    with TaskStore(store_path, read_only=True) as store:
        _, rows = store.query("SELECT condition, count(*) FROM tasks_latest WHERE verified GROUP BY 1")
    return dict(rows)


def test_a_package_outside_the_repository_generates_all_four_conditions_with_an_lm(package, tmp_path):
    store = tmp_path / "t2t.duckdb"
    with ScriptedLLMServer(responder=_respond) as server:
        result = CliRunner().invoke(app, [
            "generate", "--domain", "rentals_pkg", "--db", str(package), "--lm", "openai/gpt-4o-mini",
            "--api-base", server.base_url, "--n", "4", "--seed", "1", "--workers", "1",
            "--store", str(store), "--json"])
        assert server.errors == []
    assert result.exit_code == 0, result.output
    verified = _conditions(store)
    assert set(verified) == {"general", "ambiguous", "changing", "infeasible"}, verified
    with TaskStore(store, read_only=True) as s:
        tasks = s.tasks("condition = 'infeasible'")
        forbidden = [a for t in tasks for a in t.actions_should_not_take]
        # the forbidden write is one the tool refuses: returning a bike that is back already
        assert forbidden and all(a.name == "return_bike" and a.arguments["bike_id"].endswith("3") for a in forbidden)
        changing = s.tasks("condition = 'changing'")
        assert all(t.gold_actions[-1].arguments != t.scenario.model_dump() for t in changing)
        assert all(t.provenance.source == "lm" for t in s.tasks("TRUE"))


def test_the_offline_baselines_need_a_kit_and_say_so(package, tmp_path):
    done = run_t2t("generate", "--domain", "rentals_pkg", "--db", str(package), "--n", "2",
                   "--store", str(tmp_path / "t2t.duckdb"),
                   env={"PYTHONPATH": os.pathsep.join([str(package.parent / "outside"), str(REPO)])})
    assert done.returncode == 2
    assert done.stderr.startswith("t2t: error: domain 'rentals' has no generation kit")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "t2t.duckdb").exists() or _conditions(tmp_path / "t2t.duckdb") == {}


def test_a_package_with_a_kit_generates_all_four_conditions_offline(package, tmp_path):
    store = tmp_path / "t2t.duckdb"
    result = CliRunner().invoke(app, ["generate", "--domain", "rentals_pkg.with_kit", "--db", str(package),
                                      "--n", "6", "--seed", "3", "--store", str(store),
                                      "--json"])
    assert result.exit_code == 0, result.output
    assert set(_conditions(store)) == {"general", "ambiguous", "changing", "infeasible"}


def test_a_package_with_condition_pieces_words_its_adapted_tasks_and_the_generic_kit_does_the_rest(package, tmp_path):
    store = tmp_path / "t2t.duckdb"
    result = CliRunner().invoke(app, ["generate", "--domain", "rentals_pkg.with_pieces", "--db", str(package),
                                      "--n", "6", "--seed", "3", "--store", str(store), "--json"])
    assert result.exit_code == 0, result.output
    assert set(_conditions(store)) == {"general", "ambiguous", "changing", "infeasible"}
    with TaskStore(store, read_only=True) as s:
        adapted = s.tasks("condition <> 'general' AND verified")
    # the domain's wording and identity pieces; the proposals are the generic kit's
    assert adapted and all("hand back" in t.scenario.reason_for_call for t in adapted)
    assert all(t.scenario.known_info.startswith("Your member number is m") for t in adapted)
    ambiguous = [t for t in adapted if t.condition == "ambiguous"]
    assert ambiguous and all("one of your rented bikes" in t.scenario.reason_for_call for t in ambiguous)


def test_a_kit_with_ambiguity_but_no_wording_is_one_error_line(package, tmp_path):
    done = run_t2t("generate", "--domain", "rentals_pkg.ambiguity_without_wording", "--db", str(package), "--n", "2",
                   "--store", str(tmp_path / "t2t.duckdb"),
                   env={"PYTHONPATH": os.pathsep.join([str(package.parent / "outside"), str(REPO)])})
    assert done.returncode != 0
    assert done.stderr.startswith("t2t: error: ") and "needs its WordingKit too" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "t2t.duckdb").exists()


def test_replay_verify_and_bench_work_on_the_package(package, tmp_path):
    store = tmp_path / "t2t.duckdb"
    runner = CliRunner()
    generated = runner.invoke(app, ["generate", "--domain", "rentals_pkg.with_kit", "--db", str(package), "--n", "4",
                                    "--store", str(store)])
    assert generated.exit_code == 0, generated.output
    tasks = tmp_path / "tasks.json"
    assert runner.invoke(app, ["export", "--format", "tau2", "--out", str(tasks), "--store", str(store)]).exit_code == 0
    for command in ("replay", "verify"):
        checked = runner.invoke(app, [command, "--domain", "rentals_pkg", "--db", str(package), str(tasks), "--json"])
        assert checked.exit_code == 0, checked.output
        lines = [json.loads(line) for line in checked.stdout.splitlines() if line.startswith("{")]
        assert len(lines) == len(json.loads(tasks.read_text()))
    bench = runner.invoke(app, ["bench", "--domain", "rentals_pkg.with_kit", "--db", str(package),
                                "--store", str(store)])
    assert bench.exit_code == 0, bench.output
    assert "calibration: all" in bench.output


def test_signature_instructions_carry_no_domain_words():
    """Domain words come from the domain's inputs, so a rewritten instruction fits any domain."""
    import dspy

    import trajectory2task.signatures.adaptation
    import trajectory2task.signatures.conversation
    import trajectory2task.signatures.generation
    from trajectory2task.domains import get_domain

    retail_words = {t.name for t in get_domain("retail").tools} | {"order", "zip", "email", "payment", "item",
                                                                   "product", "address"}
    found = {}
    for module in (trajectory2task.signatures.generation, trajectory2task.signatures.adaptation, trajectory2task.signatures.conversation):
        for name, value in vars(module).items():
            if isinstance(value, type) and issubclass(value, dspy.Signature) and value is not dspy.Signature:
                text = value.instructions.lower() + " ".join(
                    str(f.json_schema_extra.get("desc", "")) for f in value.model_fields.values()).lower()
                words = sorted(w for w in retail_words if w in text)
                if words:
                    found[name] = words
    assert found == {}


def test_the_domain_general_kit_adapts_retail_and_each_condition_holds_on_replay(tmp_path):
    """Retail with its exploration kit but no condition kit: the generic core proposes the
    conditions; each is then re-checked here by plain replays on fresh episodes."""
    import dataclasses

    from trajectory2task.domains import get_domain
    from trajectory2task.domains.kit import GenerationKit
    from trajectory2task.domains.runtime import PolicyContext
    from trajectory2task.programs.generation.adapting import BaselineAdaptation
    from trajectory2task.programs.generation.exploration import BaselineExplorer
    from trajectory2task.programs.generation.writing import BaselineWriter

    retail = get_domain("retail")
    plain = dataclasses.replace(retail, kit=GenerationKit(exploration=retail.kit.exploration, conditions=None))
    env = plain.environment(retail.generate_db(4, 60))
    adapted: dict[str, list] = {"ambiguous": [], "changing": [], "infeasible": []}
    for seed in range(12):
        trajectory = BaselineExplorer().explore(env, seed).trajectory
        if trajectory is None:
            continue
        task = BaselineWriter().write(trajectory, env).task
        for condition in adapted:
            result = BaselineAdaptation().adapt(task, trajectory, condition, env, seed)
            if result.task is not None:
                adapted[condition].append((task, result.task))
    assert all(adapted.values()), {c: len(t) for c, t in adapted.items()}

    def replay(calls):
        episode = env.episode()
        results = [episode.call(c.name, c.arguments) for c in calls]
        return episode, results

    for _, task in adapted["infeasible"]:
        episode, results = replay(task.actions_should_take)
        assert not any(r.error for r in results)
        forbidden = task.actions_should_not_take[0]
        refused = episode.fork().call(forbidden.name, forbidden.arguments)
        user = next(r.output for c, r in zip(task.actions_should_take, results) if env.tools[c.name].authenticates)
        assert refused.error_kind == "refused" or env.policy_violations(
            episode, forbidden.name, forbidden.arguments, PolicyContext(user_id=user))
    for parent, task in adapted["changing"]:  # the first goal is the parent's gold
        first, first_results = replay(parent.gold_actions)
        revised, revised_results = replay(task.gold_actions)
        assert not any(r.error for r in first_results + revised_results)
        assert len({first.state_hash(), revised.state_hash(), env.initial_hash()}) == 3
    for parent, task in adapted["ambiguous"]:  # same goal, the deciding value held back
        assert task.gold_actions == parent.gold_actions and task.scenario.withheld_info
        opening = f"{task.scenario.reason_for_call} {task.scenario.known_info or ''}"
        assert not any(w.removeprefix("The ").split(" is ")[-1].rstrip(".") in opening
                       for w in task.scenario.withheld_info)


def test_a_run_of_a_package_resumes_by_its_module_path(package, tmp_path):
    """The run records the module it loaded the domain from; --resume loads it again (the
    domain's own name, 'rentals', is no module)."""
    import duckdb

    from trajectory2task.store.failures import ITEM_EVENT, generation_items

    store = tmp_path / "t2t.duckdb"
    runner = CliRunner()
    args = ["generate", "--domain", "rentals_pkg.with_kit", "--db", str(package), "--n", "4", "--seed", "3"]
    assert runner.invoke(app, [*args, "--store", str(store)]).exit_code == 0
    with TaskStore(store, read_only=True) as s:
        _, [(run_id, config)] = s.query("SELECT run_id, config FROM runs")
        whole = {t.id for t in s.tasks("TRUE")}
    assert json.loads(config)["domain_module"] == "rentals_pkg.with_kit"
    con = duckdb.connect(str(store))  # as if the run was killed after its first two items
    con.execute("DELETE FROM run_events WHERE run_id = ? AND status = ? AND "
                "CAST(json_extract(details, '$.index') AS INTEGER) >= 2", [run_id, ITEM_EVENT])
    con.close()
    with TaskStore(store, read_only=True) as s:
        assert [i.index for i in generation_items(s, run_id)] == [0, 1]
    resumed = runner.invoke(app, ["generate", "--resume", run_id, "--store", str(store)])
    assert resumed.exit_code == 0, resumed.output
    with TaskStore(store, read_only=True) as s:
        assert [i.index for i in generation_items(s, run_id)] == [0, 1, 2, 3]
        assert {t.id for t in s.tasks("TRUE")} == whole
