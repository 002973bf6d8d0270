"""Compiling the generation programs with DSPy optimizers, scored by `trajectory2task.optimize.metrics`.

`t2t optimize` builds its pieces here:

- a target per program kind (explorer, writer, adapter, user, agent): the DSPy module to tune,
  what the optimizer runs (the program with its environment bound; the user simulator and
  the agent inside an episode harness, `EpisodeUser` and `EpisodeAgent`), the examples built from store
  items, and the metric;
- `compile_program`: scores the module on the validation set, runs the optimizer
  (`dspy.BootstrapFewShot`, `dspy.MIPROv2` or `dspy.GEPA`), scores the result, and returns
  the compiled module's state (`dump_state()`: the instructions and demos of its
  predictors) with the scores and the optimizer's own trials.

Examples. Each kind learns from what the store already holds:

- explorer: trajectories (their seeds; a coverage goal's write as the target write);
- writer: the trajectories of the selected tasks (one example per trajectory);
- adapter: a selected adapted task gives (its parent general task, trajectory, condition,
  seed); a selected general task gives one example per adapted condition;
- user: the selected tasks (a conversation per task, played against the oracle agent);
- agent: the selected tasks that pass static verification (rollouts of the agent under
  optimization with the offline scripted user; the verifier's verdict is the metric).

The environment is held by `trajectory2task.programs.binding.Bound`, out of DSPy's deep copies
(optimizers copy programs many times; a database must not be copied with them) and out of
saved state; every program run returns a `dspy.Prediction` with the program's result.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import dspy
from pydantic import BaseModel, Field, model_validator

from trajectory2task.optimize.coverage import parse_goal
from trajectory2task.programs.binding import Bound
from trajectory2task.optimize.metrics import (
    DSPyMetric,
    NoveltyReference,
    RolloutRunner,
    Score,
    check_trajectory,
    gold_replay_runner,
    pass_hat_k,
    score_tasks,
    user_fidelity,
)
from trajectory2task.programs.loop.rollout import DEFAULT_MAX_TURNS
from trajectory2task.programs.verification.verifier import Verifier
from trajectory2task.signatures.models import CONDITIONS, Task, Trajectory
from trajectory2task.store.sqlcheck import FILTER_SLOT

if TYPE_CHECKING:
    from trajectory2task.domains import Environment
    from trajectory2task.store import TaskStore

ProgramKind = Literal["explorer", "writer", "adapter", "user", "agent"]
OptimizerName = Literal["bootstrap", "mipro", "gepa"]
PROGRAM_KINDS: tuple[str, ...] = ("explorer", "writer", "adapter", "user", "agent")
AGENT_METRICS: tuple[str, ...] = ("pass1", "pass^k")
OPTIMIZERS: tuple[str, ...] = ("bootstrap", "mipro", "gepa")
ADAPTED_CONDITIONS: tuple[str, ...] = tuple(c for c in CONDITIONS if c != "general")


class CompileError(ValueError):
    """A problem with the request (no examples, unknown kind...), said in one line."""


class OptimizerSettings(BaseModel):
    """Budgets of the optimizers (small by default: every metric call may run rollouts)."""

    max_bootstrapped_demos: int = Field(default=2, ge=0)
    max_labeled_demos: int = Field(default=0, ge=0)
    num_candidates: int = Field(default=4, ge=1)  # MIPROv2: instruction and demo-set candidates
    num_trials: int = Field(default=8, ge=1)  # MIPROv2: Bayesian-optimization trials
    max_metric_calls: int = Field(default=40, ge=1)  # GEPA budget
    reflection_minibatch_size: int = Field(default=3, ge=1)  # GEPA
    num_threads: int = Field(default=1, ge=1)
    seed: int = 0


class CompileResult(BaseModel):
    """What an optimizer run produced: the compiled module's state, scores, trials."""

    program: str
    optimizer: str
    state: dict[str, Any]
    score_before: float
    score_after: float
    trainset: int
    valset: int
    demos: int  # demos in the compiled state, all predictors together
    instructions_changed: list[str] = Field(default_factory=list)  # predictors whose instruction changed
    trials: list[dict[str, Any]] = Field(default_factory=list)  # Trial-shaped dicts


