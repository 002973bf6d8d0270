"""The rollout engine: the whole loop against the local server (LM user x LM agent x
environment), what each side is sent, faults, terminations, isolation and storage."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from trajectory2task.programs.loop.agent import AgentReply, LMAgent, OracleAgent
from trajectory2task.programs.lm.build import build_lm
from trajectory2task.programs.lm.config import LMSettings
from trajectory2task.programs.loop.rollout import ONE_CALL_PER_TURN, RolloutEngine, RolloutJob, RolloutWriter, rollout_id_for
from trajectory2task.programs.loop.user_sim import LMUser, ScriptedUser
from trajectory2task.programs.verification.verifier import Verifier
from trajectory2task.signatures.conversation import AgentToolCall
from trajectory2task.signatures.models import Action, Message, Task, TokenUsage, UserScenario
from trajectory2task.store import TaskStore
from tests.closed_loop import PlannedAgentLM, environment, write_tools, is_user_request, make_tasks, user_reply
from tests.llm_server import Fault, Hang, ScriptedLLMServer, Text, ToolCalls

AGENT = "openai/gpt-4o-mini"


@pytest.fixture(scope="module")
def env():
    return environment()


@pytest.fixture(scope="module")
def tasks(env):
    return make_tasks(env)


# ============================================================================ the whole loop, and leaks


def marked_task(env, tasks) -> Task:
    """general-1 with marker text in every scenario field and in the evaluation criteria."""
    base = tasks["general-1"]
    email = base.gold_actions[0].arguments["email"]
    scenario = UserScenario(persona="PERSONA-MARK: a patient retiree",
                            reason_for_call="REASON-MARK: you want to cancel an order you no longer need.",
                            known_info=f"Your email is {email}.", unknown_info="UNKNOWN-MARK: your zip code",
                            task_instructions="INSTRUCTIONS-MARK: be polite.")
    return base.model_copy(update={
        "id": "marked", "scenario": scenario, "communicate_info": ["COMMUNICATE-MARK"],
        "actions_should_not_take": [Action(name="return_delivered_order_items",
                                           arguments={"order_id": "#W0000000", "item_ids": ["FORBIDDEN-MARK"],
                                                      "payment_method_id": "gift_card_0000000"})]})


class Conversation:
    """A scripted LM user and LM agent for one cancellation, decided from each request."""

    def __init__(self, task: Task) -> None:
        self.email = task.gold_actions[0].arguments["email"]
        self.order_id = task.gold_actions[1].arguments["order_id"]
        self.gold = task.gold_actions

    def __call__(self, body: dict[str, Any]) -> Any:
        if is_user_request(body):
            prompt = body["messages"][-1]["content"]
            agent_turns = len(re.findall(r'"role": "agent"', prompt))
            return user_reply([f"Hi, I need to cancel my order {self.order_id}; I no longer need it.",
                               f"My email is {self.email}.", "Yes.", "Thanks! ###STOP###"][agent_turns])
        messages = body["messages"]
        tools = sum(m["role"] == "tool" for m in messages)
        texts = sum(m["role"] == "assistant" and bool(m.get("content")) for m in messages)
        if texts == 0:
            return Text("Sure, what is your email address?")
        if tools < 2:
            action = self.gold[tools]
            return ToolCalls([(action.name, action.arguments)])
        if texts == 1:
            return Text("Shall I cancel it? (yes/no)")
        if tools == 2:
            return ToolCalls([(self.gold[2].name, self.gold[2].arguments)])
        return Text("Done, it is cancelled.")


def plain_lms(base_url: str) -> tuple[Any, Any]:
    """The agent's and the user's LMs as a user of the Python API gives them: plain ``dspy.LM``s
    (no t2t role) at the scripted server, which `Conversation` answers."""
    import dspy

    return (dspy.LM(AGENT, api_base=base_url, api_key="unused", cache=False),
            dspy.LM("openai/gpt-4o", api_base=base_url, api_key="unused", cache=False))


@pytest.fixture(scope="module")
def whole_loop(env, tasks):
    task = marked_task(env, tasks)
    with ScriptedLLMServer(responder=Conversation(task)) as server:
        agent = LMAgent(build_lm(LMSettings(model=AGENT, api_base=server.base_url)), env)
        user = LMUser(build_lm(LMSettings(model="openai/gpt-4o", api_base=server.base_url)))
        result = RolloutEngine(env, user, [agent]).run(task, AGENT, trial=0, rollout_id="r-whole")
        requests = server.requests
        errors = server.errors
    assert errors == []
    return task, result, requests


def test_the_whole_loop_runs_through_real_lms_and_passes(whole_loop, env):
    task, result, requests = whole_loop
    rollout, verdict = result.rollout, result.verdict
    assert verdict.passed, verdict
    assert rollout.termination == "user_stop"
    assert [s.call.name for s in rollout.steps] == [a.name for a in task.gold_actions]
    assert rollout.end_state_hash == task.expected_state_hash
    assert [m.role for m in rollout.messages] == ["system", "user", "assistant", "user", "assistant", "tool",
                                                  "assistant", "tool", "assistant", "user", "assistant", "tool",
                                                  "assistant", "user"]
    assert rollout.messages[-1].content == "Thanks! ###STOP###"
    assert rollout.agent_model == AGENT and rollout.user_model == "openai/gpt-4o"
    # tokens and cost of both sides, per rollout (the server reports usage; gpt-4o* are priced)
    assert rollout.usage.prompt_tokens > 0 and rollout.usage.completion_tokens > 0 and rollout.usage.cost > 0
    agent_requests = [r for r in requests if "tools" in r]
    user_requests = [r for r in requests if is_user_request(r)]
    assert len(agent_requests) == 6 and len(user_requests) == 4
    assert len(agent_requests) + len(user_requests) == len(requests)


def _text(request: dict[str, Any]) -> str:
    return json.dumps(request, ensure_ascii=False)


def test_the_user_simulator_is_never_sent_gold_actions_or_criteria(whole_loop, env):
    task, result, requests = whole_loop
    user_requests = [_text(r) for r in requests if is_user_request(r)]
    assert user_requests and all("REASON-MARK" in r for r in user_requests)  # it does get the scenario
    user_id = result.rollout.steps[0].observation  # learned by the agent from a tool, never told the user
    forbidden = [task.expected_state_hash, task.initial_state_hash, "COMMUNICATE-MARK", "FORBIDDEN-MARK", user_id,
                 *(a.name for a in task.gold_actions + task.actions_should_not_take),
                 *(json.dumps(a.arguments, ensure_ascii=False) for a in task.gold_actions),
                 *(json.dumps(json.dumps(a.arguments)) for a in task.gold_actions)]
    for text in user_requests:
        leaked = [f for f in forbidden if f and f in text]
        assert not leaked, f"the user simulator was sent {leaked}"


def test_the_agent_is_never_sent_the_scenario_beyond_what_the_user_said(whole_loop):
    task, result, requests = whole_loop
    agent_requests = [_text(r) for r in requests if "tools" in r]
    spoken = " ".join(m.content or "" for m in result.rollout.messages if m.role == "user")
    assert all("I no longer need it" in r for r in agent_requests[1:])  # it does get the user's words
    scenario = task.scenario
    unsaid = ["PERSONA-MARK", "REASON-MARK", "UNKNOWN-MARK", "INSTRUCTIONS-MARK", "COMMUNICATE-MARK",
              "FORBIDDEN-MARK", task.expected_state_hash, scenario.reason_for_call, scenario.known_info]
    assert not any(mark in spoken for mark in unsaid)
    for text in agent_requests:
        leaked = [mark for mark in unsaid if mark and mark in text]
        assert not leaked, f"the agent was sent {leaked}"


# ============================================================================ faults


class FaultyAt:
    """Wraps a responder; answers the given request indexes with a fault instead (the wrapped
    responder still sees every request, so its own counting stays right)."""

    def __init__(self, inner: Any, faults: dict[int, Any]) -> None:
        self.inner = inner
        self.faults = faults
        self.index = -1

    def __call__(self, body: dict[str, Any]) -> Any:
        self.index += 1
        reply = self.inner(body)
        return self.faults.get(self.index, reply)


def planned(env, tasks, plans: list[str], task_id: str = "general-1") -> PlannedAgentLM:
    return PlannedAgentLM(tasks, {(AGENT, task_id): plans}, write_tools(env))


def test_429_500_and_timeouts_are_retried_and_the_rollout_passes(env, tasks):
    responder = FaultyAt(planned(env, tasks, ["pass"]), {1: Fault(429), 2: Fault(500), 4: Hang(5.0)})
    with ScriptedLLMServer(responder=responder) as server:
        lm = build_lm(LMSettings(model=AGENT, api_base=server.base_url, timeout_s=0.5, num_retries=3))
        result = RolloutEngine(env, ScriptedUser(env.domain.tools), [LMAgent(lm, env)]).run(tasks["general-1"], AGENT)
        statuses = len(server.requests)
    assert result.verdict.passed, result.verdict
    assert result.rollout.termination == "user_stop"
    agent_turns = sum(m.role == "assistant" for m in result.rollout.messages)
    assert statuses == agent_turns + 3  # three answers were faults, each retried once


def test_invalid_arguments_and_unknown_tools_become_observations_the_agent_reads(env, tasks):
    task = tasks["general-1"]
    login, lookup, cancel = task.gold_actions
    replies = [ToolCalls([(login.name, login.arguments)]),
               ToolCalls([(lookup.name, '{"order_id": ')]),  # not JSON
               ToolCalls([("teleport_order", {"order_id": "#W1"})]),  # no such tool
               ToolCalls([(lookup.name, {"order": "typo"})]),  # wrong argument name
               ToolCalls([(lookup.name, lookup.arguments)]),
               Text("Cancel it? (yes/no)"),
               ToolCalls([(cancel.name, cancel.arguments)]),
               Text("It has been cancelled.")]
    with ScriptedLLMServer(replies=replies) as server:
        lm = build_lm(LMSettings(model=AGENT, api_base=server.base_url))
        result = RolloutEngine(env, ScriptedUser(env.domain.tools), [LMAgent(lm, env)]).run(task, AGENT)
        requests = server.requests
    assert server.errors == []
    observations = [r["messages"][-1] for r in requests[2:5]]  # what the agent read after each bad call
    assert all(o["role"] == "tool" and o["content"].startswith("Error: ") for o in observations)
    assert "not valid JSON" in observations[0]["content"]
    assert "unknown tool 'teleport_order'" in observations[1]["content"]
    assert "unexpected argument 'order'" in observations[2]["content"]
    assert [s.error for s in result.rollout.steps] == [False, True, True, True, False, False]
    assert result.verdict.passed, result.verdict


def test_a_malformed_reply_ends_the_rollout_as_lm_error(env, tasks):
    from tests.llm_server import Malformed

    responder = FaultyAt(planned(env, tasks, ["pass"]), {1: Malformed()})
    with ScriptedLLMServer(responder=responder) as server:
        lm = build_lm(LMSettings(model=AGENT, api_base=server.base_url))
        result = RolloutEngine(env, ScriptedUser(env.domain.tools), [LMAgent(lm, env)]).run(tasks["general-1"], AGENT)
    assert result.rollout.termination == "lm_error" and "lm_error" in result.verdict.reasons
    assert len(result.rollout.steps) == 1  # the look-up before the broken reply was kept


def test_an_lm_failing_beyond_retries_ends_as_lm_error_and_the_batch_goes_on(env, tasks):
    plans = ["pass", "lm_error", "pass"]
    with ScriptedLLMServer(responder=planned(env, tasks, plans)) as server:
        lm = build_lm(LMSettings(model=AGENT, api_base=server.base_url, num_retries=2))
        engine = RolloutEngine(env, ScriptedUser(env.domain.tools), [LMAgent(lm, env)])
        jobs = [RolloutJob(task_id="general-1", agent=AGENT, trial=k, rollout_id=f"r{k}") for k in range(3)]
        results, crashes = engine.run_many(tasks, jobs, concurrency=3)
    assert crashes == []
    failed = [r for r in results if not r.verdict.passed]
    assert len(results) == 3 and len(failed) == 1
    assert failed[0].rollout.termination == "lm_error"
    assert "lm_error" in failed[0].verdict.reasons
    assert "LMServerError" in (failed[0].rollout.error or "")


class ScriptAgent:
    """An in-process agent with fixed replies (no LM), for the engine's own rules."""

    def __init__(self, name: str, replies: list[AgentReply], explode_on: str | None = None) -> None:
        self.name = name
        self.replies = replies
        self.explode_on = explode_on

    def system_prompt(self) -> str:
        return "scripted"

    def session(self, task: Task) -> Any:
        outer = self

        class Session:
            turn = 0

            def reply(self, conversation: list[Message]) -> AgentReply:
                if outer.explode_on == task.id:
                    raise RuntimeError("a bug in an agent")
                self.turn += 1
                return outer.replies[min(self.turn - 1, len(outer.replies) - 1)]

            def usage(self) -> TokenUsage:
                return TokenUsage()

        return Session()


