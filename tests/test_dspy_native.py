"""The programs as a DSPy user meets them: from Python only, the public API, a trainset from a
store in one call, stock DSPy optimizers (BootstrapFewShot, MIPROv2, GEPA) on the program
itself, save(), load() into a fresh program, and the same outputs, through a real `dspy.LM`
against the local scripted server."""

from __future__ import annotations

import copy
import json

import dspy
import pytest

import trajectory2task as t2t
from tests.llm_server import ScriptedLLMServer
from tests.test_optimize import LESSON, LearningLM


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    store = tmp_path_factory.mktemp("native") / "t2t.duckdb"
    t2t.generate("retail", n=4, seed=0, users=60, store=store)
    retail = t2t.get_domain("retail")
    return store, retail.environment(retail.generate_db(0, 60))


@pytest.fixture()
def lm():
    with ScriptedLLMServer(responder=LearningLM()) as server:
        # a plain dspy.LM, DSPy's own engine; no cache: the loaded program must ask again
        yield dspy.LM("openai/t2t-test", api_base=server.base_url, api_key="unused", cache=False)
        assert server.errors == []


def _tasks(predictions) -> list:
    return [p.task.model_dump(exclude={"provenance"}) if p.task is not None else p.rejected_reason
            for p in predictions]


def test_a_writer_compiles_saves_and_loads_with_stock_dspy(workspace, lm, tmp_path):
    store, env = workspace
    trainset = t2t.trainset("writer", store, env, where="condition = 'general'")
    assert trainset and set(trainset[0].inputs().keys()) == {"trajectory"}
    example = copy.deepcopy(trainset[0])  # plain data: copies, and no environment inside
    assert len(repr(example)) < 200_000
    metric = t2t.metric("writer", env)
    with dspy.context(lm=lm):
        before = sum(metric(e, t2t.TaskWriter(env=env)(**e.inputs())) for e in trainset)
        compiled = dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=1).compile(
            t2t.TaskWriter(env=env), trainset=trainset)
        after = sum(metric(e, compiled(**e.inputs())) for e in trainset)
        assert compiled.write_task.demos and before < after == len(trainset)
        path = tmp_path / "writer.json"
        compiled.save(str(path))
        fresh = t2t.TaskWriter(env=env)
        fresh.load(str(path))
        assert fresh.write_task.dump_state() == compiled.write_task.dump_state()
        ours = [compiled(**e.inputs()) for e in trainset]
        theirs = [fresh(**e.inputs()) for e in trainset]
    assert isinstance(ours[0], dspy.Prediction) and _tasks(ours) == _tasks(theirs)


def test_the_writer_compiles_with_mipro_and_loads(workspace, lm, tmp_path):
    store, env = workspace
    trainset = t2t.trainset("writer", store, env, where="condition = 'general'")
    with dspy.context(lm=lm):
        optimizer = dspy.MIPROv2(metric=t2t.metric("writer", env), auto=None, num_candidates=2,
                                 max_bootstrapped_demos=1, max_labeled_demos=0, num_threads=1, verbose=False)
        compiled = optimizer.compile(t2t.TaskWriter(env=env), trainset=trainset, valset=trainset, num_trials=2,
                                     minibatch=False)
        path = tmp_path / "mipro.json"
        compiled.save(str(path))
        fresh = t2t.TaskWriter(env=env)
        fresh.load(str(path))
        assert fresh.write_task.dump_state() == compiled.write_task.dump_state()
        assert _tasks([compiled(**e.inputs()) for e in trainset]) == _tasks([fresh(**e.inputs()) for e in trainset])


