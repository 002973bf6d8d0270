"""TRL's GRPO trainer on our tasks (`trajectory2task.programs.rl.trl_env`): the tool schemas TRL
reads, the oracle scoring 1 and do-nothing 0 through the environment class on retail and
airline tasks of every condition, and a few GRPO steps on CPU with a tiny model whose logged
rewards are the verdicts the environments gave."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

pytest.importorskip("trl", reason="the rl extra is not installed: pip install 'trajectory2task[rl]'")

from trajectory2task.programs.loop.agent import DoNothingAgent, OracleAgent  # noqa: E402
from trajectory2task.programs.loop.domain_env import load_environment  # noqa: E402
from trajectory2task.programs.rl.trl_env import (MESSAGE_RULE, SEND_MESSAGE, TRLTaskEnv, tool_schemas,  # noqa: E402
                                                 trl_dataset, trl_environment)
from trajectory2task.signatures.models import Message, Task  # noqa: E402
from tests.rl_cases import DOMAINS, drive, offline_tasks  # noqa: E402
from tests.tiny_model import tiny_model  # noqa: E402

ENDED = "(The conversation has ended.)"


def play_trl(env: TRLTaskEnv, session: Any, task: Task) -> float:
    """Play an agent session through the TRL environment's own methods, as TRL's tool loop calls them."""
    opening = env.reset(prompt=[], task_id=task.id)

    def act(reply):
        if reply.tool_calls:
            call = reply.tool_calls[0]
            text = getattr(env, call.name)(**call.arguments)
            return [Message(role="tool", content=text)], text.endswith(ENDED)
        text = getattr(env, SEND_MESSAGE)(message=reply.content)
        return [Message(role="user", content=text)], text.endswith(ENDED)

    drive(session, opening, act)
    return env.get_reward()


@pytest.mark.parametrize("domain", DOMAINS)
def test_tools_are_the_domains_as_trl_reads_them(domain):
    environment = load_environment(domain)
    env_class = trl_environment(environment, offline_tasks(domain))
    schemas = {s["function"]["name"]: s["function"] for s in tool_schemas(env_class)}
    assert set(schemas) == set(environment.tools) | {SEND_MESSAGE}
    for spec in environment.tools.values():
        ours = spec.openai_schema()["function"]["parameters"]
        theirs = schemas[spec.name]["parameters"]
        assert set(theirs["properties"]) == set(ours.get("properties", {}))
        assert set(theirs.get("required", [])) == set(ours.get("required", []))
        for name, prop in ours.get("properties", {}).items():
            if "enum" in prop:
                assert theirs["properties"][name]["enum"] == prop["enum"]
            elif prop.get("type") in ("string", "integer", "number", "boolean", "array"):
                assert theirs["properties"][name]["type"] == prop["type"], (spec.name, name)
        assert schemas[spec.name]["description"].split()[:4] == spec.description.split()[:4]
    rows = trl_dataset(env_class)
    assert [r["task_id"] for r in rows] == [t.id for t in offline_tasks(domain)]
    assert rows[0]["prompt"][0]["content"].endswith(MESSAGE_RULE) and environment.policy[:200] in rows[0]["prompt"][0]["content"]


@pytest.mark.parametrize("domain", DOMAINS)
def test_oracle_scores_1_and_do_nothing_0_through_the_trl_environment(domain):
    environment = load_environment(domain)
    tasks = offline_tasks(domain)
    env = trl_environment(environment, tasks)()
    for task in tasks:
        assert play_trl(env, OracleAgent(environment).session(task), task) == 1.0, (task.id, env.verdict)
        assert env.verdict.passed
        assert play_trl(env, DoNothingAgent(environment).session(task), task) == 0.0, task.id
        assert env.verdict.reasons  # the failure reason is kept
    with pytest.raises(ValueError, match="task_id"):
        env.reset(prompt=[])


def test_a_few_grpo_steps_on_cpu_get_the_verdicts_as_rewards(tmp_path, monkeypatch):
    """A tiny random model cannot solve a real task, so the set mixes one with a trivial task
    (no gold action: any agent that changes nothing passes): the rewards vary, and each step's
    logged mean must be the mean of the verdicts the environments gave that step."""
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    environment = load_environment("retail")
    real = offline_tasks("retail")[0]
    trivial = real.model_copy(update={"id": "trivial", "gold_actions": [], "actions_should_take": [],
                                      "actions_should_not_take": [], "communicate_info": [],
                                      "reward_basis": ["DB"], "condition": "general"})
    base = trl_environment(environment, [real, trivial])
    given: list[tuple[str, float]] = []

    class Recorded(base):  # type: ignore[valid-type,misc]
        def get_reward(self) -> float:
            reward = super().get_reward()
            given.append((self.episode.task.id, reward))
            return reward

    rows = trl_dataset(base, [real.id, trivial.id, real.id, trivial.id])
    texts = [json.dumps(s) for s in tool_schemas(base)] + [rows[0]["prompt"][0]["content"]]
    directory = tiny_model(tmp_path / "tiny", texts)
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    tokenizer.chat_template = (resources.files("trl") / "chat_templates" / "qwen2_5.jinja").read_text()
    model = AutoModelForCausalLM.from_pretrained(str(directory))
    args = GRPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True, max_steps=2, per_device_train_batch_size=4,
                      num_generations=2, max_completion_length=16, logging_steps=1, report_to="none",
                      save_strategy="no", learning_rate=1e-4, bf16=False, seed=0)
    trainer = GRPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                          environment_factory=Recorded)
    trainer.train()
    logged = [h for h in trainer.state.log_history if f"rewards/{Recorded.__name__}/mean" in h]
    assert len(logged) == 2 and len(given) == 2 * 4
    for step, entry in enumerate(logged):
        rewards = [r for _, r in given[4 * step:4 * step + 4]]
        assert entry[f"rewards/{Recorded.__name__}/mean"] == pytest.approx(sum(rewards) / 4)
        assert entry["reward"] == pytest.approx(sum(rewards) / 4)
    assert {r for t, r in given if t == real.id} == {0.0}
    assert 1.0 in {r for t, r in given if t == "trivial"}
