"""DSPy optimizers on the generation programs, through a real dspy.LM and the local test server.

The server plays a scripted LM that "learns": its task-writer answers state every required
fact only when the prompt carries an instruction with LESSON in it, or a demo, or (for some
trajectories with at most three facts to state) by luck. So an uncompiled writer passes part of the
examples, and what an optimizer changes (demos, instructions) shows in the scores, in the
saved state and in the requests of a later `t2t generate --programs NAME`.
"""

from __future__ import annotations

import json
import re

import dspy
import pytest
from typer.testing import CliRunner

from trajectory2task.optimize.compile import (
    AdaptationTarget,
    ExplorerTarget,
    OptimizerSettings,
    UserTarget,
    WriterTarget,
    compile_program,
    select_ids,
)
from trajectory2task.programs.generation.adapting import BaselineAdaptation
from trajectory2task.programs.generation.exploration import BaselineExplorer
from trajectory2task.programs.lm.build import build_lm
from trajectory2task.programs.lm.config import LMSettings
from trajectory2task.programs.generation.pipeline import GenerationConfig, GenerationPipeline, id_prefix
from trajectory2task.programs.generation.writing import BaselineWriter
from trajectory2task.signatures.models import CONDITIONS
from trajectory2task.store import TaskStore
from trajectory2task.store.failures import StoreSink
from trajectory2task.cli import app
from tests.cli import run_t2t
from tests.llm_server import ScriptedLLMServer, Text, chat_fields, output_field_names

USERS = 60
LESSON = "STATE EVERY REQUIRED FACT VERBATIM"
SMALL = OptimizerSettings(max_bootstrapped_demos=1, num_candidates=2, num_trials=2, max_metric_calls=12,
                          reflection_minibatch_size=2)


# ---------------------------------------------------------------- the scripted LM


def _field(text: str, name: str) -> str | None:
    found = re.search(r"\[\[ ## " + name + r" ## \]\]\n(.*?)(?:\n\n|\Z)", text, re.S)
    return found.group(1) if found else None


class LearningLM:
    """Responder for ScriptedLLMServer; `calls` maps a seed email to the explorer's replay."""

    def __init__(self, explorer_calls: dict[str, list[dict]] | None = None) -> None:
        self.explorer_calls = explorer_calls or {}

    def __call__(self, body: dict) -> Text:
        messages = body["messages"]
        names = output_field_names(body)
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        last = messages[-1]["content"] if isinstance(messages[-1]["content"], str) else ""
        if "scenario" in names and "communicate_info" in names:
            return Text(chat_fields(scenario=self._scenario(system, messages, last), communicate_info=[], claims=[]))
        if "tool_call" in names:
            return Text(chat_fields(tool_call=self._exploration_call(last)))
        if names == ["message"]:
            return Text(chat_fields(message=self._user_turn(last)))
        answers = {n: (f"{LESSON}, as the customer would say them." if "instruction" in n else "ok") for n in names}
        if names and ("response_format" in body or "JSON object" in system):  # GEPA's proposer: JSON
            return Text(json.dumps(answers))
        return Text(chat_fields(**answers) if names else f"```\n{LESSON}.\n```")

    @staticmethod
    def _scenario(system: str, messages: list[dict], last: str) -> dict:
        facts = [f.split(": ", 1)[1] for f in json.loads(_field(last, "required_facts") or "[]")]
        demos = sum(1 for m in messages if m["role"] == "assistant")
        lucky = len(facts) <= 3  # a short trajectory: the scripted LM states its few facts unaided
        if not (LESSON.lower() in system.lower() or demos or lucky):
            facts = facts[:1]
        return {"reason_for_call": "I need help with my account. " + " ".join(facts), "task_instructions": ""}

    def _exploration_call(self, last: str) -> dict:
        seed = _field(last, "seed_entity") or ""
        email = re.search(r"email (\S+?)\. ", seed)
        calls = self.explorer_calls.get(email.group(1) if email else "", [])
        done = len(json.loads(_field(last, "trajectory") or "[]"))
        if not calls:
            return {"name": "list_all_product_types", "arguments": {}}
        return calls[min(done, len(calls) - 1)]

    @staticmethod
    def _user_turn(last: str) -> str:
        conversation = json.loads(_field(last, "conversation") or "[]")
        if not conversation:
            return json.loads(_field(last, "scenario") or "{}").get("reason_for_call", "Hello.")
        agent = conversation[-1]["content"].lower()
        if "confirm" in agent:
            return "Yes, please go ahead."
        return "Thank you, that is all. ###STOP###"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def env(retail):
    return retail.environment(retail.generate_db(0, USERS))