# ============================================================================ targets


class Target:
    """One program kind: its module, harness, examples and metric."""

    kind: str
    role: str
    selects: str = "tasks"  # what the trainset SQL selects: 'tasks' or 'trajectories'

    def __init__(self, env: Environment[Any], verifier: Verifier | None = None) -> None:
        self.env = env
        self.verifier = verifier or Verifier(env)

    def student(self) -> dspy.Module:
        raise NotImplementedError

    def harness(self, program: dspy.Module) -> dspy.Module:
        raise NotImplementedError

    def examples(self, store: TaskStore, ids: Sequence[str]) -> list[dspy.Example]:
        raise NotImplementedError

    def score(self, example: dspy.Example, prediction: Any) -> Score:
        raise NotImplementedError

    # the score a trace needs to become a demo while bootstrapping (see DSPyMetric)
    bootstrap_threshold: float = 1.0

    def metric(self) -> DSPyMetric:
        return DSPyMetric(self.score, name=f"{self.kind}_metric", pass_threshold=self.bootstrap_threshold)

    def finalize(self, program: dspy.Module) -> None:
        """Tidy the compiled program (the module under the harness) before it is scored and saved."""

    # ------------------------------------------------------------ helpers

    def _matching_db(self, hashes: Sequence[str | None]) -> bool:
        return all(h is None or h == self.env.initial_hash() for h in hashes)


def bind(program: dspy.Module, env: Environment[Any]) -> dspy.Module:
    """The explorer, writer and adapter hold their environment themselves (``env=`` at
    construction, kept out of saved state and copies): the optimizer runs the program as it is."""
    program.environment.value = env
    return program


def program_of(harness: dspy.Module) -> dspy.Module:
    """The program a harness runs (the user simulator's and the agent's), or the program itself."""
    return getattr(harness, "program", harness)


def _result(prediction: Any) -> Any:
    return getattr(prediction, "result", prediction)


class ExplorerTarget(Target):
    """valid x novel trajectories; novelty against the store's other trajectories."""

    kind = role = "explorer"
    selects = "trajectories"
    # a valid trajectory with a new tool sequence, or half of its entities new, is a good demo:
    # in a full store hardly any trajectory is new in every respect
    bootstrap_threshold = 0.5

    def __init__(self, env: Environment[Any], verifier: Verifier | None = None,
                 reference: NoveltyReference | None = None, max_steps: int = 12, max_writes: int = 2) -> None:
        super().__init__(env, verifier)
        self.reference = reference or NoveltyReference()
        self.max_steps = max_steps
        self.max_writes = max_writes

    def student(self) -> dspy.Module:
        from trajectory2task.programs.generation.explorer import Explorer

        return Explorer(max_steps=self.max_steps, max_writes=self.max_writes)

    def harness(self, program: dspy.Module) -> dspy.Module:
        return bind(program, self.env)

    def examples(self, store: TaskStore, ids: Sequence[str]) -> list[dspy.Example]:
        trajectories = _trajectories(store, ids)
        chosen = [t for t in trajectories
                  if self._matching_db([t.initial_state_hash]) and t.provenance.seed is not None]
        # novelty is measured against everything explored outside the trainset
        chosen_ids = {t.id for t in chosen}
        others = [t for t in store.trajectories("domain = ?", [self.env.domain.name])
                  if t.id not in chosen_ids and t.initial_state_hash == self.env.initial_hash()]
        self.reference = NoveltyReference.from_trajectories(others)
        out = []
        for trajectory in chosen:
            goal = parse_goal(trajectory.goal)
            out.append(dspy.Example(seed=trajectory.provenance.seed, target_write=goal[0] if goal else None,
                                    trajectory_id=trajectory.id).with_inputs("seed", "target_write"))
        return out

    def score(self, example: dspy.Example, prediction: Any) -> Score:
        result = _result(prediction)
        trajectory = getattr(result, "trajectory", None)
        check = check_trajectory(self.env, trajectory, self.reference, remember=False)
        score = check.score()
        if trajectory is None and getattr(result, "rejected_reason", None):
            score = Score(value=0.0, feedback=f"no valid trajectory: {result.rejected_reason}")
        return score


