"""`t2t generate --lm ... --api-base <local server>` end to end through a real dspy.LM.

The local ScriptedLLMServer plays the LM: a responder reads each request, tells from the
output fields which signature it answers (explorer, writer, adapter), and answers with a
valid call or scenario built from the request's inputs. It also injects a 500, a 429, a
timeout, a malformed body and an unparseable answer.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from typing import Any

import pytest
from typer.testing import CliRunner

from trajectory2task.store import TaskStore
from trajectory2task.store.failures import generation_items
from trajectory2task.cli import app
from tests.llm_server import Fault, Hang, Malformed, ScriptedLLMServer, Text, chat_fields, output_field_names

FIELD = re.compile(r"\[\[ ## (\w+) ## \]\]\n(.*?)(?=\n\n\[\[ ## |\Z)", re.S)


@pytest.fixture(autouse=True)
def no_env_lm(monkeypatch):
    for name in list(os.environ):
        if name.startswith("T2T_"):
            monkeypatch.delenv(name)


def _inputs(body: dict[str, Any]) -> dict[str, str]:
    """The input fields of the request's last user message, as text."""
    user = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
    user = user.split("\n\nRespond with ")[0]  # the text or the JSON adapter's closing request
    return {name: value.strip() for name, value in FIELD.findall(user)}


def _json(text: str) -> Any:
    return json.loads(text) if text else None


def _explorer(inputs: dict[str, str]) -> dict[str, Any]:
    """Identify the customer by email, read their profile, then change their address."""
    email = re.search(r"email (\S+@\S+)\. ", inputs["seed_entity"]).group(1)
    steps = _json(inputs["trajectory"]) or []
    if not steps:
        return {"tool_call": {"name": "find_user_id_by_email", "arguments": {"email": email}}}
    user_id = steps[0]["observation"]
    if len(steps) == 1:
        return {"tool_call": {"name": "get_user_details", "arguments": {"user_id": user_id}}}
    writes = len(steps) - 2
    return {"tool_call": {"name": "modify_user_address", "arguments": {
        "user_id": user_id, "address1": f"{100 + writes} Scripted Lane", "address2": "", "city": "Boise",
        "state": "ID", "country": "USA", "zip": f"8370{writes}"}}}


def _writer(inputs: dict[str, str]) -> dict[str, Any]:
    facts = _json(inputs["required_facts"])
    details = "; ".join(facts)
    scenario = {"reason_for_call": f"You have moved and want your default address updated. Details: {details}.",
                "known_info": "You know your email address.", "task_instructions": "Answer what the agent asks."}
    return {"scenario": scenario, "communicate_info": [], "claims": []}


def _adaptation_answer(fields: list[str], inputs: dict[str, str]) -> dict[str, Any]:
    task = _json(inputs["task"])
    facts = _json(inputs["facts"])
    base = dict(task["scenario"])
    if "withheld_info" in fields:  # ambiguous
        base["reason_for_call"] = facts["open_request"]
        return {"scenario": base, "withheld_info": [f"It is {v}." for v in facts["withheld"]], "claims": []}
    if "change_trigger" in fields:  # changing
        revised = f"Instead: {facts['revised_request']} ({', '.join(facts['must_mention'])})"
        return {"scenario": base, "change_trigger": "when the agent asks you to confirm", "revised_request": revised,
                "claims": []}
    candidate = facts["candidates"][0]  # infeasible
    base["reason_for_call"] = f"You want to {candidate['request']}."
    return {"forbidden_action": candidate["action"], "scenario": base, "explanation": candidate["fact"], "claims": []}


class Responder:
    """Answers each signature validly, except the k-th request of a kind listed in ``faults``."""

    def __init__(self, faults: dict[tuple[str, int], Any]) -> None:
        self.faults = faults
        self.lock = threading.Lock()
        self.kinds: list[str] = []

    def __call__(self, body: dict[str, Any]):
        fields = output_field_names(body)
        kind = ("explorer" if fields == ["tool_call"] else "writer" if "communicate_info" in fields else "adapter")
        with self.lock:
            self.kinds.append(kind)
            k = self.kinds.count(kind) - 1
        if (kind, k) in self.faults:
            return self.faults[(kind, k)]
        inputs = _inputs(body)
        if kind == "explorer":
            answer = _explorer(inputs)
        elif kind == "writer":
            answer = _writer(inputs)
        else:
            answer = _adaptation_answer(fields, inputs)
        if body.get("response_format"):  # DSPy's JSON-adapter fallback asks for one JSON object
            return Text(json.dumps(answer))
        return Text(chat_fields(**answer))


GARBAGE = Text("I would rather chat about the weather.")
FAULTS = {
    ("explorer", 1): Fault(500),
    ("explorer", 3): Fault(429),
    ("explorer", 5): Hang(3.0),  # the client times out after 1 s and retries
    ("explorer", 8): GARBAGE,  # unparseable: ChatAdapter fails ...
    ("explorer", 9): GARBAGE,  # ... and so does DSPy's JSON fallback; the explorer asks again
    ("writer", 2): Malformed(),  # a 200 whose body is not JSON: DSPy's native client gives up on this call
}