def test_the_intent_adaptation_is_a_program_with_its_environment_bound(workspace, tmp_path):
    store, env = workspace
    trainset = t2t.trainset("adapter", store, env, where="condition = 'general'")
    assert trainset and set(trainset[0].inputs().keys()) == {"task", "trajectory", "condition", "seed"}
    adaptation = t2t.IntentAdaptation(env=env)
    copied = adaptation.deepcopy()
    assert copied.environment.value is env  # shared by copies, not copied
    adaptation.ambiguous.demos = [dspy.Example(task="t", facts="f", trajectory="x", scenario="s")]
    path = tmp_path / "adaptation.json"
    adaptation.save(str(path))  # no environment in the saved state
    fresh = t2t.IntentAdaptation(env=env)
    fresh.load(str(path))
    assert fresh.ambiguous.dump_state() == adaptation.ambiguous.dump_state()
    example = trainset[0]
    with dspy.context(lm=dspy.utils.DummyLM([{"scenario": "unreadable", "withheld_info": [], "claims": []}] * 4)):
        try:
            prediction = fresh(**example.inputs())
        except Exception as exc:  # an unreadable wording is an error after its re-asks, not a silent 0
            assert "scenario" in str(exc)
        else:
            assert isinstance(prediction, dspy.Prediction) and hasattr(prediction, "rejected_reason")


def test_gepa_rewrites_the_writers_instruction_from_feedback(workspace, lm, tmp_path):
    store, env = workspace
    trainset = t2t.trainset("writer", store, env, where="condition = 'general'")[:3]
    with dspy.context(lm=lm):
        optimizer = dspy.GEPA(metric=t2t.metric("writer", env, feedback=True), max_metric_calls=12,
                              reflection_lm=lm, reflection_minibatch_size=2, num_threads=1)
        compiled = optimizer.compile(t2t.TaskWriter(env=env), trainset=trainset, valset=trainset)
        assert LESSON in compiled.write_task.signature.instructions
        path = tmp_path / "gepa.json"
        compiled.save(str(path))
        fresh = t2t.TaskWriter(env=env)
        fresh.load(str(path))
        assert fresh.write_task.signature.instructions == compiled.write_task.signature.instructions
        assert _tasks([compiled(**e.inputs()) for e in trainset]) == _tasks([fresh(**e.inputs()) for e in trainset])


class _AgentOrProposerLM:
    """Agent turns (requests with tools) go to the planned agent; the optimizers' other asks
    (MIPROv2's instruction proposals) to the writer's scripted LM."""

    def __init__(self, agent) -> None:
        self.agent, self.other = agent, LearningLM()

    def __call__(self, body: dict):
        return self.agent(body) if body.get("tools") else self.other(body)


@pytest.mark.parametrize("optimizer", ["bootstrap", "mipro"])
def test_the_agent_compiles_over_episodes_and_its_program_loads(optimizer, tmp_path):
    from tests.closed_loop import PlannedAgentLM, environment, make_tasks, store_tasks, write_tools
    from trajectory2task.programs.loop.agent import ToolCallingAgent

    env = environment()
    tasks = make_tasks(env)
    store = tmp_path / "agent.duckdb"
    with t2t.TaskStore(store) as ts:
        store_tasks(ts, tasks)
    trainset = t2t.trainset("agent", store, env, where="condition = 'general'")
    assert {e.task.id for e in trainset} == {"general-1", "general-2"}
    model = "openai/gpt-4o-mini"  # known to LiteLLM as function-calling: native tools
    plans = {(model, "general-1"): ["pass"], (model, "general-2"): ["pass"]}
    responder = _AgentOrProposerLM(PlannedAgentLM(tasks, plans, write_tools(env), default_plan="pass"))
    adapter = dspy.settings.adapter
    try:
        with ScriptedLLMServer(responder=responder) as server:
            lm = dspy.LM(model, api_base=server.base_url, api_key="unused", cache=False)
            with dspy.context(lm=lm):
                metric = t2t.metric("agent", env)
                if optimizer == "bootstrap":
                    compiled = dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=2,
                                                     max_labeled_demos=0).compile(t2t.EpisodeAgent(env),
                                                                                  trainset=trainset)
                else:
                    compiled = dspy.MIPROv2(metric=metric, auto=None, num_candidates=2, max_bootstrapped_demos=1,
                                            max_labeled_demos=0, num_threads=1, verbose=False).compile(
                        t2t.EpisodeAgent(env), trainset=trainset, valset=trainset, num_trials=2, minibatch=False)
                if optimizer == "bootstrap":
                    assert compiled.program.turn.demos, "no passing episode became a demo"
                else:  # its trials ran and scored the episodes (every plan passes: the best is 1.0)
                    assert compiled.trial_logs and compiled.score == 100.0  # MIPROv2 reports percent
                path = tmp_path / "agent.json"
                compiled.program.save(str(path))
                fresh = ToolCallingAgent()
                fresh.load(str(path))
                assert fresh.turn.dump_state() == compiled.program.turn.dump_state()
                ours = compiled(task=trainset[0].task)
                theirs = t2t.EpisodeAgent(env, fresh)(task=trainset[0].task)
            assert server.errors == []
    finally:
        dspy.settings.configure(adapter=adapter)
    assert [v.passed for v in ours.verdicts] == [v.passed for v in theirs.verdicts] == [True]
    calls = [[(s.call.name, s.call.arguments) for s in r.steps] for r in (ours.result[0], theirs.result[0])]
    assert calls[0] == calls[1]