def call(name: str, **arguments: Any) -> AgentToolCall:
    return AgentToolCall(name=name, arguments=arguments)


def test_a_crashing_rollout_is_reported_and_the_batch_goes_on(env, tasks):
    agent = ScriptAgent("bug", [AgentReply(content="Your order has been handled.")], explode_on="general-2")
    engine = RolloutEngine(env, ScriptedUser(env.domain.tools), [agent])
    jobs = [RolloutJob(task_id=t, agent="bug", trial=0, rollout_id=t) for t in tasks]
    results, crashes = engine.run_many(tasks, jobs, concurrency=2)
    assert [c.job.task_id for c in crashes] == ["general-2"] and "a bug in an agent" in crashes[0].error
    assert sorted(r.rollout.task_id for r in results) == sorted(t for t in tasks if t != "general-2")


# ============================================================================ terminations and turns


def test_a_transfer_ends_the_rollout(env, tasks):
    agent = ScriptAgent("t", [AgentReply(tool_calls=[call("transfer_to_human_agents", summary="help")])])
    result = RolloutEngine(env, ScriptedUser(env.domain.tools), [agent]).run(tasks["general-1"], "t")
    assert result.rollout.termination == "transfer"
    assert [m.role for m in result.rollout.messages] == ["system", "user", "assistant", "tool"]


