"""Optuna sweeps over the generation pipeline's knobs, maximizing verified tasks per unit cost.

A trial is one generation run (kind 'generate', its own run id and task ids) with the
knobs the sampler chose, on the same database and the same item seeds as every other
trial of the study, so that trials differ by their knobs only. Its value is

    verified tasks / cost

- verified tasks: tasks of the trial's run that pass static verification;
- cost, with an LM: the run's LM cost in USD when the model map prices it, else the
  number of LM calls that answered (the run's `lm_calls` rows without an error); offline (the baselines, no LM): the LM calls the same
  run WOULD make, counted from its item records: one per exploration proposal, one per
  task written, one per adaptation attempted. The proxy is deterministic, so offline
  sweeps are reproducible, and it charges what an LM run pays for (a longer walk, an
  extra condition). `cost_unit` in the trial's user_attrs says which one was used.

Every finished trial is written to the store's `trials` table at once (study, number,
params, value, state, user_attrs with the run id and the counts).

Resume. The store is the study's storage: `load_study` rebuilds an in-memory Optuna study
from the `trials` rows of that study name (`optuna.trial.create_trial`, in trial-number
order) and the sweep runs only the trials still missing (`--trials` is the study's total).
The sampler is re-seeded before each trial from (seed, trial number), so a study stopped
after k trials and resumed asks exactly the parameters an uninterrupted study would have:
the same trials, the same values. A trial interrupted midway left no trial row; its
generation run (same run id, derived from the study, the number and the params) is
resumed, so the items it finished are not generated again.

Which knobs mattered: `t2t sweep` prints Optuna's parameter importances at the end, and
`KNOB_EFFECTS_SQL` / `KNOB_LEVELS_SQL` below answer it with `t2t sql` at any time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from trajectory2task.signatures.models import CONDITIONS

if TYPE_CHECKING:
    import optuna

    from trajectory2task.domains import Environment
    from trajectory2task.programs.lm.config import LMConfig
    from trajectory2task.store import TaskStore

# Correlation of each numeric knob with the trial value, per study (replace 'sweep').
KNOB_EFFECTS_SQL = """
SELECT k.key AS knob,
       round(corr(TRY_CAST(k.value->>'$' AS DOUBLE), t.value), 4) AS correlation_with_value,
       count(*) AS trials
FROM trials t, json_each(t.params) k
WHERE t.study = 'sweep' AND t.state = 'COMPLETE'
GROUP BY k.key ORDER BY abs(correlation_with_value) DESC NULLS LAST
""".strip()

# Mean value per level of every knob (booleans, choices and numbers alike).
KNOB_LEVELS_SQL = """
SELECT k.key AS knob, k.value->>'$' AS level, count(*) AS trials,
       round(avg(t.value), 4) AS mean_value, round(max(t.value), 4) AS best_value