class _AmbiguousWordsLM:
    """The scripted LM for the intent adaptation: for each parent task it knows (by the opening
    words of its request) it answers the ambiguous wording the baseline adaptation finds; other
    asks (the optimizers' proposers) go to the writer's scripted LM."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.fallback = LearningLM()

    def __call__(self, body: dict):
        from tests.llm_server import Text, output_field_names

        if output_field_names(body) == ["scenario", "withheld_info", "claims"]:
            prompt = body["messages"][-1]["content"]
            for opening, answer in self.answers.items():
                if opening in prompt:
                    return Text(answer)
        return self.fallback(body)


@pytest.mark.parametrize("optimizer", ["bootstrap", "mipro"])
def test_the_intent_adaptation_compiles_saves_and_loads_with_stock_dspy(workspace, optimizer, tmp_path):
    from tests.llm_server import chat_fields
    from trajectory2task.programs.generation.adapting import BaselineAdaptation

    store, env = workspace
    trainset = [e for e in t2t.trainset("adapter", store, env, where="condition = 'general'")
                if e.condition == "ambiguous"]
    answers = {}
    for example in trainset:
        adapted = BaselineAdaptation().adapt(example.task, example.trajectory, "ambiguous", env, example.seed).task
        if adapted is not None:
            scenario = adapted.scenario.model_copy(update={"withheld_info": []})
            answers[example.task.scenario.reason_for_call[:40]] = chat_fields(
                scenario=scenario.model_dump(exclude_none=True), withheld_info=adapted.scenario.withheld_info,
                claims=[])
    trainset = [e for e in trainset if e.task.scenario.reason_for_call[:40] in answers]
    assert len(trainset) >= 2, "too few ambiguous adaptations to compile on"
    with ScriptedLLMServer(responder=_AmbiguousWordsLM(answers)) as server:
        lm = dspy.LM("openai/t2t-test", api_base=server.base_url, api_key="unused", cache=False)
        with dspy.context(lm=lm, adapter=dspy.ChatAdapter(use_json_adapter_fallback=False)):
            metric = t2t.metric("adapter", env)
            if optimizer == "bootstrap":
                compiled = dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=1).compile(
                    t2t.IntentAdaptation(env=env), trainset=trainset)
                assert compiled.ambiguous.demos
            else:
                compiled = dspy.MIPROv2(metric=metric, auto=None, num_candidates=2, max_bootstrapped_demos=1,
                                        max_labeled_demos=0, num_threads=1, verbose=False).compile(
                    t2t.IntentAdaptation(env=env), trainset=trainset, valset=trainset, num_trials=2, minibatch=False)
            assert all(metric(e, compiled(**e.inputs())) == 1.0 for e in trainset)
            path = tmp_path / "adapter.json"
            compiled.save(str(path))
            fresh = t2t.IntentAdaptation(env=env)
            fresh.load(str(path))
            assert fresh.ambiguous.dump_state() == compiled.ambiguous.dump_state()
            ours = [compiled(**e.inputs()) for e in trainset]
            theirs = [fresh(**e.inputs()) for e in trainset]
        assert server.errors == []
    assert _tasks(ours) == _tasks(theirs) and all(p.task is not None for p in ours)


def _learned(messages: list[dict]) -> bool:
    """Whether a request carries what an optimizer adds: a demo (an earlier assistant turn)
    or an instruction with LESSON (what LearningLM proposes to MIPROv2)."""
    system = messages[0]["content"] if messages[0]["role"] == "system" else ""
    return LESSON.lower() in system.lower() or any(m["role"] == "assistant" for m in messages)


class _ForthcomingUserLM(LearningLM):
    """The scripted LM for the user simulator: untaught, it opens with everything it knows,
    withheld details included (an ambiguous task then fails its fidelity check); with a demo
    or the lesson it opens with the reason for the call alone. Later turns and the
    optimizers' other asks are LearningLM's."""

    def __call__(self, body: dict):
        from tests.llm_server import Text, chat_fields, output_field_names
        from tests.test_optimize import _field

        messages = body["messages"]
        last = messages[-1]["content"]
        opening = output_field_names(body) == ["message"] and not json.loads(_field(last, "conversation") or "[]")
        if opening and not _learned(messages):
            scenario = json.loads(_field(last, "scenario") or "{}")
            told = [scenario.get("reason_for_call", ""), *scenario.get("withheld_info", [])]
            return Text(chat_fields(message=" ".join(told)))
        return super().__call__(body)


def _said(predictions) -> list[list[str]]:
    return [[m.content for m in p.result.messages if m.role == "user"] for p in predictions]


@pytest.mark.parametrize("optimizer", ["bootstrap", "mipro"])
def test_the_user_simulator_compiles_over_episodes_saves_and_loads(workspace, optimizer, tmp_path):
    store, env = workspace
    trainset = t2t.trainset("user", store, env, where="condition IN ('general', 'ambiguous')")
    assert {e.task.condition for e in trainset} == {"general", "ambiguous"}
    assert set(trainset[0].inputs().keys()) == {"task"}
    with ScriptedLLMServer(responder=_ForthcomingUserLM()) as server:
        lm = dspy.LM("openai/t2t-test", api_base=server.base_url, api_key="unused", cache=False)
        with dspy.context(lm=lm):
            metric = t2t.metric("user", env)
            untaught = [t2t.EpisodeUser(env)(**e.inputs()) for e in trainset]
            before = [metric(e, p) for e, p in zip(trainset, untaught)]
            if optimizer == "bootstrap":
                compiled = dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=1, max_labeled_demos=0).compile(
                    t2t.EpisodeUser(env), trainset=trainset)
                assert compiled.program.respond.demos
            else:
                compiled = dspy.MIPROv2(metric=metric, auto=None, num_candidates=2, max_bootstrapped_demos=1,
                                        max_labeled_demos=0, num_threads=1, verbose=False).compile(
                    t2t.EpisodeUser(env), trainset=trainset, valset=trainset, num_trials=2, minibatch=False)
                assert compiled.trial_logs and LESSON in compiled.program.respond.signature.instructions
            ours = [compiled(**e.inputs()) for e in trainset]
            # the user keeps every withheld detail back until asked, and stops when the goal is met
            assert min(before) < 1.0 and [metric(e, p) for e, p in zip(trainset, ours)] == [1.0] * len(trainset)
            path = tmp_path / "user.json"
            compiled.program.save(str(path))
            fresh = t2t.UserSimulator()
            fresh.load(str(path))
            assert fresh.respond.dump_state() == compiled.program.respond.dump_state()
            theirs = [t2t.EpisodeUser(env, fresh)(**e.inputs()) for e in trainset]
        assert server.errors == []
    assert isinstance(ours[0], dspy.Prediction) and ours[0].verdict.passed
    assert _said(ours) == _said(theirs) != _said(untaught)  # the loaded state is what changed the user


class _WalkingExplorerLM(LearningLM):
    """The scripted LM for the explorer: it replays a valid walk for each seed customer (by
    email), but untaught only for the customers in ``unaided``; for the others it keeps
    reading the catalogue until the step limit (no write: no trajectory)."""

    def __init__(self, walks: dict[str, list[dict]], unaided: set[str]) -> None:
        super().__init__(walks)
        self.unaided = unaided

    def __call__(self, body: dict):
        import re

        from tests.llm_server import Text, chat_fields, output_field_names
        from tests.test_optimize import _field

        messages = body["messages"]
        if "tool_call" in output_field_names(body):
            last = messages[-1]["content"]
            email = re.search(r"email (\S+?)\. ", _field(last, "seed_entity") or "")
            if not _learned(messages) and (email.group(1) if email else "") not in self.unaided:
                return Text(chat_fields(tool_call={"name": "list_all_product_types", "arguments": {}}))
        return super().__call__(body)


def _walks(env, seeds: list[int], explorer) -> dict[str, list[dict]]:
    """Per seed customer's email, the calls of the baseline's walk from the same seed with the
    LM explorer's limits (which draw the same customer)."""
    from trajectory2task.programs.generation.exploration import BaselineExplorer

    walks = {}
    for seed in seeds:
        trajectory = BaselineExplorer(max_steps=explorer.max_steps, max_writes=explorer.max_writes).explore(
            env, seed).trajectory
        assert trajectory is not None
        user_id = env.domain.owner_of(env.episode(), *trajectory.seed_entity.split("/", 1))
        email = env.episode().record("users", user_id)["email"]
        walks[email] = [s.call.model_dump(include={"name", "arguments"}) for s in trajectory.steps]
    return walks