def test_the_turn_limit_ends_the_rollout_with_reason_max_turns(env, tasks):
    agent = ScriptAgent("loop", [AgentReply(tool_calls=[call("list_all_product_types")])])
    result = RolloutEngine(env, ScriptedUser(env.domain.tools), [agent], max_turns=3).run(tasks["general-1"], "loop")
    assert result.rollout.termination == "max_turns"
    assert len(result.rollout.steps) == 3
    assert "max_turns" in result.verdict.reasons


def test_one_tool_call_per_turn_extra_calls_are_answered_but_not_run(env, tasks):
    task = tasks["general-1"]
    login, lookup, cancel = task.gold_actions
    agent = ScriptAgent("greedy", [
        AgentReply(tool_calls=[call(login.name, **login.arguments), call(cancel.name, **cancel.arguments)]),
        AgentReply(content="Anything else?")])
    result = RolloutEngine(env, ScriptedUser(env.domain.tools), [agent]).run(task, "greedy")
    rollout = result.rollout
    assert [s.call.name for s in rollout.steps] == [login.name]  # the cancel was not run
    tool_messages = [m for m in rollout.messages if m.role == "tool"]
    assert [m.tool_call_id for m in tool_messages] == [c.id for c in rollout.messages[2].tool_calls]
    assert tool_messages[1].content == ONE_CALL_PER_TURN
    assert rollout.end_state_hash == environment().initial_hash()