class _TaskTarget(Target):
    """Shared by writer and adapter: a produced task must verify, pass the reference
    rollout and its condition checks."""

    def __init__(self, env: Environment[Any], verifier: Verifier | None = None,
                 run_rollout: RolloutRunner | None = None) -> None:
        super().__init__(env, verifier)
        self.run_rollout = run_rollout or oracle_rollout_runner(env, self.verifier)

    def score(self, example: dspy.Example, prediction: Any) -> Score:
        result = _result(prediction)
        task = getattr(result, "task", None)
        if task is None:
            reason = getattr(result, "rejected_reason", None) or "no task"
            detail = getattr(result, "detail", None)
            return Score(value=0.0, feedback=f"no task was made: {reason}" + (f" ({detail})" if detail else ""))
        return score_tasks(self.verifier, [task], self.run_rollout, expected=1)


class WriterTarget(_TaskTarget):
    kind = role = "writer"

    def student(self) -> dspy.Module:
        from trajectory2task.programs.generation.writer import TaskWriter

        return TaskWriter()

    def harness(self, program: dspy.Module) -> dspy.Module:
        return bind(program, self.env)

    def examples(self, store: TaskStore, ids: Sequence[str]) -> list[dspy.Example]:
        tasks = _tasks(store, ids)
        trajectory_ids = list(dict.fromkeys(t.provenance.trajectory_id for t in tasks if t.provenance.trajectory_id))
        trajectories = [t for t in _trajectories(store, trajectory_ids) if self._matching_db([t.initial_state_hash])]
        return [dspy.Example(trajectory=t).with_inputs("trajectory") for t in trajectories]


class AdaptationTarget(_TaskTarget):
    kind = role = "adapter"

    def student(self) -> dspy.Module:
        from trajectory2task.programs.generation.adaptation import IntentAdaptation

        return IntentAdaptation()

    def harness(self, program: dspy.Module) -> dspy.Module:
        return bind(program, self.env)

    def examples(self, store: TaskStore, ids: Sequence[str]) -> list[dspy.Example]:
        from trajectory2task.programs.generation.pipeline import condition_seed

        selected = _tasks(store, ids)
        pairs: list[tuple[str, str]] = []  # (general task id, condition)
        for task in selected:
            if task.condition == "general":
                pairs += [(task.id, c) for c in ADAPTED_CONDITIONS]
            elif task.parent_task_id:
                pairs.append((task.parent_task_id, task.condition))
        pairs = list(dict.fromkeys(pairs))
        parents = {t.id: t for t in _tasks(store, [p for p, _ in pairs])}
        trajectories = {t.id: t for t in _trajectories(
            store, [p.provenance.trajectory_id for p in parents.values() if p.provenance.trajectory_id])}
        out = []
        for parent_id, condition in pairs:
            parent = parents.get(parent_id)
            trajectory = trajectories.get(parent.provenance.trajectory_id or "") if parent else None
            if parent is None or trajectory is None or not self._matching_db([parent.initial_state_hash]):
                continue
            seed = condition_seed(parent.provenance.seed or 0, condition)
            out.append(dspy.Example(task=parent, trajectory=trajectory, condition=condition, seed=seed)
                       .with_inputs("task", "trajectory", "condition", "seed"))
        return out


class _ProgramUser:
    """A SimulatedUser over a UserSimulator module, called under the current DSPy settings
    (the optimizer's LM and trace), not a private LM copy."""

    name = "user-under-optimization"

    def __init__(self, program: dspy.Module) -> None:
        self.program = program

    def session(self, scenario: Any) -> Any:
        return _ProgramUserSession(self.program, scenario)


class _ProgramUserSession:
    def __init__(self, program: dspy.Module, scenario: Any) -> None:
        self.program = program
        self.scenario = scenario

    def reply(self, conversation: Sequence[Any]) -> Any:
        from trajectory2task.programs.loop.user_sim import LMTurnError, reply_of

        try:
            prediction = self.program(scenario=self.scenario, conversation=list(conversation))
        except Exception as exc:  # the LM boundary, as in trajectory2task.programs.loop.user_sim
            raise LMTurnError(f"user simulator: {type(exc).__name__}: {exc}") from exc
        text = (getattr(prediction, "message", "") or "").strip()
        if not text:
            raise LMTurnError("user simulator: the LM returned an empty message")
        return reply_of(text)

    def usage(self) -> Any:
        from trajectory2task.signatures.models import TokenUsage

        return TokenUsage()