def _trajectories(predictions) -> list:
    return [p.trajectory.model_dump(exclude={"provenance"}) if p.trajectory is not None else p.rejected_reason
            for p in predictions]


@pytest.mark.parametrize("optimizer", ["bootstrap", "mipro"])
def test_the_explorer_compiles_saves_and_loads_with_stock_dspy(workspace, optimizer, tmp_path):
    store, env = workspace
    trainset = t2t.trainset("explorer", store, env, where="domain = 'retail'")
    assert len(trainset) >= 2 and set(trainset[0].inputs().keys()) == {"seed", "target_write"}
    walks = _walks(env, [e.seed for e in trainset], t2t.Explorer(env=env))
    with ScriptedLLMServer(responder=_WalkingExplorerLM(walks, unaided={next(iter(walks))})) as server:
        lm = dspy.LM("openai/t2t-test", api_base=server.base_url, api_key="unused", cache=False)
        with dspy.context(lm=lm):
            metric = t2t.metric("explorer", env)
            untaught = [t2t.Explorer(env=env)(**e.inputs()) for e in trainset]
            before = [metric(e, p) for e, p in zip(trainset, untaught)]
            if optimizer == "bootstrap":
                compiled = dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=1, max_labeled_demos=0).compile(
                    t2t.Explorer(env=env), trainset=trainset)
                assert compiled.propose.demos and compiled.propose.demos[0].tool_call.name
            else:
                compiled = dspy.MIPROv2(metric=metric, auto=None, num_candidates=2, max_bootstrapped_demos=1,
                                        max_labeled_demos=0, num_threads=1, verbose=False).compile(
                    t2t.Explorer(env=env), trainset=trainset, valset=trainset, num_trials=2, minibatch=False)
                assert compiled.trial_logs and LESSON in compiled.propose.signature.instructions
            ours = [compiled(**e.inputs()) for e in trainset]
            # one customer is walked unaided; after compiling, every one is (valid and new)
            assert sum(s > 0 for s in before) == 1 and all(metric(e, p) > 0 for e, p in zip(trainset, ours))
            path = tmp_path / "explorer.json"
            compiled.save(str(path))
            fresh = t2t.Explorer(env=env)
            fresh.load(str(path))
            assert fresh.propose.dump_state() == compiled.propose.dump_state()
            theirs = [fresh(**e.inputs()) for e in trainset]
        assert server.errors == []
    assert isinstance(ours[0], dspy.Prediction)
    assert _trajectories(ours) == _trajectories(theirs) != _trajectories(untaught)