def _generated_store(env, path):
    """A store with one offline generation run (4 items, every condition) on the test DB."""
    config = GenerationConfig(domain="retail", n=4, conditions=list(CONDITIONS), seed=0, db_users=USERS,
                              db_initial_hash=env.initial_hash(),
                              roles={"explorer": "baseline", "writer": "baseline", "adapter": "baseline"})
    config.id_prefix = id_prefix(config, "gen")
    with TaskStore(path) as store:
        store.start_run("generate", config.model_dump(mode="json"), seed=0, run_id="gen")
        GenerationPipeline(env, StoreSink(store), config, explorer=BaselineExplorer(), writer=BaselineWriter(),
                           adaptation=BaselineAdaptation()).run("gen")
    return path


@pytest.fixture(scope="module")
def store_path(env, tmp_path_factory):
    return _generated_store(env, tmp_path_factory.mktemp("optimize") / "t2t.duckdb")


@pytest.fixture()
def server():
    with ScriptedLLMServer(responder=LearningLM()) as running:
        yield running
        assert running.errors == []


def _lm(server):
    return build_lm(LMSettings(model="openai/t2t-test", api_base=server.base_url))


def _writer_examples(env, store_path):
    with TaskStore(store_path, read_only=True) as store:
        target = WriterTarget(env)
        return target, target.examples(store, select_ids(store, "condition = 'general'", "tasks"))


def _optimize(server, store_path, *args):
    return CliRunner().invoke(app, ["optimize", "--lm", "openai/t2t-test", "--api-base", server.base_url,
                                    "--store", str(store_path), "--max-demos", "1", "--candidates", "2",
                                    "--trials", "2", "--max-metric-calls", "12", "--json", *args])


# ---------------------------------------------------------------- the three optimizers


def test_bootstrap_saves_demos_and_records_scores_and_trials(store_path, server):
    result = _optimize(server, store_path, "--program", "writer", "--optimizer", "bootstrap",
                       "--trainset", "condition = 'general'", "--name", "writer-boot")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    with TaskStore(store_path, read_only=True) as store:
        saved = store.latest_program("writer-boot")
        _, trials = store.query("SELECT number, value, params->>'candidate' FROM trials "
                                "WHERE study = 'optimize:writer-boot' ORDER BY number")
        _, [(kind, status)] = store.query("SELECT kind, status FROM runs_status WHERE run_id = ?",
                                          [summary["run_id"]])
        _, [(lm_calls,)] = store.query("SELECT count(*) FROM lm_calls WHERE run_id = ?", [summary["run_id"]])
    demos = saved["state"]["write_task"]["demos"]
    assert saved["program"] == "writer" and saved["optimizer"] == "bootstrap"
    assert len(demos) == 1 and demos[0]["scenario"] and demos[0]["trajectory"]
    assert saved["score_before"] < 1.0 == saved["score_after"]
    assert (saved["score_before"], saved["score_after"]) == (summary["score_before"], summary["score_after"])
    assert trials == [(0, saved["score_before"], "uncompiled"), (1, saved["score_after"], "compiled")]
    assert (kind, status) == ("optimize", "finished")
    assert lm_calls == len(server.requests)


def test_mipro_rewrites_the_instruction_and_logs_its_trials(env, store_path, server):
    target, examples = _writer_examples(env, store_path)
    result = compile_program(target, "mipro", examples[:3], examples, _lm(server), SMALL)
    instructions = result.state["write_task"]["signature"]["instructions"]
    assert LESSON in instructions and result.instructions_changed == ["write_task"]
    assert result.score_before < result.score_after == 1.0
    mipro = [t for t in result.trials if t["params"].get("candidate") not in ("uncompiled", "compiled")]
    assert mipro and all(0.0 <= t["value"] <= 1.0 for t in mipro)
    assert max(t["value"] for t in mipro) == 1.0