FROM trials t, json_each(t.params) k
WHERE t.study = 'sweep' AND t.state = 'COMPLETE'
GROUP BY ALL ORDER BY knob, mean_value DESC
""".strip()


class Knob(BaseModel):
    """One parameter of the search space."""

    name: str
    kind: Literal["int", "float", "bool"]
    low: float | None = None
    high: float | None = None
    step: int | None = None
    doc: str = ""
    lm_only: bool = False  # only meaningful when an LM is configured (temperatures)

    def distribution(self) -> Any:
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), step=self.step or 1)
        if self.kind == "float":
            return FloatDistribution(float(self.low), float(self.high))
        return CategoricalDistribution([True, False])


PIPELINE_KNOBS: tuple[Knob, ...] = (
    Knob(name="explore_max_steps", kind="int", low=4, high=24, step=2,
         doc="exploration depth: tool calls an exploration may make"),
    Knob(name="explore_max_writes", kind="int", low=1, high=3,
         doc="write target: the walk draws 1..max writes to reach"),
    Knob(name="mix_general", kind="bool", doc="keep the general task of each item"),
    Knob(name="mix_ambiguous", kind="bool", doc="adapt each item to an ambiguous task"),
    Knob(name="mix_changing", kind="bool", doc="adapt each item to a changing task"),
    Knob(name="mix_infeasible", kind="bool", doc="adapt each item to an infeasible task"),
    Knob(name="temperature_explorer", kind="float", low=0.0, high=1.2, lm_only=True, doc="explorer LM temperature"),
    Knob(name="temperature_writer", kind="float", low=0.0, high=1.2, lm_only=True, doc="writer LM temperature"),
    Knob(name="temperature_adapter", kind="float", low=0.0, high=1.2, lm_only=True, doc="adapter LM temperature"),
)


def search_space(with_lm: bool, knobs: Sequence[Knob] = PIPELINE_KNOBS) -> dict[str, Any]:
    """Optuna distributions by knob name (the LM temperatures only when an LM is configured)."""
    return {k.name: k.distribution() for k in knobs if with_lm or not k.lm_only}


def conditions_of(params: dict[str, Any]) -> list[str]:
    """The condition mix a trial's params choose; general alone when they choose none."""
    chosen = [c for c in CONDITIONS if params.get(f"mix_{c}", True)]
    return chosen or ["general"]


class TrialOutcome(BaseModel):
    """What one trial's generation run gave and cost."""

    run_id: str
    items: int
    tasks: int
    verified: int
    cost: float
    cost_unit: Literal["usd", "lm_calls", "lm_call_equivalents"]
    verified_by_condition: dict[str, int] = Field(default_factory=dict)

    @property
    def value(self) -> float:
        return self.verified / self.cost if self.cost > 0 else 0.0


class SweepSettings(BaseModel):
    """A sweep: which study, how many trials in all, and the generation every trial runs."""

    study: str = "sweep"
    trials: int = Field(ge=0)
    seed: int = 0
    n: int = Field(default=8, ge=1, description="items (explorations) per trial")
    domain: str = "retail"
    db_path: str | None = None
    db_users: int = 500


class SweepReport(BaseModel):
    study: str
    run_id: str
    loaded: int  # trials found in the store before this sweep ran
    ran: int  # trials this sweep ran
    trials: list[dict[str, Any]] = Field(default_factory=list)  # every trial of the study, by number
    best: dict[str, Any] | None = None
    importances: dict[str, float] = Field(default_factory=dict)


Evaluate = Callable[[int, dict[str, Any]], TrialOutcome]


# ---------------------------------------------------------------- the study and its storage