class EpisodeUser(dspy.Module):
    """The user simulator as a program over whole episodes: ``forward(task)`` plays the task's
    scenario (the scenario only: gold actions stay on the agent's side) against the oracle
    agent and returns ``Prediction(result=rollout, verdict)``, the verdict telling whether the
    user stopped before the goal was met. Its one predictor is the `UserSimulator`'s
    (``program``), so any DSPy optimizer compiles it with the metric
    ``trajectory2task.metric("user", env)``; ``program.save()`` keeps the simulator's state,
    which ``LMUser(lm, program=...)`` plays in `t2t bench`. The environment and verifier are
    bound here, out of saved state and copies."""

    def __init__(self, env: Environment[Any], program: dspy.Module | None = None, verifier: Verifier | None = None,
                 max_turns: int = DEFAULT_MAX_TURNS) -> None:
        from trajectory2task.programs.loop.user_sim import UserSimulator

        super().__init__()
        self.program = program if program is not None else UserSimulator()
        self.shared = Bound((env, verifier or Verifier(env)))
        self.max_turns = max_turns

    def forward(self, task: Task) -> dspy.Prediction:
        from trajectory2task.programs.loop.agent import ORACLE, OracleAgent
        from trajectory2task.programs.loop.rollout import RolloutEngine

        env, verifier = self.shared.value
        engine = RolloutEngine(env, _ProgramUser(self.program), [OracleAgent(env)], verifier=verifier,
                               max_turns=self.max_turns)
        outcome = engine.run(task, ORACLE)
        return dspy.Prediction(result=outcome.rollout, verdict=outcome.verdict)


class UserTarget(Target):
    """Fidelity of the simulated user, in conversations with the oracle agent (whose
    verdict tells whether the user stopped before the goal was met)."""

    kind = role = "user"

    def __init__(self, env: Environment[Any], verifier: Verifier | None = None,
                 max_turns: int = DEFAULT_MAX_TURNS) -> None:
        # the benchmark's turn limit: a long gold trajectory must not cost the user its score
        super().__init__(env, verifier)
        self.max_turns = max_turns

    def student(self) -> dspy.Module:
        from trajectory2task.programs.loop.user_sim import UserSimulator

        return UserSimulator()

    def harness(self, program: dspy.Module) -> dspy.Module:
        return EpisodeUser(self.env, program, self.verifier, self.max_turns)

    def examples(self, store: TaskStore, ids: Sequence[str]) -> list[dspy.Example]:
        return [dspy.Example(task=t).with_inputs("task") for t in _tasks(store, ids)
                if self._matching_db([t.initial_state_hash])]

    def score(self, example: dspy.Example, prediction: Any) -> Score:
        rollout = _result(prediction)
        write_tools = {name for name, spec in self.env.tools.items() if spec.kind == "write"}
        return user_fidelity(example.task, rollout.messages, rollout.termination,
                             getattr(prediction, "verdict", None), write_tools)


class AgentMetric(BaseModel):
    """How the agent target scores a task: pass^k estimated from ``trials`` rollouts per task
    (pass1 is k = 1: the share of passing trials)."""

    name: Literal["pass1", "pass^k"] = "pass1"
    k: int = Field(default=1, ge=1)
    trials: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> AgentMetric:
        if self.name == "pass1" and self.k != 1:
            raise ValueError("pass1 is k = 1")
        if self.trials < self.k:
            raise ValueError(f"pass^{self.k} needs at least {self.k} trials per task, not {self.trials}")
        return self

    @classmethod
    def of(cls, name: str = "pass1", k: int | None = None, trials: int | None = None) -> AgentMetric:
        """The metric a command line asks for, or a CompileError saying in one line what is wrong."""
        if name not in AGENT_METRICS:
            raise CompileError(f"--metric: unknown metric {name!r}; choose from {', '.join(AGENT_METRICS)}")
        if name == "pass1":
            if k is not None and k != 1:
                raise CompileError("--k goes with --metric pass^k (pass1 is k = 1)")
            k = 1
        elif k is None:
            raise CompileError("--metric pass^k needs --k K (how many trials must all pass)")
        elif k < 1:
            raise CompileError(f"--k must be at least 1, not {k}")
        trials = k if trials is None else trials
        if trials < k:
            raise CompileError(f"--metric-trials {trials} is fewer than --k {k}: pass^k needs at least k trials "
                               "per task")
        return cls(name=name, k=k, trials=trials)