def test_an_empty_agent_turn_ends_the_rollout(env, tasks):
    result = RolloutEngine(env, ScriptedUser(env.domain.tools), [ScriptAgent("mute", [AgentReply()])]).run(tasks["general-1"], "mute")
    assert result.rollout.termination == "agent_stop"


# ============================================================================ isolation, speed, storage


def test_concurrent_rollouts_are_isolated_on_their_own_episodes(env, tasks):
    engine = RolloutEngine(env, ScriptedUser(env.domain.tools), [OracleAgent(env)])
    jobs = [RolloutJob(task_id=t, agent="oracle", trial=k, rollout_id=f"{t}-{k}") for t in tasks for k in range(8)]
    results, crashes = engine.run_many(tasks, jobs, concurrency=8)
    assert crashes == [] and len(results) == len(jobs)
    for result in results:
        assert result.verdict.passed, result.verdict
        assert result.rollout.end_state_hash == tasks[result.rollout.task_id].expected_state_hash
    assert env.episode().state_hash() == env.initial_hash()


def test_rollouts_are_stored_with_their_verdicts_in_atomic_batches(env, tasks, tmp_path):
    engine = RolloutEngine(env, ScriptedUser(env.domain.tools), [OracleAgent(env)])
    with TaskStore(tmp_path / "s.duckdb") as store:
        run_id = store.start_run("bench", {})
        store.add_tasks(run_id, list(tasks.values()))
        writer = RolloutWriter(store, run_id, batch_size=4, max_delay_s=60)
        jobs = [RolloutJob(task_id=t, agent="oracle", trial=k, rollout_id=rollout_id_for(run_id, t, "oracle", k))
                for t in tasks for k in range(2)]
        written_along = []

        def add(result):
            writer.add(result)
            written_along.append(writer.written)

        engine.run_many(tasks, jobs, concurrency=3, on_result=add)
        # the first result at once, then whole batches: nothing reaches the store in between
        assert written_along[:5] == [1, 1, 1, 1, 5]
        writer.flush()
        assert store.done_rollout_keys(run_id) == {(t, "oracle", k) for t in tasks for k in range(2)}
        _, rows = store.query("SELECT count(*), count(*) FILTER (WHERE pass) FROM rollouts_latest WHERE run_id = ?",
                              [run_id])
        assert rows == [(10, 10)]
        stored = store.rollouts("rollout_id = ?", [jobs[0].rollout_id])[0]
    assert stored.messages[-1].content.endswith("###STOP###")
    assert stored.steps and stored.end_state_hash == tasks[jobs[0].task_id].expected_state_hash


