"""The LM writer's re-ask shows the model what was wrong with its last answer."""

from __future__ import annotations

import dspy
from dspy.utils import DummyLM

from trajectory2task.programs.generation.exploration import BaselineExplorer
from trajectory2task.programs.generation.writer import TaskWriter
from trajectory2task.programs.generation.writing import BaselineWriter


def test_a_reask_carries_the_missing_facts_and_the_parse_error(retail):
    env = retail.environment(retail.generate_db(3, 80))
    trajectory = next(t for t in (BaselineExplorer().explore(env, s).trajectory for s in range(30)) if t is not None)
    good = BaselineWriter().write(trajectory, env).task
    assert good is not None
    vague = good.scenario.model_copy(update={"reason_for_call": "You want some help with your account.",
                                             "known_info": None})
    unreadable = {"scenario": "not a json object", "communicate_info": "[]", "claims": "[]"}
    answers = [
        unreadable, unreadable,  # DSPy's ChatAdapter tries its JSON fallback within the same ask
        {"scenario": vague.model_dump_json(), "communicate_info": "[]", "claims": "[]"},
        {"scenario": good.scenario.model_dump_json(), "communicate_info": "[]", "claims": "[]"},
    ]
    lm = DummyLM(answers)
    with dspy.context(lm=lm):
        result = TaskWriter(attempts=3).write(trajectory, env)
    assert result.task is not None, result.rejected_reason
    prompts = [call["messages"][-1]["content"] for call in lm.history]
    assert len(prompts) == 4
    assert not any("could not be read" in p or "did not state" in p for p in prompts[:2])
    assert "could not be read" in prompts[2] and "did not state" not in prompts[2]
    assert "did not state these required facts" in prompts[3]