class _ProgramAgent:
    """An `Agent` over the `ToolCallingAgent` under optimization, called under the current
    DSPy settings (the optimizer's LM and trace), not a private LM copy. One per trial: the
    trial number gives every ask of the trial its own rollout id (independent draws)."""

    name = "agent-under-optimization"

    def __init__(self, program: dspy.Module, env: Environment[Any], trial: int) -> None:
        from trajectory2task.programs.loop.agent import agent_tools

        self.program = program
        self.policy = env.policy
        self.tools = agent_tools(env.tool_schemas())
        self.trial = trial

    def system_prompt(self) -> str:
        return self.program.system_prompt(self.policy)

    def session(self, task: Task) -> _ProgramAgentSession:
        del task  # the agent under test plays blind, as in trajectory2task.programs.loop.agent.LMAgent
        return _ProgramAgentSession(self)


class _ProgramAgentSession:
    def __init__(self, agent: _ProgramAgent) -> None:
        self.agent = agent

    def reply(self, conversation: Sequence[Any]) -> Any:
        from trajectory2task.programs.loop.agent import history_of, reply_of
        from trajectory2task.programs.loop.user_sim import turn_error

        agent = self.agent
        try:
            with dspy.context(warn_on_type_mismatch=False):
                prediction = agent.program(policy=agent.policy, history=history_of(conversation), tools=agent.tools,
                                           trial=agent.trial)
        except Exception as exc:  # the LM boundary, as in trajectory2task.programs.loop.agent
            raise turn_error("agent", "agent", exc) from exc
        return reply_of(prediction)

    def usage(self) -> Any:
        from trajectory2task.signatures.models import TokenUsage

        return TokenUsage()


class EpisodeAgent(dspy.Module):
    """The tool-calling agent as a program over whole episodes: ``forward(task)`` plays the
    task ``trials`` times with the offline scripted user and returns ``Prediction(result=
    rollouts, verdicts)``, the verifier's verdict of each. Its one predictor is the
    `ToolCallingAgent`'s (``program``), so any DSPy optimizer compiles it with the metric
    ``trajectory2task.metric("agent", env)``; ``program.save()`` keeps the agent's state,
    which `t2t bench --agent-program` and ``LMAgent(program=...)`` load. The environment and
    verifier are bound here, out of saved state and copies."""

    def __init__(self, env: Environment[Any], program: dspy.Module | None = None, verifier: Verifier | None = None,
                 max_turns: int = DEFAULT_MAX_TURNS, trials: int = 1) -> None:
        from trajectory2task.programs.loop.agent import ToolCallingAgent

        super().__init__()
        self.program = program if program is not None else ToolCallingAgent()
        self.shared = Bound((env, verifier or Verifier(env)))
        self.max_turns = max_turns
        self.trials = trials

    def forward(self, task: Task) -> dspy.Prediction:
        from trajectory2task.programs.loop.rollout import RolloutEngine, rollout_id_for
        from trajectory2task.programs.loop.user_sim import LMTurnError, ScriptedUser

        env, verifier = self.shared.value
        engine = RolloutEngine(env, ScriptedUser(env.domain.tools), [], verifier=verifier, max_turns=self.max_turns)
        rollouts, verdicts = [], []
        for trial in range(self.trials):
            agent = _ProgramAgent(self.program, env, trial)
            outcome = engine.run(task, agent, trial, rollout_id_for("optimize", task.id, agent.name, trial))
            if (outcome.rollout.error or "").startswith("transport:"):
                # the server failed, not the agent: an error for the optimizer (see evaluate), not a 0
                raise LMTurnError(outcome.rollout.error or "transport failure", "transport")
            rollouts.append(outcome.rollout)
            verdicts.append(outcome.verdict)
        return dspy.Prediction(result=rollouts, verdicts=verdicts)


