"""Every LM path end to end on a real model: SmolLM2-135M-Instruct served by llama.cpp
(tests/real_model.py). A recording proxy between t2t and the server sees every request, so
the tests compare what was sent with what the store recorded.

The model is weak and slow on two cores: runs are tiny (one item, one rollout of two turns,
one training example) and the assertions are those that must hold with any model.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from trajectory2task.store import TaskStore
from trajectory2task.store.failures import generation_items
from tests.cli import run_t2t
from tests.real_model import MODEL_NAME, LlamaServer, RecordingProxy, missing

WHY_NOT = missing()
if WHY_NOT and os.environ.get("CI"):
    raise RuntimeError(f"the real-model tests must run in CI: {WHY_NOT}")
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")

SLOW = 900  # seconds a command may take here: two shared cores, a model on CPU
KNOBS = ["--timeout", "600", "--retries", "0", "--max-tokens", "48"]
# llama-cpp-python's grammar sampling (schema-constrained decoding) costs ~1-2 s a token with
# SmolLM2's 49k vocabulary on two busy cores, against ~0.1 s without: the generate test shows
# the schema sent; bench and optimize run the text format to stay within minutes
TEXT = ["--structured", "off"]
ITEM_KINDS = {"explorer", "writer", "adapter"}


@pytest.fixture(scope="module")
def real_lm():
    # 8k, the model's trained window, which every generation prompt fits (benchmarks/bench_prompts.py)
    with LlamaServer(n_ctx=8192) as server:
        proxy = RecordingProxy(server.base_url)
        try:
            yield proxy
        finally:
            proxy.close()


@pytest.fixture(scope="module")
def offline_store(tmp_path_factory):
    """Verified tasks made by the offline baselines: the bench's and the optimizer's input."""
    path = tmp_path_factory.mktemp("real") / "t2t.duckdb"
    done = run_t2t("generate", "--n", "3", "--conditions", "general", "--store", str(path))
    assert done.returncode == 0, done.stderr
    return path


def _lm_calls(path, run_id):
    with TaskStore(path, read_only=True) as store:
        _, rows = store.query("SELECT role, prompt_tokens, completion_tokens, latency_s, error FROM lm_calls "
                              "WHERE run_id = ?", [run_id])
    return rows


def _run_id(stderr_or_stdout: str) -> str:
    found = re.search(r"\b[0-9a-f]{32}\b", stderr_or_stdout)  # in a line of text or in the --json summary
    if found:
        return found.group(0)
    raise AssertionError(f"no run id in: {stderr_or_stdout[-500:]}")


def test_generate_records_every_call_and_resume_redoes_failures(real_lm, tmp_path):
    path = tmp_path / "gen.duckdb"
    before = len(real_lm.chat_requests())
    done = run_t2t("generate", "--n", "1", "--users", "60", "--conditions", "general,infeasible", "--lm", MODEL_NAME,
                   "--api-base", real_lm.base_url, "--store", str(path), "--json", "--no-cache", *KNOBS,
                   timeout=SLOW)
    sent = real_lm.chat_requests()[before:]
    print("generate:", done.returncode, done.stdout[-600:], done.stderr[-1500:])
    assert done.returncode in (0, 1), done.stderr
    run_id = _run_id(done.stdout + done.stderr)
    calls = _lm_calls(path, run_id)
    # every request the server saw is one lm_calls row, with its latency; failed ones with a reason
    assert len(calls) == len(sent) > 0
    assert all(latency is not None and latency > 0 for _, _, _, latency, _ in calls)
    assert all(pt > 0 for _, pt, _, _, error in calls if error is None)
    assert {role for role, *_ in calls} <= ITEM_KINDS
    # constrained decoding was used, in llama.cpp's dialect, and the token limit reached it
    assert all(body.get("response_format", {}).get("type") == "json_object" and "schema" in body["response_format"]
               for body in sent)
    assert all(body.get("max_tokens") == 48 for body in sent)
    with TaskStore(path, read_only=True) as store:
        items = generation_items(store, run_id)
        assert [i.index for i in items] == [0]  # nothing lost
        item = items[0]
        if done.returncode == 1:  # nothing produced because of the LM: said, one line each
            assert item.status == "failed" and "t2t: error:" in done.stderr
    print("item:", item.model_dump())
    if item.status == "failed" and item.reason == "lm_error":
        again = run_t2t("generate", "--resume", run_id, "--retry-failed", "--lm", MODEL_NAME, "--api-base",
                        real_lm.base_url, "--store", str(path), "--json", "--no-cache", *KNOBS, timeout=SLOW)
        assert again.returncode in (0, 1), again.stderr
        with TaskStore(path, read_only=True) as store:
            assert [i.index for i in generation_items(store, run_id)] == [0]  # redone, not duplicated
        assert len(_lm_calls(path, run_id)) > len(calls)


def test_bench_agent_and_user_on_the_model(real_lm, offline_store):
    before = len(real_lm.chat_requests())
    one_task = ("task_id = (SELECT min(task_id) FROM tasks_latest WHERE verified AND condition = 'general')")
    done = run_t2t("bench", "--agent-lm", MODEL_NAME, "--user-lm", MODEL_NAME, "--function-calling",
                   "--api-base", real_lm.base_url, "--tasks", one_task, "--max-turns", "1", "--store",
                   str(offline_store), "--json", *KNOBS, "--structured", "user=on", timeout=SLOW)
    sent = real_lm.chat_requests()[before:]
    print("bench:", done.returncode, done.stdout[-800:], done.stderr[-1500:])
    assert done.returncode in (0, 1), done.stderr
    run_id = _run_id(done.stderr)
    calls = _lm_calls(offline_store, run_id)
    assert len(calls) == len(sent) > 0 and {r for r, *_ in calls} <= {"agent", "user"}
    # the user's messages are schema-constrained (48 tokens of free text truncate and do not parse)
    user_requests = [b for b in sent if "tools" not in b]
    assert user_requests and all("schema" in b.get("response_format", {}) for b in user_requests)
    agent_requests = [b for b in sent if "tools" in b]
    assert all(b.get("tool_choice") == "auto" for b in agent_requests)
    # assistant tool-call messages always carry content (llama.cpp's template needs it)
    assert all(m.get("content") is not None for b in agent_requests for m in b["messages"])
    with TaskStore(offline_store, read_only=True) as store:
        _, rollouts = store.query("SELECT termination, error, pass, reasons FROM rollouts_latest WHERE run_id = ?",
                                  [run_id])
    assert len(rollouts) == 1
    termination, error, passed, reasons = rollouts[0]
    print("rollout:", termination, error, passed, reasons, "agent requests:", len(agent_requests))
    if not (error or "").startswith("user simulator"):
        assert agent_requests  # the user opened: the agent had its turn, with native tools
    if termination == "lm_error":  # classified: whose failure, and why
        assert error.split(":")[0] in ("agent", "user simulator", "transport")
        if error.startswith(("user simulator", "transport")):
            assert list(reasons) == ["lm_error"]  # never the agent's wrong end state


def test_optimize_one_example(real_lm, offline_store):
    before = len(real_lm.chat_requests())
    one_task = "task_id = (SELECT min(task_id) FROM tasks_latest WHERE verified AND condition = 'general')"
    done = run_t2t("optimize", "--program", "writer", "--optimizer", "bootstrap", "--trainset", one_task,
                   "--max-demos", "1", "--lm", MODEL_NAME, "--api-base", real_lm.base_url, "--store",
                   str(offline_store), "--json", "--no-cache", *KNOBS, *TEXT, timeout=SLOW)
    sent = real_lm.chat_requests()[before:]
    print("optimize:", done.returncode, done.stdout[-600:], done.stderr[-1500:])
    assert done.returncode in (0, 2), done.stderr
    if done.returncode == 2:
        assert done.stderr.startswith("t2t: error:") and done.stderr.strip().count("\n") == 0
    with TaskStore(offline_store, read_only=True) as store:
        _, [(run_id,)] = store.query("SELECT run_id FROM runs WHERE kind = 'optimize' ORDER BY started_at DESC "
                                     "LIMIT 1")
    assert len(_lm_calls(offline_store, run_id)) == len(sent) > 0
    if done.returncode == 0:
        print("compiled:", json.loads(done.stdout.strip().splitlines()[-1]))