def test_generate_through_a_real_lm_survives_injected_faults(tmp_path):
    responder = Responder(FAULTS)
    path = tmp_path / "lm.duckdb"
    with ScriptedLLMServer(responder=responder) as server:
        config = tmp_path / "lm.toml"
        config.write_text("[lm.default]\ntimeout_s = 1\nnum_retries = 2\n")
        result = CliRunner().invoke(app, [
            "generate", "--lm", "openai/gpt-4o-mini", "--api-base", server.base_url, "--lm-config", str(config),
            "--n", "5", "--users", "60", "--seed", "2", "--workers", "1", "--store", str(path), "--json",
            # the faults above script the text adapter's re-ask in JSON, and count requests (no cache)
            "--structured", "off", "--no-cache"])
        assert server.errors == []
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["source"] == "lm" and summary["items"] == 5
    assert {"explorer", "writer", "adapter"} <= set(responder.kinds)
    assert all(responder.kinds.count(kind) > k for kind, k in FAULTS)  # every fault was served
    with TaskStore(path, read_only=True) as store:
        run_id = summary["run_id"]
        items = generation_items(store, run_id)
        assert [i.index for i in items] == list(range(5))
        failed = [i for i in items if i.status == "failed"]
        done = [i for i in items if i.status == "done"]
        # the malformed body failed the third item's writer for good; 500, 429, timeout and garbage were retried
        assert [(i.index, i.stage, i.reason) for i in failed] == [(2, "write", "lm_error")]
        assert "LMProviderError" in failed[0].detail and failed[0].trajectory_id is not None
        assert len(done) == 4
        tasks = store.tasks("run_id = ?", [run_id])
        general = [t for t in tasks if t.condition == "general"]
        assert len(general) == 4 and all(t.provenance.source == "lm" for t in tasks)
        _, [(verified,)] = store.query("SELECT count(*) FROM tasks_latest WHERE run_id = ? AND condition = 'general' "
                                       "AND verified", [run_id])
        assert verified == 4
        # what the LM wrote is what was stored
        assert all("Scripted Lane" in t.scenario.reason_for_call for t in general)
        _, calls = store.query("SELECT role, count(*), sum(prompt_tokens), count(error) FROM lm_calls "
                               "WHERE run_id = ? GROUP BY role ORDER BY role", [run_id])
        by_role = {role: (n, tokens, errors) for role, n, tokens, errors in calls}
        # every successful call with its tokens, plus the writer call that failed for good, with its error
        assert by_role["explorer"][1] > 0 and by_role["explorer"][2] == 0
        assert by_role["writer"][0] == 5 and by_role["writer"][2] == 1
        _, [(config_json,)] = store.query("SELECT config FROM runs WHERE run_id = ?", [run_id])
        assert json.loads(config_json)["roles"] == {"explorer": "openai/gpt-4o-mini", "writer": "openai/gpt-4o-mini",
                                                    "adapter": "openai/gpt-4o-mini"}


class InFlight:
    """Wraps a responder: each answer takes ``seconds``; records the most requests of each kind at once."""

    def __init__(self, responder: Responder, seconds: float = 0.1) -> None:
        self.responder = responder
        self.seconds = seconds
        self.lock = threading.Lock()
        self.now: dict[str, int] = {}
        self.most: dict[str, int] = {}

    def __call__(self, body: dict[str, Any]):
        fields = output_field_names(body)
        kind = "explorer" if fields == ["tool_call"] else "writer" if "communicate_info" in fields else "adapter"
        with self.lock:
            self.now[kind] = self.now.get(kind, 0) + 1
            self.most[kind] = max(self.most.get(kind, 0), self.now[kind])
        try:
            time.sleep(self.seconds)
            return self.responder(body)
        finally:
            with self.lock:
                self.now[kind] -= 1


@pytest.mark.parametrize("bound", [None, 1])
def test_max_concurrent_bounds_a_roles_calls_across_items_in_flight(tmp_path, bound):
    in_flight = InFlight(Responder({}))
    with ScriptedLLMServer(responder=in_flight) as server:
        result = CliRunner().invoke(app, [
            "generate", "--lm", "openai/gpt-4o-mini", "--api-base", server.base_url, "--n", "4", "--users", "60",
            "--seed", "2", "--conditions", "general", "--workers", "4", "--store", str(tmp_path / "c.duckdb"),
            "--json", "--no-cache", *(["--max-concurrent", f"explorer={bound}"] if bound else [])])
        assert server.errors == []
    assert result.exit_code == 0, result.output
    if bound is None:
        assert in_flight.most["explorer"] > 1  # four items explore at once
    else:
        assert in_flight.most["explorer"] == bound
