"""Metrics for the generation programs, computed from verdicts and code checks only.

Nothing here asks an LM for its opinion. Each score is built from the verifier's verdicts
(`trajectory2task.programs.verification.verifier.Verifier`), replays on the domain's environment, and string checks of
a conversation against the task's own fields.

- explorer: valid x novel. A trajectory is valid when every call ran without error, it
  holds at least one write, and replaying its calls on a fresh episode gives the same
  observations and end state. Its novelty is half "its tool sequence is new" and half
  "the share of its entities (ids, emails in the arguments) not seen before", against a
  reference set that grows as trajectories are scored: a batch that repeats itself is
  not novel.
- writer and adapter: a task counts when it passes static verification, a closed-loop
  rollout with a reference agent passes (the oracle agent with the scripted user; gold
  replay as a fallback), and its condition checks hold (an ambiguous task whose opening
  gives the withheld details away, or that an agent not knowing the gold solved without
  the user giving any withheld detail, counts against it).
- closed loop (bench and the agent): pass@1, the mean over tasks of c/n (n trials of a
  task, c of them passed), and pass^k (tau-bench), the chance that k trials drawn without
  replacement from a task's n all pass, C(c, k) / C(n, k), averaged over the tasks with
  n >= k.
- user simulator: fidelity to the scenario: the opening message keeps the withheld
  details back, a changing user states the revised request after the opening and before
  the agent acts, and the conversation ends with the user's stop signal (not the turn
  limit), not before the goal was met.

The `Score` functions are plain Python; `DSPyMetric` turns one into the
`(example, prediction, trace=None, pred_name=None, pred_trace=None)` callable that
BootstrapFewShot, MIPROv2 and GEPA all accept: a float normally, 1.0/0.0 (full pass or
not) while an optimizer bootstraps demos (`trace` given), and a `dspy.Prediction(score,
feedback)` for GEPA when built with `feedback=True`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from math import comb
from typing import Any

from pydantic import BaseModel, Field

from trajectory2task.domains import Environment
from trajectory2task.programs.verification.verifier import Verifier, clarified, execute_calls, first_write_index, reveals
from trajectory2task.signatures.models import Message, Rollout, Task, Trajectory, Verdict


class Score(BaseModel):
    """A metric value in [0, 1] and the reasons behind it (GEPA reads the feedback)."""

    value: float
    feedback: str = ""

    @property
    def perfect(self) -> bool:
        return self.value >= 1.0 - 1e-9


def mean_score(scores: Sequence[Score], empty_feedback: str = "nothing to score") -> Score:
    if not scores:
        return Score(value=0.0, feedback=empty_feedback)
    problems = [s.feedback for s in scores if s.feedback and not s.perfect]
    return Score(value=sum(s.value for s in scores) / len(scores), feedback="\n".join(problems))


# ============================================================================ explorer

# An argument value names an entity when it is one token (an id, an email, a code); free
# text such as a reason or a street has spaces. Domain-general: no argument names needed.
_ENTITY_VALUE = re.compile(r"^\S{2,}$")


def tool_sequence(trajectory: Trajectory) -> tuple[str, ...]:
    return tuple(step.call.name for step in trajectory.steps)


def trajectory_entities(trajectory: Trajectory) -> set[str]:
    """The database entities a trajectory touched: its one-token string arguments."""
    found: set[str] = set()
    for step in trajectory.steps:
        for value in step.call.arguments.values():
            values = value if isinstance(value, list) else [value]
            found.update(v for v in values if isinstance(v, str) and _ENTITY_VALUE.match(v))
    return found


class NoveltyReference(BaseModel):
    """What has been explored already: tool sequences and entities."""

    tool_sequences: set[tuple[str, ...]] = Field(default_factory=set)
    entities: set[str] = Field(default_factory=set)

    @classmethod
    def from_trajectories(cls, trajectories: Iterable[Trajectory]) -> NoveltyReference:
        reference = cls()
        for trajectory in trajectories:
            reference.add(trajectory)
        return reference

    def add(self, trajectory: Trajectory) -> None:
        self.tool_sequences.add(tool_sequence(trajectory))
        self.entities |= trajectory_entities(trajectory)


def trajectory_problems(environment: Environment[Any], trajectory: Trajectory) -> list[str]:
    """Why a trajectory is not valid (empty list: valid). Replays it on a fresh episode."""
    if not trajectory.steps:
        return ["the trajectory has no steps"]
    problems = []
    if trajectory.initial_state_hash and trajectory.initial_state_hash != environment.initial_hash():
        return ["the trajectory was explored on a different database"]
    failed = [i for i, s in enumerate(trajectory.steps) if s.error]
    if failed:
        problems.append(f"steps {failed} are errors; a valid trajectory keeps successful calls only")
    unknown = sorted({s.call.name for s in trajectory.steps if s.call.name not in environment.tools})
    if unknown:
        return problems + [f"unknown tool(s) {unknown}"]
    if not any(environment.tools[s.call.name].kind == "write" for s in trajectory.steps):
        problems.append("the trajectory makes no write")
    episode = environment.episode()
    replayed = execute_calls(episode, [s.call for s in trajectory.steps])
    differing = [i for i, (a, b) in enumerate(zip(trajectory.steps, replayed))
                 if a.observation != b.observation or a.error != b.error]
    if differing:
        problems.append(f"replay gives different observations at steps {differing}")
    if trajectory.end_state_hash != episode.state_hash():
        problems.append("replay does not reach the trajectory's end state")
    return problems


class TrajectoryCheck(BaseModel):
    """Validity and novelty of one trajectory."""

    problems: list[str] = Field(default_factory=list)
    sequence_new: bool = False
    entity_share: float = 0.0

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def novelty(self) -> float:
        return 0.5 * self.sequence_new + 0.5 * self.entity_share

    def score(self) -> Score:
        if not self.valid:
            return Score(value=0.0, feedback="invalid trajectory: " + "; ".join(self.problems))
        hints = []
        if not self.sequence_new:
            hints.append("its tool sequence was explored before")
        if self.entity_share < 1.0:
            hints.append(f"only {self.entity_share:.0%} of its entities are new")
        feedback = f"valid, novelty {self.novelty:.2f}: " + ", ".join(hints) if hints else ""
        return Score(value=self.novelty, feedback=feedback)


def check_trajectory(environment: Environment[Any], trajectory: Trajectory | None,
                     reference: NoveltyReference, remember: bool = True) -> TrajectoryCheck:
    """Validity and novelty against `reference`; a valid trajectory joins the reference
    when `remember` (so scoring a batch in order penalises repeats)."""
    if trajectory is None:
        return TrajectoryCheck(problems=["no trajectory was produced"])
    problems = trajectory_problems(environment, trajectory)
    if problems:
        return TrajectoryCheck(problems=problems)
    entities = trajectory_entities(trajectory)
    check = TrajectoryCheck(sequence_new=tool_sequence(trajectory) not in reference.tool_sequences,
                            entity_share=len(entities - reference.entities) / len(entities) if entities else 0.0)
    if remember:
        reference.add(trajectory)
    return check


def score_trajectory(environment: Environment[Any], trajectory: Trajectory | None,
                     reference: NoveltyReference, remember: bool = True) -> Score:
    """valid (0/1) x novelty against `reference` (see check_trajectory)."""
    return check_trajectory(environment, trajectory, reference, remember).score()


def score_trajectories(environment: Environment[Any], trajectories: Sequence[Trajectory | None],
                       reference: NoveltyReference | None = None) -> Score:
    """valid-trajectory rate x mean novelty of the valid ones (novelty counted in order,
    against a copy of `reference`)."""
    if not trajectories:
        return Score(value=0.0, feedback="no trajectories")
    reference = reference.model_copy(deep=True) if reference is not None else NoveltyReference()
    checks = [check_trajectory(environment, t, reference) for t in trajectories]
    valid = [c for c in checks if c.valid]
    rate = len(valid) / len(checks)
    novelty = sum(c.novelty for c in valid) / len(valid) if valid else 0.0
    return Score(value=rate * novelty, feedback=mean_score([c.score() for c in checks]).feedback)


# ============================================================================ tasks

# The offline reference: replay the task's gold actions as the agent's tool calls.
RolloutRunner = Callable[[Task], tuple[Rollout, Verdict]]


def gold_replay_runner(verifier: Verifier) -> RolloutRunner:
    """A reference 'rollout' that executes the gold actions and is judged like any other:
    the stand-in for an oracle agent when no closed-loop engine is given."""

    def run(task: Task) -> tuple[Rollout, Verdict]:
        episode = verifier.environment.episode()
        steps = execute_calls(episode, task.gold_actions)
        rollout = Rollout(id=f"{task.id}:gold-replay", task_id=task.id, agent_model="gold-replay", steps=steps,
                          end_state_hash=episode.state_hash(), termination="recorded")
        verdict = verifier.judge(task, steps, [], end_state_hash=rollout.end_state_hash, rollout_id=rollout.id)
        return rollout, verdict

    return run


def condition_problems(task: Task, rollout: Rollout | None = None, verdict: Verdict | None = None,
                       write_tools: set[str] | None = None, privileged_agent: bool = True) -> list[str]:
    """Code checks of a task's condition, on its fields and (when given) a reference rollout.

    `privileged_agent`: the reference agent knows the gold (the oracle, gold replay), so its
    acting without asking proves nothing about the task; the "solved without
    clarification" rule (no withheld detail given by the user before the agent's first
    write, yet the rollout passed) applies to rollouts of agents that do not know the gold.
    """
    problems: list[str] = []
    scenario = task.scenario
    if task.condition == "ambiguous":
        if not scenario.withheld_info:
            problems.append("ambiguous task withholds nothing (scenario.withheld_info is empty)")
        opening = scenario.reason_for_call
        leaked = [d for d in scenario.withheld_info if reveals(opening, d)]
        if leaked:
            problems.append(f"the opening request already reveals withheld detail(s): {leaked}")
        if verdict is not None and "no_clarification" in verdict.reasons:
            problems.append("the rollout verdict says the agent never asked for clarification")
        elif (rollout is not None and verdict is not None and verdict.passed and not privileged_agent
              and not clarified(task, rollout.messages, write_tools or set())):
            problems.append("the rollout succeeded without the user giving any withheld detail: "
                            "the task is not ambiguous")
    elif task.condition == "changing":
        if not scenario.change_trigger:
            problems.append("changing task does not say when the user changes course (change_trigger)")
        if not scenario.revised_request:
            problems.append("changing task has no revised_request")
        elif scenario.revised_request.strip().lower() == scenario.reason_for_call.strip().lower():
            problems.append("the revised request is the opening request")
    elif task.condition == "infeasible":
        if not task.actions_should_not_take:
            problems.append("infeasible task names no forbidden action")
        if not task.actions_should_take:
            problems.append("infeasible task names no action a correct agent takes")
    return problems


class TaskCheck(BaseModel):
    """Everything the writer/adapter metric found out about one task."""

    task_id: str
    condition: str
    static: Verdict
    rollout: Verdict | None = None
    condition_problems: list[str] = Field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.static.passed and (self.rollout is None or self.rollout.passed) and not self.condition_problems

    def feedback(self) -> str:
        if self.passed:
            return ""
        parts = []
        if not self.static.passed:
            parts.append(f"static verification failed ({', '.join(self.static.reasons)}): "
                         + "; ".join(self.static.details[:3]))
        if self.rollout is not None and not self.rollout.passed:
            parts.append(f"the reference rollout failed ({', '.join(self.rollout.reasons)}): "
                         + "; ".join(self.rollout.details[:3]))
        parts += self.condition_problems
        return f"task {self.task_id} ({self.condition}): " + " | ".join(parts)


def check_task(verifier: Verifier, task: Task, run_rollout: RolloutRunner | None = None,
               privileged_agent: bool = True) -> TaskCheck:
    """Static verification, then (if it passed) the reference rollout, then condition checks."""
    static = verifier.verify_task(task)
    rollout: Rollout | None = None
    rollout_verdict: Verdict | None = None
    if static.passed and run_rollout is not None:
        rollout, rollout_verdict = run_rollout(task)
    write_tools = {name for name, spec in verifier.environment.tools.items() if spec.kind == "write"}
    problems = condition_problems(task, rollout, rollout_verdict, write_tools, privileged_agent)
    return TaskCheck(task_id=task.id, condition=task.condition, static=static, rollout=rollout_verdict,
                     condition_problems=problems)


def score_tasks(verifier: Verifier, tasks: Sequence[Task | None], run_rollout: RolloutRunner | None = None,
                expected: int | None = None, privileged_agent: bool = True) -> Score:
    """Share of tasks that pass every check. `expected` is how many tasks the program was
    asked for: one it failed to produce (None, or missing) counts as a failure."""
    denominator = max(expected or 0, len(tasks))
    if denominator == 0:
        return Score(value=0.0, feedback="no task was produced")
    checks = [check_task(verifier, t, run_rollout, privileged_agent) for t in tasks if t is not None]
    missing = denominator - len(checks)
    feedback = [c.feedback() for c in checks if not c.passed]
    if missing:
        feedback.append(f"{missing} task(s) were not produced")
    return Score(value=sum(c.passed for c in checks) / denominator, feedback="\n".join(feedback))


# ============================================================================ user simulator


def user_messages(messages: Sequence[Message]) -> list[Message]:
    return [m for m in messages if m.role == "user"]


def user_fidelity(task: Task, messages: Sequence[Message], termination: str | None,
                  verdict: Verdict | None = None, write_tools: set[str] | None = None) -> Score:
    """How faithfully a simulated user played the task's scenario in one conversation.

    Checks (each worth the same):
    - ambiguous: the opening keeps every withheld detail back;
    - changing: the revised request is not in the opening, is stated later, and before the
      agent's first write (the stated point comes before the agent acts on the first goal);
    - the conversation ends with the user's stop signal (not the turn limit or an error),
      and, when a verdict of a rollout with a capable (reference) agent is given, not
      before the goal was met (infeasible goals cannot be met: stopping is right).
    """
    scenario = task.scenario
    said = [i for i, m in enumerate(messages) if m.role == "user"]
    checks: list[tuple[bool, str]] = []
    if not said:
        return Score(value=0.0, feedback="the user never spoke")
    opening = messages[said[0]].content or ""
    if task.condition == "ambiguous" and scenario.withheld_info:
        leaked = [d for d in scenario.withheld_info if reveals(opening, d)]
        checks.append((not leaked, f"the first message revealed withheld detail(s) {leaked} before being asked"))
    if task.condition == "changing" and scenario.revised_request:
        early = reveals(opening, scenario.revised_request)
        when = next((i for i in said[1:] if reveals(messages[i].content, scenario.revised_request)), None)
        first_write = first_write_index(messages, write_tools or set())
        checks.append((not early, "the revised request was stated in the opening message, not at the change point"))
        checks.append((when is not None, "the user never changed course to the revised request"))
        if when is not None and first_write is not None:
            checks.append((when < first_write, "the user changed course only after the agent had acted"))
    stopped = termination == "user_stop"
    checks.append((stopped, f"the conversation ended by {termination or 'nothing'}, not by the user's stop signal"))
    if stopped and verdict is not None and task.condition != "infeasible":
        checks.append((verdict.passed, "the user stopped before the goal was met "
                                       f"({', '.join(verdict.reasons) or 'rollout failed'})"))
    passed = sum(ok for ok, _ in checks)
    return Score(value=passed / len(checks), feedback="; ".join(msg for ok, msg in checks if not ok))


# ============================================================================ closed loop: pass@1, pass^k

ALL_CONDITIONS = "all"  # the cell over every condition


class RolloutRow(BaseModel):
    """One stored rollout with its verdict, as read back for scoring."""

    task_id: str
    condition: str | None
    agent_model: str
    trial: int
    passed: bool
    reasons: list[str] = Field(default_factory=list)
    # set when the rollout failed on the user simulator's or the LM transport's side: it says
    # nothing about the agent and is left out of its scores (counted in `not_scored`)
    not_agents: str | None = None


class CellScore(BaseModel):
    """Scores of one agent on one condition (or on all of them)."""

    agent_model: str
    condition: str
    tasks: int
    rollouts: int
    passed: int
    pass_at_1: float
    pass_hat_k: dict[int, float]  # k -> pass^k over the tasks with at least k trials
    failure_reasons: dict[str, int]  # reason -> failed rollouts carrying it
    not_scored: dict[str, int] = Field(default_factory=dict)  # 'user' / 'transport' -> rollouts left out

    def public(self) -> dict[str, Any]:
        return {"agent_model": self.agent_model, "condition": self.condition, "tasks": self.tasks,
                "rollouts": self.rollouts, "passed": self.passed, "pass@1": self.pass_at_1,
                "pass^k": {str(k): v for k, v in self.pass_hat_k.items()},
                "failure_reasons": self.failure_reasons, "not_scored": self.not_scored}




def pass_hat_k(n: int, c: int, k: int) -> float:
    """C(c, k) / C(n, k): the chance that k of the n trials, drawn without replacement, all pass."""
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"pass^k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    return comb(c, k) / comb(n, k)


def score_cells(rows: Iterable[RolloutRow], max_k: int) -> list[CellScore]:
    """Scores per (agent, condition) and per (agent, 'all'), sorted by agent then condition.
    Rollouts that failed on the user's or the transport's side are counted in `not_scored`
    only; a task none of whose rollouts is scored has no pass@1 (0 tasks in the cell)."""
    per_task: dict[tuple[str, str], dict[str, list[RolloutRow]]] = defaultdict(lambda: defaultdict(list))
    left_out: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        condition = row.condition or "unknown"
        for cell in ((row.agent_model, condition), (row.agent_model, ALL_CONDITIONS)):
            if row.not_agents:
                left_out[cell][row.not_agents] += 1
                per_task[cell]  # the cell exists even when nothing in it is scored
            else:
                per_task[cell][row.task_id].append(row)
    cells = []
    for (agent, condition), tasks in per_task.items():
        counts = [(len(trials), sum(r.passed for r in trials)) for trials in tasks.values()]
        hat = {}
        for k in range(1, max_k + 1):
            eligible = [pass_hat_k(n, c, k) for n, c in counts if n >= k]
            if eligible:
                hat[k] = sum(eligible) / len(eligible)
        reasons: dict[str, int] = defaultdict(int)
        for trials in tasks.values():
            for row in trials:
                if not row.passed:
                    for reason in row.reasons or ["unknown"]:
                        reasons[reason] += 1
        cells.append(CellScore(agent_model=agent, condition=condition, tasks=len(tasks),
                               rollouts=sum(n for n, _ in counts), passed=sum(c for _, c in counts),
                               pass_at_1=sum(c / n for n, c in counts) / len(counts) if counts else 0.0,
                               pass_hat_k=hat,
                               failure_reasons=dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
                               not_scored=dict(sorted(left_out[(agent, condition)].items()))))
    order = {c: i for i, c in enumerate(("general", "ambiguous", "changing", "infeasible"))}
    cells.sort(key=lambda c: (c.agent_model, c.condition == ALL_CONDITIONS, order.get(c.condition, 9), c.condition))
    return cells


# ============================================================================ DSPy adapter


class DSPyMetric:
    """A DSPy metric over a scoring function `score(example, prediction) -> Score`.

    Called as `metric(example, prediction, trace=None, pred_name=None, pred_trace=None)`:
    a float in [0, 1]; while bootstrapping demos (`trace` is not None) 1.0 when the score
    reaches `pass_threshold` (default: a full pass) and 0.0 otherwise, so that only good
    traces become demos; with `feedback=True`, a `dspy.Prediction(score=..., feedback=...)`
    as GEPA's reflection wants.
    """

    def __init__(self, score: Callable[[Any, Any], Score], feedback: bool = False, name: str | None = None,
                 pass_threshold: float = 1.0):
        self.score = score
        self.feedback = feedback
        self.pass_threshold = pass_threshold
        self.__name__ = name or getattr(score, "__name__", "metric")

    def with_feedback(self) -> DSPyMetric:
        return DSPyMetric(self.score, feedback=True, name=self.__name__, pass_threshold=self.pass_threshold)

    def __call__(self, example: Any, prediction: Any, trace: Any = None, pred_name: str | None = None,
                 pred_trace: Any = None) -> Any:
        result = self.score(example, prediction)
        if self.feedback:
            import dspy

            return dspy.Prediction(score=result.value, feedback=result.feedback or "all checks passed")
        if trace is not None:
            return 1.0 if result.value >= self.pass_threshold - 1e-9 else 0.0
        return result.value
