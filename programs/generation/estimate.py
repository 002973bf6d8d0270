"""What a generation run will send to its LMs, measured before any call is made.

The prompts are the real ones: the offline baselines explore a sample of the run's own items
(the same seeds), and for each LM call the LM programs would make on such an item the role's
DSPy adapter renders the messages (``adapter.format`` on the role's signature with those
inputs); a tokenizer counts them. Completion tokens are counted on the baselines' answers
rendered as the role's output fields. Nothing here calls a model.

Calls per item: the explorer proposes once per step of the trajectory (the sample's mean), the
writer once, the adaptation (role ``adapter``) once per adapted condition. The upper bound adds the programs'
re-asks: every explorer proposal up to its step limit, each asked ``parse_attempts`` times,
the writer's and the adaptation's attempts, and, with ``structured off``, DSPy's one JSON re-ask
of a text reply that does not parse. Retries of failing calls (``--retries``) come on top.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import dspy

from trajectory2task.domains import Environment
from trajectory2task.programs.generation.adaptation import IntentAdaptation
from trajectory2task.programs.generation.adapting import BaselineAdaptation, WordingRequest, adaptation_steps, worded
from trajectory2task.programs.generation.exploration import BaselineExplorer
from trajectory2task.programs.generation.explorer import Explorer
from trajectory2task.programs.generation.grounding import lm_kit
from trajectory2task.programs.generation.pipeline import condition_seed, item_seed
from trajectory2task.programs.generation.prompting import compact_tools, shown_steps
from trajectory2task.programs.generation.writer import TaskWriter
from trajectory2task.programs.generation.writing import BaselineWriter
from trajectory2task.programs.lm.estimate import RolePrompts, RunEstimate, adapter_for
from trajectory2task.programs.lm.tokens import Tokenizer
from trajectory2task.signatures.adaptation import AdaptAmbiguous, AdaptChanging, AdaptInfeasible
from trajectory2task.signatures.generation import exploration_signature

ADAPT_SIGNATURES = {"ambiguous": AdaptAmbiguous, "changing": AdaptChanging, "infeasible": AdaptInfeasible}


def _answer_tokens(count: Tokenizer, answer: dict[str, Any]) -> int:
    text = json.dumps(answer, ensure_ascii=False, default=lambda v: v.model_dump(mode="json"))
    return count([{"role": "assistant", "content": text}])


def estimate_run(env: Environment[Any], *, items: int, run_seed: int, conditions: Sequence[str],
                 tokenizer: Callable[[str], Tokenizer], structured: dict[str, str] | None = None, sample: int = 5,
                 models: dict[str, str] | None = None) -> RunEstimate:
    """Render every prompt the LM programs would send on the first ``sample`` items of the run;
    ``tokenizer(role)`` counts a role's messages."""
    structured = structured or {}
    counts = {role: tokenizer(role) for role in ("explorer", "writer", "adapter")}
    explorer, writer, adaptation = Explorer(), TaskWriter(), IntentAdaptation()
    kit = lm_kit(env)
    adapted = [c for c in conditions if c != "general"]
    text_reask = {role: 2 if structured.get(role, "auto") == "off" else 1 for role in ("explorer", "writer", "adapter")}
    roles = {
        "explorer": RolePrompts(role="explorer", calls_per_item=0.0,
                                max_calls_per_item=explorer.max_steps * explorer.parse_attempts
                                * text_reask["explorer"]),
        "writer": RolePrompts(role="writer", calls_per_item=0.0,
                              max_calls_per_item=writer.attempts * text_reask["writer"]),
        "adapter": RolePrompts(role="adapter", calls_per_item=0.0,
                               max_calls_per_item=adaptation.attempts * len(adapted) * text_reask["adapter"]),
    }
    formats = {role: adapter_for(structured.get(role, "auto")) for role in roles}
    signature = exploration_signature(explorer.propose.signature, tuple(env.tools))
    tools = compact_tools(env)
    sampled = min(sample, items)
    planned = {role: 0 for role in roles}
    for index in range(sampled):
        seed = item_seed(run_seed, index)
        explored = BaselineExplorer().explore(env, seed)
        trajectory = explored.trajectory
        if trajectory is None:
            continue
        steps = trajectory.steps
        whole = trajectory.steps
        seed_entity, instruction = _lm_start(env, kit, explorer, seed)
        # the explorer: one proposal per step (up to its step limit), each shown the steps before it
        steps = steps[:explorer.max_steps]
        for position, step in enumerate(steps):
            inputs = dict(domain_summary=env.domain.summary, policy=env.policy, tools=tools,
                          seed_entity=seed_entity, exploration_goal=instruction,
                          trajectory=shown_steps(steps[:position]), previous_error="")
            count = counts["explorer"]
            roles["explorer"].prompt_tokens.append(count(formats["explorer"].format(signature, [], inputs)))
            roles["explorer"].completion_tokens.append(_answer_tokens(count, {"tool_call": step.call.model_dump(
                include={"name", "arguments"})}))
        planned["explorer"] += len(steps)
        written = BaselineWriter().write(trajectory, env)
        facts = kit.describe(env, whole, trajectory.seed_entity)
        inputs = dict(trajectory=shown_steps(whole), required_facts=[f.prompt_line() for f in facts.all_facts()],
                      previous_error="")
        count = counts["writer"]
        roles["writer"].prompt_tokens.append(count(formats["writer"].format(writer.write_task.signature, [], inputs)))
        if written.task is not None:
            roles["writer"].completion_tokens.append(_answer_tokens(count, {
                "scenario": written.task.scenario, "communicate_info": written.task.communicate_info,
                "claims": written.task.claims}))
        planned["writer"] += 1
        if written.task is None:
            continue
        for condition in adapted:
            request = _first_request(adaptation_steps(written.task, trajectory, condition, env, condition_seed(seed, condition)))
            if request is None:  # no candidates: the LM adaptation would not be asked either
                continue
            shown = (IntentAdaptation._shown_candidates(request.facts) if condition == "infeasible" else request.facts)
            prompt = formats["adapter"].format(ADAPT_SIGNATURES[condition], [], IntentAdaptation._inputs(request.ctx,
                                                                                                    shown))
            roles["adapter"].prompt_tokens.append(counts["adapter"](prompt))
            words = worded(BaselineAdaptation(), request)
            roles["adapter"].completion_tokens.append(_answer_tokens(counts["adapter"], {"words": list(words)}))
            planned["adapter"] += 1
    for role, calls in planned.items():
        roles[role].calls_per_item = calls / sampled if sampled else 0.0
    return RunEstimate(units=items, sampled=sampled, roles=list(roles.values()), models=models or {})


def _first_request(steps: Any) -> WordingRequest | None:
    """The wording request an adaptation makes (None when it stops before asking)."""
    try:
        request = next(steps)
    except StopIteration:
        return None
    steps.close()
    return request if isinstance(request, WordingRequest) else None


def _lm_start(env: Environment[Any], kit: Any, explorer: Explorer, seed: int) -> tuple[str, str]:
    """The seed entity's description and the goal the LM explorer gets for this seed (its own
    draw: it plans fewer writes than the baseline)."""
    import random

    from trajectory2task.programs.generation.exploration import Walk, exploration_goal, plan_walk

    target, _, start = plan_walk(env, kit, Walk(env, kit), random.Random(seed), explorer.max_writes, None)
    return start.description, exploration_goal(target)