def test_gepa_reflects_on_feedback_and_keeps_the_better_instruction(env, store_path, server):
    target, examples = _writer_examples(env, store_path)
    result = compile_program(target, "gepa", examples[:3], examples, _lm(server), SMALL)
    assert LESSON in result.state["write_task"]["signature"]["instructions"]
    assert result.score_before < result.score_after == 1.0
    candidates = [t for t in result.trials if isinstance(t["params"].get("candidate"), int)]
    assert len(candidates) >= 2 and candidates[0]["value"] == result.score_before
    # the reflection LM was shown the metric's feedback, not just a number
    reflections = [r for r in server.requests if output_field_names(r) == ["new_instruction"]]
    assert reflections and "scenario does not state" in json.dumps(reflections[0]["messages"])


def test_generate_uses_the_compiled_demos_and_instructions(store_path, server):
    for name, optimizer in (("writer-demos", "bootstrap"), ("writer-lesson", "gepa")):
        result = _optimize(server, store_path, "--program", "writer", "--optimizer", optimizer,
                           "--trainset", "condition = 'general'", "--name", name)
        assert result.exit_code == 0, result.output
    with TaskStore(store_path, read_only=True) as store:
        demo = store.latest_program("writer-demos")["state"]["write_task"]["demos"][0]
    sent = {}
    for name in ("writer-demos", "writer-lesson"):
        before = len(server.requests)
        result = CliRunner().invoke(app, ["generate", "--n", "1", "--users", str(USERS), "--conditions", "general",
                                          "--programs", name, "--writer-lm", "openai/t2t-test", "--api-base",
                                          server.base_url, "--store", str(store_path), "--json"])
        assert result.exit_code == 0, result.output
        sent[name] = [r for r in server.requests[before:] if "scenario" in output_field_names(r)]
        assert sent[name]
    with_demo = sent["writer-demos"][0]["messages"]
    assert [m["role"] for m in with_demo] == ["system", "user", "assistant", "user"]
    assert demo["scenario"]["reason_for_call"] in with_demo[2]["content"]
    assert LESSON not in with_demo[0]["content"]
    with_lesson = sent["writer-lesson"][0]["messages"]
    assert LESSON in with_lesson[0]["content"] and len(with_lesson) == 2


# ---------------------------------------------------------------- the other programs


def test_explorer_bootstrap_keeps_a_valid_novel_trace_as_demo(env, tmp_path):
    with TaskStore(_generated_store(env, tmp_path / "explore.duckdb"), read_only=True) as store:
        target = ExplorerTarget(env)
        examples = target.examples(store, select_ids(store, "run_id = 'gen'", "trajectories"))
        trajectories = store.trajectories("run_id = 'gen'")
    assert examples and {e.seed for e in examples} == {t.provenance.seed for t in trajectories}
    # the scripted LM replays the baseline walk of the same seed customer, call by call
    replay = {}
    for t in trajectories:
        user_id = env.domain.owner_of(env.episode(), *t.seed_entity.split("/", 1))
        email = env.episode().record("users", user_id)["email"]
        replay.setdefault(email, [s.call.model_dump(include={"name", "arguments"}) for s in t.steps])
    with ScriptedLLMServer(responder=LearningLM(replay)) as server:
        result = compile_program(target, "bootstrap", examples[:2], examples[:2], _lm(server), SMALL)
        assert server.errors == []
    demos = result.state["propose"]["demos"]
    assert len(demos) == 1 and demos[0]["tool_call"]["name"]
    # the trainset's own trajectories are not the reference, so replaying them is novel
    assert result.score_before > 0 and result.score_after > 0


def test_user_simulator_bootstrap_is_scored_by_fidelity(env, store_path):
    with TaskStore(store_path, read_only=True) as store:
        target = UserTarget(env)
        examples = target.examples(store, select_ids(store, "condition IN ('general', 'ambiguous')", "tasks"))
    assert examples
    with ScriptedLLMServer(responder=LearningLM()) as server:
        result = compile_program(target, "bootstrap", examples[:2], examples[:2], _lm(server), SMALL)
        assert server.errors == []
        first = [r for r in server.requests if output_field_names(r) == ["message"]][0]
    assert result.score_after == result.score_before == 1.0
    assert len(result.state["respond"]["demos"]) == 1
    # the user side is sent the scenario and the spoken turns, never the gold actions
    sent = json.dumps(first["messages"])
    assert "gold_actions" not in sent and "reason_for_call" in sent