def test_the_oracle_and_do_nothing_calibrate_every_condition(env, tasks):
    from trajectory2task.programs.loop.agent import DoNothingAgent

    engine = RolloutEngine(env, ScriptedUser(env.domain.tools), [OracleAgent(env), DoNothingAgent(env)])
    verifier = Verifier(env)
    for task in tasks.values():
        assert verifier.verify_task(task).passed
        assert engine.run(task, "oracle").verdict.passed, task.id
        assert not engine.run(task, "do-nothing").verdict.passed, task.id


def test_the_engine_gives_metrics_a_closed_loop_reference_rollout(env, tasks):
    from trajectory2task.optimize.metrics import check_task

    engine = RolloutEngine(env, ScriptedUser(env.domain.tools), [OracleAgent(env)])
    verifier = Verifier(env)
    for task in tasks.values():
        checked = check_task(verifier, task, run_rollout=engine.runner("oracle"))
        assert checked.passed, checked.feedback()


def test_tool_call_ids_in_the_transcript_are_unique_even_when_the_lm_reuses_them(env, tasks):
    task = tasks["general-1"]
    login, lookup, _ = task.gold_actions
    agent = ScriptAgent("reuse", [
        AgentReply(tool_calls=[AgentToolCall(id="call_0", name=login.name, arguments=login.arguments)]),
        AgentReply(tool_calls=[AgentToolCall(id="call_0", name=lookup.name, arguments=lookup.arguments)]),
        AgentReply(tool_calls=[AgentToolCall(name=lookup.name, arguments=lookup.arguments)]),
        AgentReply(content="Is there anything else?")])
    messages = RolloutEngine(env, ScriptedUser(env.domain.tools), [agent]).run(task, "reuse").rollout.messages
    ids = [c.id for m in messages for c in m.tool_calls or []]
    assert len(ids) == 3 and len(set(ids)) == 3 and ids[0] == "call_0"
    assert [m.tool_call_id for m in messages if m.role == "tool"] == ids