class AgentTarget(Target):
    """The LM agent (`ToolCallingAgent`): rollouts of each task with the offline scripted
    user, scored by the verifier's verdicts (pass = 1) as pass^k over `metric.trials` trials."""

    kind = role = "agent"

    def __init__(self, env: Environment[Any], verifier: Verifier | None = None,
                 metric: AgentMetric | None = None, native_function_calling: bool = True,
                 max_turns: int = DEFAULT_MAX_TURNS) -> None:
        super().__init__(env, verifier)
        self.agent_metric = metric or AgentMetric()
        self.native_function_calling = native_function_calling
        self.max_turns = max_turns

    def student(self) -> dspy.Module:
        from trajectory2task.programs.loop.agent import ToolCallingAgent

        return ToolCallingAgent(native_function_calling=self.native_function_calling)

    def harness(self, program: dspy.Module) -> dspy.Module:
        return EpisodeAgent(self.env, program, self.verifier, self.max_turns, self.agent_metric.trials)

    def examples(self, store: TaskStore, ids: Sequence[str]) -> list[dspy.Example]:
        # an unverified task's verdict says nothing about the agent: only verified tasks teach it
        return [dspy.Example(task=t).with_inputs("task") for t in _tasks(store, ids)
                if self._matching_db([t.initial_state_hash]) and self.verifier.verify_task(t).passed]

    def score(self, example: dspy.Example, prediction: Any) -> Score:
        verdicts = list(getattr(prediction, "verdicts", None) or [])
        if not verdicts:
            return Score(value=0.0, feedback="no rollout was run")
        passed = sum(v.passed for v in verdicts)
        value = pass_hat_k(len(verdicts), passed, min(self.agent_metric.k, len(verdicts)))
        failed = [f"trial {i}: {', '.join(v.reasons) or 'failed'}" + (f" ({'; '.join(v.details[:2])})"
                                                                        if v.details else "")
                  for i, v in enumerate(verdicts) if not v.passed]
        return Score(value=value, feedback=f"task {example.task.id}: " + " | ".join(failed) if failed else "")

    def finalize(self, program: dspy.Module) -> None:
        from trajectory2task.programs.loop.agent import compact_demos

        compact_demos(program)


TARGETS: dict[str, type[Target]] = {"explorer": ExplorerTarget, "writer": WriterTarget, "adapter": AdaptationTarget,
                                    "user": UserTarget, "agent": AgentTarget}


def oracle_rollout_runner(env: Environment[Any], verifier: Verifier) -> RolloutRunner:
    """The reference rollout of the writer/adapter metric: the oracle agent with the scripted
    user (the closed loop's offline references); gold replay if the closed loop is absent."""
    try:
        from trajectory2task.programs.loop.agent import ORACLE, OracleAgent
        from trajectory2task.programs.loop.rollout import RolloutEngine
        from trajectory2task.programs.loop.user_sim import ScriptedUser
    except ImportError:
        return gold_replay_runner(verifier)
    return RolloutEngine(env, ScriptedUser(env.domain.tools), [OracleAgent(env)], verifier=verifier).runner(ORACLE)


def _tasks(store: TaskStore, ids: Sequence[str]) -> list[Task]:
    ids = list(dict.fromkeys(ids))
    if not ids:
        return []
    found = {t.id: t for t in store.tasks("list_contains(?, task_id)", [ids])}
    return [found[i] for i in ids if i in found]


def _trajectories(store: TaskStore, ids: Sequence[str]) -> list[Trajectory]:
    ids = list(dict.fromkeys(ids))
    if not ids:
        return []
    found = {t.id: t for t in store.trajectories("list_contains(?, trajectory_id)", [ids])}
    return [found[i] for i in ids if i in found]