def test_adapter_examples_pair_parents_with_conditions_and_the_metric_checks_them(env, store_path):
    with TaskStore(store_path, read_only=True) as store:
        target = AdaptationTarget(env)
        adapted_ids = select_ids(store, "condition <> 'general'", "tasks")
        general_ids = select_ids(store, "condition = 'general'", "tasks")
        from_adapted = target.examples(store, adapted_ids)
        from_general = target.examples(store, general_ids[:1])
        adapted = store.tasks("condition <> 'general'")
    assert {(e.task.id, e.condition) for e in from_adapted} == {(t.parent_task_id, t.condition) for t in adapted}
    assert [e.condition for e in from_general] == ["ambiguous", "changing", "infeasible"]
    adaptation = BaselineAdaptation()
    made = 0
    for example in from_general + from_adapted:
        outcome = adaptation.adapt(example.task, example.trajectory, example.condition, env, example.seed)
        score = target.score(example, dspy.Prediction(result=outcome))
        if outcome.task is None:
            assert score.value == 0.0 and "no task was made" in score.feedback
        else:
            made += 1
            assert score.value == 1.0, score.feedback
    assert made > 0


def test_writer_metric_counts_a_task_whose_gold_misses_its_end_state(env, store_path):
    target, examples = _writer_examples(env, store_path)
    from trajectory2task.programs.generation.writing import BaselineWriter as Writer

    written = Writer().write(examples[0].trajectory, env)
    good = target.score(examples[0], dspy.Prediction(result=written))
    broken = written.model_copy(update={"task": written.task.model_copy(
        update={"id": "broken", "expected_state_hash": env.initial_hash()})})
    bad = target.score(examples[0], dspy.Prediction(result=broken))
    assert good.value == 1.0 and bad.value == 0.0 and "invalid_gold" in bad.feedback


# ---------------------------------------------------------------- errors a user can make


def test_optimize_without_an_lm_is_one_clear_line(store_path):
    result = run_t2t("optimize", "--program", "writer", "--optimizer", "bootstrap", "--trainset", "true",
                     "--store", str(store_path), env={"T2T_LM": "", "T2T_WRITER_LM": ""})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "needs an LM for the writer" in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--program", "critic", "--optimizer", "bootstrap", "--trainset", "true"], "unknown program"),
    (["--program", "writer", "--optimizer", "annealing", "--trainset", "true"], "unknown optimizer"),
    (["--program", "writer", "--optimizer", "bootstrap", "--trainset", "condition = 'nope'"], "selects no tasks"),
])
def test_bad_requests_are_user_errors(store_path, args, message):
    result = CliRunner().invoke(app, ["optimize", "--lm", "openai/t2t-test", "--api-base", "http://127.0.0.1:9",
                                      "--store", str(store_path), *args])
    assert result.exit_code != 0 and message in str(result.exception)


def test_an_unreachable_lm_is_an_error_not_a_zero_score(env, store_path):
    target, examples = _writer_examples(env, store_path)
    lm = build_lm(LMSettings(model="openai/t2t-test", api_base="http://127.0.0.1:9/v1", num_retries=0,
                             timeout_s=2))
    from dspy.utils.exceptions import LMError

    from trajectory2task.programs.lm.errors import error_kind

    with pytest.raises(LMError) as raised:
        compile_program(target, "bootstrap", examples[:1], examples[:1], lm, SMALL)
    # the engine's wording may change; the kind a user is told about must not
    assert error_kind(raised.value) == "unreachable", str(raised.value)


def test_optimize_command_says_an_lm_failure_in_one_line(store_path, tmp_path):
    config = tmp_path / "lm.toml"
    config.write_text('[lm.default]\nmodel = "openai/t2t-test"\napi_base = "http://127.0.0.1:9/v1"\n'
                      'num_retries = 0\n')
    result = run_t2t("optimize", "--program", "writer", "--optimizer", "bootstrap", "--trainset",
                     "condition = 'general'", "--lm-config", str(config), "--store", str(store_path),
                     env={"T2T_LM": ""})
    assert result.returncode == 2, result.stderr
    # a refused connection is found before the first call, in one line naming the flag to check
    assert result.stderr.strip().count("\n") == 0 and "unreachable" in result.stderr
    assert "--api-base" in result.stderr
