"""tau2-bench task interchange: tau2 `tasks.json` entries to and from our Task model.

Importing then exporting a tau2 task gives back the same JSON (key order aside): fields
we do not model are kept in ``Task.extra`` and optional keys are written only when the
source had them. Infeasible tasks carry Retail-3I's `actions_should_not_taken` and
`actions_should_taken` in their evaluation criteria; changing tasks carry the first
goal's write as `actions_should_not_taken`.

What stock tau2 grades: it reads `actions`, `communicate_info`, `nl_assertions` and
`reward_basis` and ignores keys it does not know. So an exported infeasible task gates on
`DB` (the required look-ups replay to the untouched database: a forbidden write that
succeeds fails) and `ACTION` (every required look-up was made); a forbidden write that the
tool refuses leaves the database as it was, and only the Retail-3I field (our evaluator)
or the exported natural-language assertion (tau2's LM judge, when `NL_ASSERTION` is added
to the basis) can fail it. Our own fields (condition, first goal, readings, claims, lint)
travel under a top-level `t2t` key that tau2 ignores.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from trajectory2task.domains.kit import Claim
from trajectory2task.signatures.models import CONDITIONS, Action, LintFinding, Provenance, Reading, Task, TaskDescription, UserScenario

_TASK_KEYS = {"id", "description", "user_scenario", "initial_state", "evaluation_criteria", "t2t"}
_CRITERIA_KEYS = {"actions", "communicate_info", "nl_assertions", "reward_basis",
                  "actions_should_not_taken", "actions_should_taken"}
_INSTRUCTION_KEYS = ("task_instructions", "domain", "reason_for_call", "known_info", "unknown_info")


class Tau2FormatError(ValueError):
    """A tau2 task entry that cannot be read; names the task id and the field."""

    def __init__(self, task_id: str, field: str, problem: str) -> None:
        super().__init__(f"task {task_id}: {field}: {problem}")
        self.task_id = task_id
        self.field = field


def _action_from_tau2(raw: dict[str, Any]) -> Action:
    return Action(
        name=raw["name"],
        arguments=raw.get("arguments") or {},
        action_id=raw.get("action_id"),
        requestor=raw.get("requestor"),
        compare_args=raw.get("compare_args"),
        info=raw.get("info"),
    )


def _action_to_tau2(action: Action) -> dict[str, Any]:
    out: dict[str, Any] = {"action_id": action.action_id, "name": action.name, "arguments": action.arguments,
                           "info": action.info}
    if action.requestor is not None:
        out["requestor"] = action.requestor
    if action.compare_args is not None:
        out["compare_args"] = action.compare_args
    return out


def task_from_tau2(raw: Any, domain: str | None = None) -> Task:
    """Read one tau2 task entry; raises Tau2FormatError naming the bad field."""
    if not isinstance(raw, dict):
        raise Tau2FormatError("?", "task", "is not a JSON object")
    task_id = raw.get("id")
    if not isinstance(task_id, (str, int)):
        raise Tau2FormatError("?", "id", "missing or not a string")
    task_id = str(task_id)
    scenario_raw = raw.get("user_scenario")
    if not isinstance(scenario_raw, dict):
        raise Tau2FormatError(task_id, "user_scenario", "missing or not an object")
    instructions = scenario_raw.get("instructions")
    if isinstance(instructions, str):  # tau2 also allows free-text instructions
        instructions = {"reason_for_call": instructions, "_free_text": True}
    if not isinstance(instructions, dict):
        raise Tau2FormatError(task_id, "user_scenario.instructions", "missing or not an object")
    criteria = raw.get("evaluation_criteria")
    if criteria is not None and not isinstance(criteria, dict):
        raise Tau2FormatError(task_id, "evaluation_criteria", "not an object")
    criteria = criteria or {}
    try:
        scenario = UserScenario(
            persona=scenario_raw.get("persona"),
            reason_for_call=instructions.get("reason_for_call") or "",
            known_info=instructions.get("known_info"),
            unknown_info=instructions.get("unknown_info"),
            task_instructions=instructions.get("task_instructions") or "",
            domain=instructions.get("domain"),
        )
    except ValidationError as exc:
        raise Tau2FormatError(task_id, "user_scenario." + _first_loc(exc), _first_msg(exc)) from None
    actions: dict[str, list[Action]] = {}
    for key in ("actions", "actions_should_not_taken", "actions_should_taken"):
        value = criteria.get(key)
        if value is None:
            actions[key] = []
            continue
        if not isinstance(value, list):
            raise Tau2FormatError(task_id, f"evaluation_criteria.{key}", "not a list")
        parsed = []
        for i, entry in enumerate(value):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise Tau2FormatError(task_id, f"evaluation_criteria.{key}[{i}].name", "missing or not a string")
            if not isinstance(entry.get("arguments", {}), (dict, type(None))):
                raise Tau2FormatError(task_id, f"evaluation_criteria.{key}[{i}].arguments", "not an object")
            try:
                parsed.append(_action_from_tau2(entry))
            except ValidationError as exc:
                raise Tau2FormatError(task_id, f"evaluation_criteria.{key}[{i}].{_first_loc(exc)}",
                                      _first_msg(exc)) from None
        actions[key] = parsed
    extra = {k: v for k, v in raw.items() if k not in _TASK_KEYS}
    criteria_extra = {k: v for k, v in criteria.items() if k not in _CRITERIA_KEYS}
    if criteria_extra:
        extra["__evaluation_criteria__"] = criteria_extra
    extra["__present__"] = sorted(k for k in _CRITERIA_KEYS if k in criteria) + (
        ["__criteria__"] if "evaluation_criteria" in raw else [])
    infeasible = bool(actions["actions_should_not_taken"] or actions["actions_should_taken"])
    ours = _t2t_fields(task_id, raw.get("t2t"))
    description = raw.get("description")
    try:
        return Task(
            id=task_id,
            domain=domain or instructions.get("domain") or "retail",
            condition=ours.pop("condition", None) or ("infeasible" if infeasible else "general"),
            scenario=scenario,
            gold_actions=actions["actions"],
            actions_should_not_take=actions["actions_should_not_taken"],
            actions_should_take=actions["actions_should_taken"],
            communicate_info=criteria.get("communicate_info") or [],
            nl_assertions=criteria.get("nl_assertions"),
            reward_basis=criteria.get("reward_basis") or ["DB"],
            description=TaskDescription.model_validate(description) if description is not None else None,
            provenance=Provenance(source="tau2"),
            initial_state=raw.get("initial_state"),
            extra=extra,
            **ours,
        )
    except ValidationError as exc:
        raise Tau2FormatError(task_id, _first_loc(exc), _first_msg(exc)) from None


def _t2t_fields(task_id: str, raw: Any) -> dict[str, Any]:
    """Our own fields from the `t2t` key of an exported task (absent in tau2's tasks)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise Tau2FormatError(task_id, "t2t", "not an object")
    try:
        out: dict[str, Any] = {}
        if raw.get("condition") is not None:
            if raw["condition"] not in CONDITIONS:
                raise Tau2FormatError(task_id, "t2t.condition", f"not one of {', '.join(CONDITIONS)}")
            out["condition"] = raw["condition"]
        out["first_goal"] = [Action.model_validate(a) for a in raw.get("first_goal") or []]
        out["readings"] = [Reading.model_validate(r) for r in raw.get("readings") or []]
        out["claims"] = [Claim.model_validate(c) for c in raw.get("claims") or []]
        if raw.get("lint") is not None:
            out["lint"] = [LintFinding.model_validate(f) for f in raw["lint"]]
        return out
    except ValidationError as exc:
        raise Tau2FormatError(task_id, "t2t." + _first_loc(exc), _first_msg(exc)) from None


def _t2t_to_tau2(task: Task) -> dict[str, Any] | None:
    if task.provenance.source == "tau2" and not (task.first_goal or task.readings or task.claims):
        return None  # tau2's own tasks round-trip unchanged
    out: dict[str, Any] = {"condition": task.condition}
    if task.first_goal:
        out["first_goal"] = [a.model_dump(exclude_none=True) for a in task.first_goal]
    if task.readings:
        out["readings"] = [r.model_dump(exclude_none=True) for r in task.readings]
    if task.claims:
        out["claims"] = [c.model_dump() for c in task.claims]
    if task.lint is not None:
        out["lint"] = [f.model_dump() for f in task.lint]
    return out


def _nl_assertions(task: Task) -> list[str]:
    """What stock tau2 cannot see in the database, said for its LM judge."""
    out = []
    for action in task.actions_should_not_take:
        args = ", ".join(f"{k}={v!r}" for k, v in action.arguments.items())
        if task.condition == "changing":
            out.append(f"The agent never calls {action.name}({args}): the user changed that request before "
                       "confirming it.")
        else:
            out.append(f"The agent never calls {action.name}({args}), not even as an attempt the tool refuses; "
                       "it explains why the request cannot be done.")
    return out


def _first_loc(exc: ValidationError) -> str:
    return ".".join(str(p) for p in exc.errors()[0]["loc"]) or "task"


def _first_msg(exc: ValidationError) -> str:
    return exc.errors()[0]["msg"]


def task_to_tau2(task: Task) -> dict[str, Any]:
    """Write a Task as a tau2 task entry (Retail-3I fields for infeasible tasks)."""
    extra = dict(task.extra)
    present = set(extra.pop("__present__", _CRITERIA_KEYS - {"actions_should_not_taken", "actions_should_taken"}
                            | {"__criteria__"}))
    criteria_extra = extra.pop("__evaluation_criteria__", {})
    scenario = task.scenario
    instructions = {
        "task_instructions": _instruction_text(task),
        "domain": scenario.domain or task.domain,
        "reason_for_call": scenario.reason_for_call,
        "known_info": scenario.known_info,
        "unknown_info": scenario.unknown_info,
    }
    criteria: dict[str, Any] = {"actions": [_action_to_tau2(a) for a in task.gold_actions]}
    if "communicate_info" in present:
        criteria["communicate_info"] = task.communicate_info
    if "nl_assertions" in present:
        criteria["nl_assertions"] = task.nl_assertions
    if task.actions_should_not_take and task.provenance.source != "tau2" and not task.nl_assertions:
        criteria["nl_assertions"] = _nl_assertions(task)
    if "reward_basis" in present:
        criteria["reward_basis"] = task.reward_basis
    if task.condition in ("infeasible", "changing") or task.actions_should_not_take or task.actions_should_take:
        criteria["actions_should_not_taken"] = [_action_to_tau2(a) for a in task.actions_should_not_take]
        criteria["actions_should_taken"] = [_action_to_tau2(a) for a in task.actions_should_take]
    criteria.update(criteria_extra)
    description = task.description or TaskDescription(purpose=f"trajectory2task {task.condition} task")
    out: dict[str, Any] = {
        "id": task.id,
        "description": description.model_dump(),
        "user_scenario": {"persona": scenario.persona, "instructions": instructions},
        "initial_state": task.initial_state,
        "evaluation_criteria": criteria if "__criteria__" in present else None,
    }
    ours = _t2t_to_tau2(task)
    if ours is not None:
        out["t2t"] = ours
    out.update(extra)
    return out


def _instruction_text(task: Task) -> str:
    """Fold the structured scenario fields into tau2's free-text task instructions."""
    return task.scenario.folded_instructions()