def select_ids(store: TaskStore, sql: str, selects: str) -> list[str]:
    """Ids chosen by a trainset expression: a full query (SELECT/WITH/FROM ...) whose first
    column is the id, or a filter (WHERE clause) over `tasks_latest` (tasks) or the
    `trajectories` table (trajectories)."""
    text = sql.strip().rstrip(";")
    first = text.split(None, 1)[0].lower() if text else ""
    if first in ("select", "with", "from", "values", "table"):
        _, rows = store.query(text)
    elif selects == "trajectories":  # store.filtered keeps the filter one WHERE expression
        _, rows = store.query(store.filtered("SELECT trajectory_id, min(seq) AS s FROM trajectories WHERE "
                                             f"{FILTER_SLOT} GROUP BY trajectory_id ORDER BY s", text))
    else:
        _, rows = store.query(store.filtered(f"SELECT task_id FROM tasks_latest WHERE {FILTER_SLOT} ORDER BY seq",
                                             text))
    return [str(r[0]) for r in rows if r and r[0] is not None]


# ============================================================================ compiling


def evaluate(program: dspy.Module, examples: Sequence[dspy.Example], metric: Callable[..., float],
             num_threads: int = 1) -> float:
    """Mean metric over the examples, by ``dspy.Evaluate``. An example whose run raises
    scores 0 (an LM that failed beyond its retries on one example must not end the run),
    but when every example raises, the first error is raised: that is a broken program or
    an unreachable LM."""
    if not examples:
        return 0.0
    errors: list[BaseException] = []

    def run(**inputs: Any) -> Any:
        try:
            return program(**inputs)
        except Exception as exc:
            errors.append(exc)
            raise

    evaluator = dspy.Evaluate(devset=list(examples), metric=metric, num_threads=max(1, num_threads),
                              max_errors=len(examples) + 1, failure_score=0.0, display_progress=False,
                              provide_traceback=False)
    # failed examples are ours to report (scored 0, or the first error when all fail), not a
    # log line each from DSPy's parallel executor
    parallel_log = logging.getLogger("dspy.utils.parallelizer")
    level = parallel_log.level
    parallel_log.setLevel(logging.CRITICAL)
    try:
        result = evaluator(run)
    finally:
        parallel_log.setLevel(level)
    if len(errors) == len(examples):
        raise errors[0]
    return sum(float(score) for _, _, score in result.results) / len(examples)


def _predictor_summary(program: dspy.Module) -> dict[str, tuple[str, int]]:
    return {name: (predictor.signature.instructions, len(predictor.demos)) for name, predictor in
            program.named_predictors()}


def _run_optimizer(optimizer: str, harness: dspy.Module, target: Target, trainset: list[dspy.Example],
                   valset: list[dspy.Example], settings: OptimizerSettings, lm: Any,
                   reflection_lm: Any) -> tuple[dspy.Module, list[dict[str, Any]]]:
    metric = target.metric()
    if optimizer == "bootstrap":
        teleprompter = dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=settings.max_bootstrapped_demos,
                                             max_labeled_demos=settings.max_labeled_demos, max_rounds=1)
        return teleprompter.compile(harness, trainset=trainset), []
    if optimizer == "mipro":
        teleprompter = dspy.MIPROv2(metric=metric, prompt_model=lm, task_model=lm, auto=None,
                                    num_candidates=settings.num_candidates,
                                    max_bootstrapped_demos=settings.max_bootstrapped_demos,
                                    max_labeled_demos=settings.max_labeled_demos, num_threads=settings.num_threads,
                                    seed=settings.seed, verbose=False, track_stats=True)
        compiled = teleprompter.compile(harness, trainset=trainset, valset=valset, num_trials=settings.num_trials,
                                        minibatch=len(valset) > settings.reflection_minibatch_size * 4,
                                        minibatch_size=max(1, min(len(valset), 35)))
        return compiled, _mipro_trials(compiled)
    if optimizer == "gepa":
        teleprompter = dspy.GEPA(metric=metric.with_feedback(), max_metric_calls=settings.max_metric_calls,
                                 reflection_lm=reflection_lm or lm,
                                 reflection_minibatch_size=settings.reflection_minibatch_size,
                                 num_threads=settings.num_threads, seed=settings.seed, track_stats=True,
                                 use_merge=False)
        compiled = teleprompter.compile(harness, trainset=trainset, valset=valset)
        return compiled, _gepa_trials(compiled)
    raise CompileError(f"unknown optimizer {optimizer!r}; choose from {', '.join(OPTIMIZERS)}")


