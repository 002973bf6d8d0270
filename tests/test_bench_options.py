"""`t2t bench` options: --user-program (compiled user simulator) and --require-clarification."""

from __future__ import annotations

import json

import dspy

from trajectory2task.programs.loop.user_sim import UserSimulator
from trajectory2task.store import TaskStore
from tests.cli import run_t2t
from tests.closed_loop import environment, is_user_request, make_tasks, store_tasks, user_reply
from tests.llm_server import ScriptedLLMServer

DEMO_LINE = "Hi, I am the compiled demo customer; my order number is handy."


def _store_with_programs(path):
    tasks = make_tasks(environment())
    general = {"general-1": tasks["general-1"]}
    compiled = UserSimulator()
    compiled.respond.demos = [dspy.Example(scenario=general["general-1"].scenario, conversation=[],
                                           message=DEMO_LINE)]
    with TaskStore(path) as ts:
        store_tasks(ts, general)
        ts.add_program("user-v1", "user", compiled.dump_state(), run_id=None, optimizer="bootstrap")
        ts.add_program("writer-v1", "writer", {"write_task": {"demos": []}}, run_id=None)


def test_bench_sends_the_compiled_user_demos(tmp_path):
    store = tmp_path / "t2t.duckdb"
    _store_with_programs(store)

    def responder(body):
        return user_reply("Yes, go ahead." if len(body["messages"]) > 3 else "Please cancel my order. ###STOP###")

    with ScriptedLLMServer(responder=responder) as server:
        result = run_t2t("bench", "--agent-lm", "oracle", "--user-lm", "openai/gpt-4o-mini", "--api-base",
                         server.base_url, "--user-program", "user-v1", "--store", str(store), "--json")
        assert result.returncode in (0, 1), result.stderr
        user_requests = [r for r in server.requests if is_user_request(r)]
    assert user_requests
    assert all(DEMO_LINE in str(r["messages"]) for r in user_requests)


def test_bench_without_user_program_sends_no_demo(tmp_path):
    store = tmp_path / "t2t.duckdb"
    _store_with_programs(store)
    with ScriptedLLMServer(responder=lambda body: user_reply("Cancel it please. ###STOP###")) as server:
        run_t2t("bench", "--agent-lm", "oracle", "--user-lm", "openai/gpt-4o-mini", "--api-base", server.base_url,
                "--store", str(store), "--json")
        user_requests = [r for r in server.requests if is_user_request(r)]
    assert user_requests and not any(DEMO_LINE in str(r["messages"]) for r in user_requests)


def test_user_program_errors_are_one_line(tmp_path):
    store = tmp_path / "t2t.duckdb"
    _store_with_programs(store)
    cases = [
        (["--user-lm", "openai/gpt-4o-mini", "--user-program", "nope"], "no program named 'nope'"),
        (["--user-lm", "openai/gpt-4o-mini", "--user-program", "writer-v1"], "holds a 'writer' program"),
        (["--user-program", "user-v1"], "needs an LM user simulator"),
    ]
    for flags, message in cases:
        result = run_t2t("bench", "--agent-lm", "oracle", *flags, "--api-base", "http://127.0.0.1:9/v1",
                         "--store", str(store))
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_require_clarification_fails_ambiguous_rollouts_where_the_agent_never_asked(tmp_path):
    store = tmp_path / "t2t.duckdb"
    with TaskStore(store) as ts:
        store_tasks(ts, make_tasks(environment()))

    def ambiguous_cell(result):
        return next(json.loads(line) for line in result.stdout.splitlines() if '"condition": "ambiguous"' in line)

    lenient = run_t2t("bench", "--agent-lm", "oracle", "--store", str(store), "--json")
    assert lenient.returncode == 0 and ambiguous_cell(lenient)["passed"] == 1
    # the oracle knows the gold and acts without asking: under the stricter check it fails,
    # and the breach of calibration is reported (exit status 1)
    strict = run_t2t("bench", "--agent-lm", "oracle", "--require-clarification", "--store", str(store), "--json")
    assert strict.returncode == 1
    assert ambiguous_cell(strict)["failure_reasons"] == {"no_clarification": 1}
    general = [json.loads(line) for line in strict.stdout.splitlines() if '"condition": "general"' in line]
    assert general and all(cell["pass@1"] == 1.0 for cell in general)