def trial_seed(seed: int, number: int) -> int:
    digest = hashlib.blake2b(f"sweep/{seed}/{number}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


def stored_trials(store: TaskStore, study: str) -> list[dict[str, Any]]:
    """The study's trials in the store, one per number (the newest row of a number wins)."""
    _, rows = store.query(
        "SELECT number, params, value, state, user_attrs FROM trials WHERE study = ? "
        "QUALIFY row_number() OVER (PARTITION BY number ORDER BY created_at DESC) = 1 ORDER BY number", [study])
    return [{"number": int(n), "params": json.loads(p) if isinstance(p, str) else (p or {}), "value": v,
             "state": s, "user_attrs": json.loads(u) if isinstance(u, str) else (u or {})}
            for n, p, v, s, u in rows]


def load_study(store: TaskStore, study: str, space: dict[str, Any]) -> optuna.Study:
    """An in-memory Optuna study holding the study's trials from the store, in number order.

    A stored parameter outside today's space (the space changed) is dropped from that trial;
    a trial whose value no longer fits is skipped rather than guessed.
    """
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_obj = optuna.create_study(study_name=study, direction="maximize")
    for row in stored_trials(store, study):
        params = {k: v for k, v in row["params"].items() if k in space}
        state = TrialState[row["state"]] if row["state"] in TrialState.__members__ else TrialState.FAIL
        try:
            frozen = optuna.trial.create_trial(
                state=state, value=row["value"] if state == TrialState.COMPLETE else None, params=params,
                distributions={k: space[k] for k in params}, user_attrs=row["user_attrs"])
        except ValueError:
            continue
        study_obj.add_trial(frozen)
    return study_obj


def param_importances(study: optuna.Study) -> dict[str, float]:
    """Optuna's parameter importances, or {} while there are too few distinct trials."""
    import warnings

    import optuna
    from optuna.trial import TrialState

    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if len(complete) < 2 or len({t.value for t in complete}) < 2:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
        except (RuntimeError, ValueError):
            return {}


def run_sweep(store: TaskStore, settings: SweepSettings, space: dict[str, Any], evaluate: Evaluate,
              run_config: dict[str, Any] | None = None,
              on_trial: Callable[[dict[str, Any]], None] | None = None) -> SweepReport:
    """Run the study's missing trials (up to `settings.trials` in all), storing each at once."""
    import optuna
    from optuna.trial import TrialState

    from trajectory2task.store import Trial

    run_id = store.start_run("sweep", {**(run_config or {}), **settings.model_dump(mode="json")}, seed=settings.seed)
    study = load_study(store, settings.study, space)
    loaded = len(study.trials)
    ran = 0
    try:
        while len(study.trials) < settings.trials:
            number = len(study.trials)
            # re-seeded per trial: a resumed study asks what an uninterrupted one would have
            study.sampler = optuna.samplers.TPESampler(seed=trial_seed(settings.seed, number))
            trial = study.ask(space)
            try:
                outcome = evaluate(number, dict(trial.params))
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # a broken trial is recorded and the study goes on
                attrs = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
                for key, value in attrs.items():
                    trial.set_user_attr(key, value)
                study.tell(trial, state=TrialState.FAIL)
                record = Trial(number=trial.number, params=trial.params, value=None, state="FAIL", user_attrs=attrs)
            else:
                attrs = outcome.model_dump(mode="json")
                for key, value in attrs.items():
                    trial.set_user_attr(key, value)
                study.tell(trial, outcome.value)
                record = Trial(number=trial.number, params=trial.params, value=outcome.value, state="COMPLETE",
                               user_attrs=attrs)
            store.add_trials(run_id, settings.study, [record])
            ran += 1
            if on_trial is not None:
                on_trial(record.model_dump(mode="json"))
    except KeyboardInterrupt:
        store.finish_run(run_id, "interrupted")
        raise
    store.finish_run(run_id, "finished")
    trials = [{"number": t.number, "params": t.params, "value": t.value, "state": t.state.name,
               "user_attrs": t.user_attrs} for t in study.trials]
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    best = max(complete, key=lambda t: (t["value"], -t["number"])) if complete else None
    return SweepReport(study=settings.study, run_id=run_id, loaded=loaded, ran=ran, trials=trials, best=best,
                       importances=param_importances(study))


# ---------------------------------------------------------------- one trial = one generation run


def trial_run_id(study: str, number: int, params: dict[str, Any], seed: int) -> str:
    """Stable per (study, number, params, seed): an interrupted trial resumes its own run."""
    key = json.dumps([study, number, params, seed], sort_keys=True)
    return f"sweep-{hashlib.blake2b(key.encode(), digest_size=10).hexdigest()}"


def offline_cost(items: Sequence[Any]) -> float:
    """LM-call equivalents of a run from its item records: proposals + tasks written +
    adaptations attempted (see the module doc)."""
    cost = 0
    for item in items:
        cost += item.proposals
        if item.general_task_id:
            cost += 1  # the writer
            cost += len([c for c in item.tasks if c != "general"]) + len(item.rejected)  # the adapter
    return float(cost)


def build_programs(lm_config: LMConfig | None, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any],
                                                                                 dict[str, str]]:
    """(programs by role, LMs by role, role -> model or 'baseline') for a trial's knobs."""
    from trajectory2task.programs.generation.adaptation import IntentAdaptation
    from trajectory2task.programs.generation.adapting import BaselineAdaptation
    from trajectory2task.programs.generation.exploration import BaselineExplorer
    from trajectory2task.programs.generation.explorer import Explorer
    from trajectory2task.programs.lm.build import build_lm
    from trajectory2task.programs.generation.pipeline import GENERATION_ROLES
    from trajectory2task.programs.generation.writer import TaskWriter
    from trajectory2task.programs.generation.writing import BaselineWriter

    lms: dict[str, Any] = {}
    roles: dict[str, str] = {}
    for role in GENERATION_ROLES:
        settings = lm_config.for_role(role) if lm_config is not None else None
        if settings is None:
            roles[role] = "baseline"
            continue
        temperature = params.get(f"temperature_{role}")
        if temperature is not None:
            settings = settings.model_copy(update={"temperature": temperature})
        lms[role] = build_lm(settings)
        roles[role] = settings.model
    depth = {"max_steps": int(params.get("explore_max_steps", 16)),
             "max_writes": int(params.get("explore_max_writes", 2))}
    programs: dict[str, Any] = {
        "explorer": Explorer(**depth) if "explorer" in lms else BaselineExplorer(**depth),
        "writer": TaskWriter() if "writer" in lms else BaselineWriter(),
        "adapter": IntentAdaptation() if "adapter" in lms else BaselineAdaptation(),
    }
    for role, lm in lms.items():
        programs[role].set_lm(lm)
    return programs, lms, roles