def _mipro_trials(compiled: dspy.Module) -> list[dict[str, Any]]:
    out = []
    for number, log in sorted((getattr(compiled, "trial_logs", None) or {}).items()):
        params = {k: v for k, v in log.items() if k.endswith(("_predictor_instruction", "_predictor_demos"))
                  and isinstance(v, (int, float, str, bool))}
        value = log.get("full_eval_score", log.get("mb_score"))
        if value is None:
            continue
        # MIPROv2 logs percentages (dspy.Evaluate); the store keeps the metric's [0, 1] scale
        out.append({"number": int(number), "params": params, "value": float(value) / 100.0, "state": "COMPLETE",
                    "user_attrs": {"kind": "full_eval" if "full_eval_score" in log else "minibatch",
                                   "eval_calls": log.get("total_eval_calls_so_far")}})
    return out


def _gepa_trials(compiled: dspy.Module) -> list[dict[str, Any]]:
    results = getattr(compiled, "detailed_results", None)
    if results is None:
        return []
    out = []
    for index, (score, candidate) in enumerate(zip(results.val_aggregate_scores, results.candidates)):
        parents = results.parents[index] if index < len(results.parents) else None
        instructions = {name: p.signature.instructions for name, p in candidate.named_predictors()}
        out.append({"number": index, "params": {"candidate": index}, "value": float(score), "state": "COMPLETE",
                    "user_attrs": {"parents": parents, "instructions": instructions,
                                   "discovered_at_metric_calls": results.discovery_eval_counts[index]
                                   if index < len(results.discovery_eval_counts) else None}})
    return out


def compile_program(target: Target, optimizer: str, trainset: list[dspy.Example], valset: list[dspy.Example],
                    lm: Any, settings: OptimizerSettings | None = None, reflection_lm: Any = None,
                    student: dspy.Module | None = None) -> CompileResult:
    """Score, optimize, score again; return the compiled module's state and the scores."""
    if optimizer not in OPTIMIZERS:
        raise CompileError(f"unknown optimizer {optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
    if not trainset:
        raise CompileError("the trainset is empty")
    settings = settings or OptimizerSettings()
    valset = valset or trainset
    student = student or target.student()
    harness = target.harness(student)
    metric = target.metric()
    before_summary = _predictor_summary(harness)
    with dspy.context(lm=lm):
        score_before = evaluate(harness, valset, metric, settings.num_threads)
        compiled, trials = _run_optimizer(optimizer, harness, target, trainset, valset, settings, lm, reflection_lm)
        target.finalize(program_of(compiled))
        score_after = evaluate(compiled, valset, metric, settings.num_threads)
    after_summary = _predictor_summary(compiled)
    state = program_of(compiled).dump_state()
    changed = [name.removeprefix("program.") for name, (instructions, _) in after_summary.items()
               if before_summary.get(name, ("", 0))[0] != instructions]
    baseline = {"number": -1, "params": {"candidate": "uncompiled"}, "value": score_before, "state": "COMPLETE",
                "user_attrs": {"valset": len(valset)}}
    final = {"number": (max((t["number"] for t in trials), default=-1) + 1), "params": {"candidate": "compiled"},
             "value": score_after, "state": "COMPLETE", "user_attrs": {"valset": len(valset)}}
    numbered = [baseline, *trials, final]
    for i, trial in enumerate(numbered):  # the store's trial numbers: 0 = uncompiled, last = compiled
        trial["user_attrs"] = {**trial["user_attrs"], "optimizer_trial": trial["number"]}
        trial["number"] = i
    return CompileResult(program=target.kind, optimizer=optimizer, state=copy.deepcopy(state),
                         score_before=score_before, score_after=score_after, trainset=len(trainset),
                         valset=len(valset), demos=sum(d for _, d in after_summary.values()),
                         instructions_changed=changed, trials=numbered)


def make_target(kind: str, env: Environment[Any], verifier: Verifier | None = None,
                **options: Any) -> Target:
    """The target of a program kind; ``options`` go to its constructor (the agent's metric
    and function-calling mode)."""
    if kind not in TARGETS:
        raise CompileError(f"unknown program {kind!r}; choose from {', '.join(PROGRAM_KINDS)}")
    return TARGETS[kind](env, verifier, **options)
