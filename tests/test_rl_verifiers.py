"""The ``verifiers`` environment (`trajectory2task.programs.rl.verifiers_env`), loaded with
``verifiers.load_environment`` and evaluated by the library's own ``evaluate_sync`` against the
local scripted OpenAI-compatible server: a model that plays the oracle scores 1 and one that
declines everything 0, on retail and airline tasks of every condition, with the rubric's
reward the verifier's verdict as `t2t verify --rollouts` gives it."""

from __future__ import annotations

import json
from typing import Any

import pytest

vf = pytest.importorskip("verifiers", reason="the rl extra is not installed: pip install 'trajectory2task[rl]'")

from trajectory2task.programs.loop.agent import OracleAgent  # noqa: E402
from trajectory2task.programs.loop.domain_env import load_environment  # noqa: E402
from trajectory2task.programs.loop.episode import Episodes  # noqa: E402
from trajectory2task.signatures.models import Message  # noqa: E402
from tests.llm_server import ScriptedLLMServer, Text, ToolCalls  # noqa: E402
from tests.rl_cases import DOMAINS, Transcript, one_per_condition, t2t_verify  # noqa: E402

DECLINE = "I'm sorry, but I can't help with that."


def conversation_of(body: dict[str, Any]) -> list[Message]:
    """The request's messages (after the system prompt) as rollout messages."""
    out = []
    for m in body["messages"][1:]:
        calls = [{"id": c["id"], "name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}
                 for c in m.get("tool_calls") or []]
        out.append(Message(role=m["role"], content=m.get("content") if isinstance(m.get("content"), str) else None,
                           tool_calls=calls or None, tool_call_id=m.get("tool_call_id")))
    return out


def oracle_responder(environment, tasks):
    """Plays each task's oracle (one session per task), told apart by the user's opening."""
    core = Episodes(environment, tasks)
    by_opening = {core.start(t.id).opening: t for t in tasks}
    assert len(by_opening) == len(tasks)
    sessions: dict[str, Any] = {}

    def respond(body: dict[str, Any]):
        task = by_opening[body["messages"][1]["content"]]
        session = sessions.setdefault(task.id, OracleAgent(environment).session(task))
        reply = session.reply(conversation_of(body))
        if reply.tool_calls:
            return ToolCalls(calls=[(c.name, c.arguments) for c in reply.tool_calls], content=reply.content)
        return Text(reply.content or "")

    return respond


@pytest.mark.parametrize("domain", DOMAINS)
def test_evaluate_scores_the_oracle_1_and_a_decliner_0_as_t2t_verify_does(domain, tmp_path, monkeypatch):
    environment = load_environment(domain)
    tasks = one_per_condition(domain)
    env = vf.load_environment("trajectory2task.programs.rl.verifiers_env", domain=domain,
                              tasks=[t.model_dump() for t in tasks], environment=environment)
    assert {t.name for t in env.tool_defs} == set(environment.tools)
    tasks_file = tmp_path / "given.jsonl"
    tasks_file.write_text("".join(t.model_dump_json() + "\n" for t in tasks))
    from_file = vf.load_environment("trajectory2task.programs.rl.verifiers_env", domain=domain,
                                    tasks_file=str(tasks_file), environment=environment)
    assert [t.id for t in from_file.core.tasks] == [t.id for t in tasks]
    monkeypatch.setenv("T2T_TEST_KEY", "not-a-key")
    for label, responder, expected in (("oracle", oracle_responder(environment, tasks), 1.0),
                                       ("decliner", lambda body: Text(DECLINE), 0.0)):
        with ScriptedLLMServer(responder=responder) as server:
            client = vf.ClientConfig(api_base_url=server.base_url, api_key_var="T2T_TEST_KEY", max_retries=0)
            results = env.evaluate_sync(client=client, model="scripted", num_examples=len(tasks),
                                        rollouts_per_example=1, max_concurrent=1, state_columns=["t2t_verdict"])
            assert server.errors == []
        outputs = results["outputs"]
        assert len(outputs) == len(tasks)
        transcripts = []
        for output in outputs:
            task_id = output["info"]["task_id"]
            assert output["reward"] == expected, (label, task_id, output.get("t2t_verdict"), output.get("error"))
            transcript = Transcript(task_id, output["prompt"][-1]["content"])
            for m in output["completion"]:
                made = [json.loads(c) if isinstance(c, str) else c for c in m.get("tool_calls") or []]  # saved as JSON
                calls = [{"name": c["name"], "arguments": json.loads(c["arguments"])} for c in made]
                transcript.tool_calls += calls[:1]
                if m["role"] in ("assistant", "user"):
                    transcript.messages.append({"role": m["role"], "content": m.get("content"),
                                                **({"tool_calls": calls[:1]} if calls else {})})
            transcripts.append((output, transcript))
        verified = t2t_verify(domain, tasks, [t for _, t in transcripts], tmp_path)
        for (output, _), theirs in zip(transcripts, verified):
            assert output["t2t_verdict"]["passed"] == theirs["pass"]
            assert output["t2t_verdict"]["reasons"] == theirs["reasons"]