def pipeline_evaluator(store: TaskStore, env: Environment[Any], settings: SweepSettings,
                       lm_config: LMConfig | None = None, programs_name: str | None = None,
                       load_programs: Callable[[dict[str, Any]], None] | None = None) -> Evaluate:
    """An `Evaluate` that runs one generation run per trial into `store` and scores it."""
    from trajectory2task.programs.generation.pipeline import GenerationConfig, GenerationPipeline, id_prefix
    from trajectory2task.store.failures import StoreSink, generation_items

    def evaluate(number: int, params: dict[str, Any]) -> TrialOutcome:
        programs, lms, roles = build_programs(lm_config, params)
        if load_programs is not None:
            load_programs(programs)
        run_id = trial_run_id(settings.study, number, params, settings.seed)
        config = GenerationConfig(domain=settings.domain, n=settings.n, conditions=conditions_of(params),
                                  seed=settings.seed, db_path=settings.db_path, db_users=settings.db_users,
                                  db_initial_hash=env.initial_hash(), source="lm" if lms else "baseline",
                                  roles=roles, programs=programs_name)
        # trials share item seeds, so their ids would collide: each trial gets its own prefix
        config.id_prefix = f"{id_prefix(config, run_id)}-{run_id[-8:]}"
        run_config = {**config.model_dump(mode="json"),
                      "sweep": {"study": settings.study, "trial": number, "params": params}}
        store.start_run("generate", run_config, seed=settings.seed, run_id=run_id)
        pipeline = GenerationPipeline(env, StoreSink(store), config, explorer=programs["explorer"],
                                      writer=programs["writer"],
                                      adaptation=programs["adapter"], lms=lms,
                                      program_versions={r: type(p).__name__ for r, p in programs.items()})
        summary = pipeline.run(run_id)
        items = generation_items(store, run_id)
        verified = {c.condition: c.verified for c in summary.conditions}
        tasks = sum(c.tasks for c in summary.conditions)
        if lms:
            _, [(usd, calls)] = store.query(
                "SELECT coalesce(sum(cost), 0), count(*) FILTER (WHERE error IS NULL) FROM lm_calls WHERE run_id = ?",
                [run_id])
            cost, unit = (float(usd), "usd") if usd and usd > 0 else (float(calls), "lm_calls")
        else:
            cost, unit = offline_cost(items), "lm_call_equivalents"
        return TrialOutcome(run_id=run_id, items=len(items), tasks=tasks, verified=sum(verified.values()),
                            cost=cost, cost_unit=unit, verified_by_condition=verified)

    return evaluate
