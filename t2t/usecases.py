"""What the `t2t` commands do, as typed Python functions (no printing, no exit codes).

``generate`` explores, writes, adapts and verifies; ``verify`` and ``audit`` check a task
set; each works with or without a store. Errors are exceptions with one-line messages:
`UnknownDomainError`, `ValueError` for bad arguments, the store's `StoreError`.

`t2t generate`'s steps are here too (`GenerateRequest`, `open_generation_run`,
`generation_pipeline`): the command parses its flags, calls them, and prints. They raise
`UserError` (the command's one ``t2t: error:`` line) for what the user must change.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from trajectory2task.bench_setup import BenchRequest, PreparedBench
from trajectory2task.errors import UserError
from trajectory2task.signatures.models import CONDITIONS, Condition, GenerationItem, LMCall, Task, Trajectory, Verdict

if TYPE_CHECKING:
    from trajectory2task.programs.generation.pipeline import GenerationConfig, GenerationPipeline
    from trajectory2task.store import TaskStore


class GenerateResult(BaseModel):
    """A finished generation run: its summary and everything it made."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    run_id: str
    summary: Any  # trajectory2task.programs.generation.pipeline.RunSummary
    trajectories: list[Trajectory] = Field(default_factory=list)
    tasks: list[Task] = Field(default_factory=list)
    verdicts: list[Verdict] = Field(default_factory=list)

    def verified(self) -> list[Task]:
        """The tasks whose static verdict passed."""
        passed = {v.task_id for v in self.verdicts if v.passed}
        return [t for t in self.tasks if t.id in passed]


class MemorySink:
    """The pipeline's sink without a store: items kept in lists, in the order they finish."""

    def __init__(self) -> None:
        self.items: list[GenerationItem] = []
        self.trajectories: list[Trajectory] = []
        self.tasks: list[Task] = []
        self.verdicts: list[Verdict] = []
        self.lm_calls: list[LMCall] = []
        self._lock = threading.Lock()  # items finish on several worker threads

    def recorded(self, run_id: str) -> list[GenerationItem]:
        del run_id  # one sink per run
        return list(self.items)

    def add(self, run_id: str, item: GenerationItem, trajectories: Sequence[Trajectory], tasks: Sequence[Task],
            verdicts: Sequence[Verdict], lm_calls: Sequence[LMCall]) -> None:
        with self._lock:
            self.items.append(item)
            self.trajectories += trajectories
            self.tasks += tasks
            self.verdicts += verdicts
            self.lm_calls += lm_calls

    def finish(self, run_id: str, status: str) -> None:
        del run_id, status  # nothing to close


def generate(domain: str = "retail", *, n: int, conditions: Sequence[Condition] = CONDITIONS, seed: int = 0,
             db: str | os.PathLike[str] | None = None, users: int = 500, lm: Any = None,
             lms: dict[str, Any] | None = None, store: str | os.PathLike[str] | None = None, workers: int = 1,
             progress: Callable[[Any], None] | None = None, ray: Any = None,
             actors: int | None = None) -> GenerateResult:
    """Explore ``n`` trajectories on a domain's database and make verified tasks from them.

    ``db`` is a database JSON file (default: one generated from ``seed`` with ``users`` users).
    ``lm`` (a ``dspy.LM``) plays every generation role; ``lms`` sets roles one by one
    (``{"writer": lm}``); with neither, the offline baselines run. Either may also be an
    ``LMSettings`` (``trajectory2task.programs.lm.config``), built into an LM here, and on Ray
    by each worker. With ``store`` (a DuckDB
    file) every item is stored as `t2t generate` stores it, one transaction per item, and the
    run can be resumed with the command; without one, results are only returned.

    ``ray`` runs the items as Ray work (``trajectory2task.programs.distributed.generate_ray``):
    ``"local"`` (a Ray on this machine, one worker per core; offline, one fewer, the driver
    making items between stores), a cluster address
    (``"auto"``, ``"ray://host:10001"``) or a ``RayTarget``; None: as ``T2T_RAY_ADDRESS`` says,
    and with that unset one process, Ray not imported. ``actors`` is how many workers (default
    one per CPU of the cluster, or of the ``RayTarget``'s ``num_cpus``). Results and stored rows are the same
    either way; an LM object is copied to each worker (it must pickle: else ValueError, and
    give its ``LMSettings``), and a ``max_concurrent`` bound holds across the cluster. Raises
    ``RayUnavailable`` when Ray cannot be started or joined.
    """
    from trajectory2task.domains import get_domain
    from trajectory2task.programs.generation.pipeline import GENERATION_ROLES, GenerationPipeline, generation_programs

    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    if actors is not None and actors < 1:
        raise ValueError(f"actors must be at least 1, not {actors}")
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown or not conditions:
        raise ValueError(f"conditions: unknown {', '.join(map(str, unknown)) or '(none given)'}; "
                         f"choose from {', '.join(CONDITIONS)}")
    from trajectory2task.programs.lm.build import build_lm
    from trajectory2task.programs.lm.config import LMSettings

    by_role = {role: lm for role in GENERATION_ROLES} if lm is not None else {}
    by_role.update(lms or {})
    strange = sorted(set(by_role) - set(GENERATION_ROLES))
    if strange:
        raise ValueError(f"lms: unknown role(s) {', '.join(strange)}; the roles are {', '.join(GENERATION_ROLES)}")
    settings = {role: value for role, value in by_role.items() if isinstance(value, LMSettings)}
    by_role.update({role: build_lm(value) for role, value in settings.items()})
    loaded = get_domain(domain)
    env = loaded.environment(loaded.load_db(os.fspath(db)) if db is not None else _generated_db(loaded, seed, users))
    roles = {role: (by_role[role].model if role in by_role else "baseline") for role in GENERATION_ROLES}
    offline = [r for r in ("explorer", "writer") if roles[r] == "baseline"]
    if offline and env.domain.kit is None:
        raise ValueError(f"domain '{env.domain.name}' has no generation kit, which the offline "
                         f"{' and '.join(offline)} need: give an LM or add a kit")
    run_id = uuid.uuid4().hex
    config = new_generation_config(env, run_id, domain=domain, n=n, conditions=conditions, seed=seed,
                                   db=os.fspath(db) if db is not None else None, users=users, roles=roles)
    programs = generation_programs(by_role)
    versions = {role: type(program).__name__ for role, program in programs.items()}

    executor = _ray_items(ray, config, versions, by_role, settings, workers, actors)
    if executor is not None:
        executor.start()  # the workers start while the store opens

    def run(sink: Any) -> Any:
        pipeline = GenerationPipeline(env, sink, config, explorer=programs["explorer"], writer=programs["writer"],
                                      adaptation=programs["adapter"], program_versions=versions, lms=by_role,
                                      workers=workers, executor=executor)
        return pipeline.run(run_id, progress=progress)

    memory = MemorySink()
    try:
        if store is None:
            summary = run(memory)
        else:
            from trajectory2task.store import TaskStore
            from trajectory2task.store.failures import StoreSink

            with TaskStore(Path(store)) as task_store:
                task_store.start_run("generate", config.model_dump(mode="json"), seed=seed, run_id=run_id)
                tee = _Tee(StoreSink(task_store), memory)
                if executor is not None:  # the LM calls no item carried (a run that stopped) are stored too
                    executor.store_calls = lambda calls: task_store.add_lm_calls(run_id, calls)
                summary = run(tee)
    finally:
        if executor is not None:
            executor.close()  # when the run never reached its items (a store that did not open)
    return GenerateResult(run_id=run_id, summary=summary, trajectories=memory.trajectories, tasks=memory.tasks,
                          verdicts=memory.verdicts)


def _ray_items(ray: Any, config: Any, versions: dict[str, str], lms: dict[str, Any], settings: dict[str, Any],
               workers: int, actors: int | None) -> Any:
    """The Ray executor the ``ray`` argument asks for, or None (one process, Ray not imported).
    The roles given as ``settings`` are built by each worker; the other LMs are copied there."""
    from trajectory2task.programs.distributed.cluster import RayTarget, ray_target

    target = ray if isinstance(ray, RayTarget) else ray_target(ray)
    if target is None:
        return None
    from trajectory2task.programs.distributed.cluster import connect
    from trajectory2task.programs.distributed.generate_ray import RayItems, WorkerSetup, shippable

    ray_module = connect(target)
    setup = WorkerSetup(config=config, program_versions=versions, lm_settings=settings,
                        lm_objects=shippable({r: lm for r, lm in lms.items() if r not in settings}), workers=workers)
    return RayItems(ray_module, setup, actors=actors, cpus=target.num_cpus if target.local else None,
                    driver_on_cpus=target.local)


def new_generation_config(env: Any, run_id: str, *, domain: str, n: int, conditions: Sequence[str], seed: int,
                          db: str | None, users: int, roles: dict[str, str], programs: str | None = None,
                          guided: bool = False) -> GenerationConfig:
    """The recorded config of a new run on ``env`` (its ids' prefix included): the source is
    'lm' when any role has a model, the conditions in their canonical order."""
    from trajectory2task.domains import domain_module
    from trajectory2task.programs.generation.pipeline import GenerationConfig, id_prefix

    config = GenerationConfig(domain=env.domain.name, domain_module=domain_module(domain), n=n,
                              conditions=[c for c in CONDITIONS if c in conditions], seed=seed,
                              db_path=os.path.abspath(db) if db is not None else None, db_users=users,
                              db_initial_hash=env.initial_hash(),
                              source="lm" if any(m != "baseline" for m in roles.values()) else "baseline",
                              roles=roles, programs=programs, guided=guided)
    config.id_prefix = id_prefix(config, run_id)
    return config


# ---------------------------------------------------------------- `t2t generate`, step by step


@dataclass(frozen=True)
class GenerateRequest:
    """What a `t2t generate` run was asked for. None (False) means not given: a new run takes
    the default, a resumed run keeps what it recorded (a given value that differs is refused)."""

    domain: str | None = None
    n: int | None = None
    conditions: tuple[Condition, ...] | None = None
    seed: int | None = None
    users: int | None = None
    db: str | None = None
    programs: str | None = None
    guided: bool = False
    resume: str | None = None
    retry_failed: bool = False

    def check(self) -> None:
        if self.retry_failed and self.resume is None:
            raise UserError("--retry-failed goes with --resume RUN_ID")


def check_kit(env: Any, roles: dict[str, str]) -> None:
    """Refuse a domain without a generation kit where an offline program needs one."""
    offline = [r for r in ("explorer", "writer") if roles.get(r) == "baseline"]
    if offline and env.domain.kit is None:
        raise UserError(f"domain '{env.domain.name}' has no generation kit, which the offline {' and '.join(offline)} "
                        "need; give an LM for them (--lm) or add a kit (README: 'Adding a domain')")


def new_run_environment(request: GenerateRequest, roles: dict[str, str]) -> Any:
    """The environment a new run explores (its domain and database), checked against its roles."""
    from trajectory2task.settings import DEFAULT_DB_SEED, DEFAULT_DB_USERS, load_environment

    env = load_environment(request.domain or "retail", request.db,
                           seed=request.seed if request.seed is not None else DEFAULT_DB_SEED,
                           users=request.users or DEFAULT_DB_USERS)
    check_kit(env, roles)
    return env


def _resume_conflicts(config: GenerationConfig, request: GenerateRequest) -> None:
    """A resumed run keeps the settings it was started with: a flag that would change one of
    them is refused (silently ignoring it would run something other than asked)."""
    given: list[tuple[str, Any, Any]] = []
    if request.domain is not None and request.domain not in (config.domain, config.domain_module):
        given.append(("--domain", request.domain, config.domain))
    if request.n is not None and request.n != config.n:
        given.append(("--n", request.n, config.n))
    if request.conditions is not None and list(request.conditions) != list(config.conditions):
        given.append(("--conditions", ",".join(request.conditions), ",".join(config.conditions)))
    if request.seed is not None and request.seed != config.seed:
        given.append(("--seed", request.seed, config.seed))
    if request.users is not None and request.users != config.db_users:
        given.append(("--users", request.users, config.db_users))
    if request.db is not None and os.path.abspath(request.db) != config.db_path:
        given.append(("--db", request.db, config.db_path or "(a generated database)"))
    if request.programs is not None and request.programs != config.programs:
        given.append(("--programs", request.programs, config.programs or "(none)"))
    if request.guided and not config.guided:
        given.append(("--guided", "on", "off"))
    if given:
        flag, value, recorded = given[0]
        raise UserError(f"--resume {request.resume}: the run was made with {flag} {recorded}, not {value}; a "
                        f"resumed run keeps its own settings (drop {flag}, or start a new run)")


def open_generation_run(task_store: TaskStore, path: Path, request: GenerateRequest, roles: dict[str, str],
                        env: Any = None) -> tuple[GenerationConfig, str, Any]:
    """(config, run id, environment) of the run to make: the recorded run ``request.resume``,
    its settings kept and its database checked, or a new one on ``env`` (`new_run_environment`)."""
    from trajectory2task.programs.generation.pipeline import GenerationConfig
    from trajectory2task.settings import DEFAULT_DB_USERS, DEFAULT_GENERATE_N, load_environment
    from trajectory2task.store.failures import run_config

    if request.resume is None:
        run_id = uuid.uuid4().hex
        config = new_generation_config(env, run_id, domain=request.domain or "retail",
                                       n=request.n or DEFAULT_GENERATE_N,
                                       conditions=request.conditions or CONDITIONS, seed=request.seed or 0,
                                       db=request.db or None, users=request.users or DEFAULT_DB_USERS, roles=roles,
                                       programs=request.programs, guided=request.guided)
        return config, run_id, env
    resume = request.resume
    recorded = run_config(task_store, resume)
    if recorded is None or recorded[0] != "generate":
        raise UserError(f"--resume: no generate run '{resume}' in {path}")
    config = GenerationConfig.model_validate(recorded[1])
    _resume_conflicts(config, request)
    if config.roles != roles:
        used = ", ".join(f"{r}: {m}" for r, m in sorted(config.roles.items()))
        raise UserError(f"--resume: run {resume} used {used}; configure the same LMs to resume it")
    # by module path: a domain package outside the built-ins is not known by its name
    env = load_environment(config.domain_module or config.domain, config.db_path, seed=config.seed,
                           users=config.db_users)
    if env.initial_hash() != config.db_initial_hash:
        raise UserError(f"--resume: the database differs from the one run {resume} started on")
    check_kit(env, roles)
    return config, resume, env


def load_program_state(store: TaskStore, name: str, modules: dict[str, Any]) -> list[str]:
    """Apply the compiled state saved as ``name`` to the LM modules; returns the roles loaded."""
    record = store.latest_program(name)
    if record is None:
        raise UserError(f"--programs: no program named '{name}' in the store")
    program, state = record["program"], record["state"]
    if program in modules:
        states = {program: state}
    elif program == "generation" and isinstance(state, dict):
        states = {role: s for role, s in state.items() if role in modules}
    else:
        raise UserError(f"--programs: '{name}' holds a '{program}' program, not explorer, writer, adapter or "
                        f"generation")
    for role, role_state in states.items():
        module = modules[role]
        if not hasattr(module, "load_state"):
            raise UserError(f"--programs: '{name}' has state for the {role}, which runs as an offline baseline "
                            f"here; configure an LM for it (--lm or --{role}-lm)")
        try:
            module.load_state(role_state)
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"--programs: the {role} state in '{name}' does not fit this program: {exc}") from None
    return sorted(states)


def generation_pipeline(task_store: TaskStore, config: GenerationConfig, run_id: str, env: Any,
                        modules: dict[str, Any], lms: dict[str, Any], *, session: Any = None,
                        workers: int | None = None, retry_failed: bool = False,
                        ray: Any = None, ray_local: bool = False) -> GenerationPipeline:
    """The run recorded in the store (``start_run``) and the pipeline that makes its items:
    the run's compiled programs loaded, coverage targets when guided, and with ``ray`` (the
    joined ``ray`` module) its items on Ray workers that build the LMs from the ``session``'s
    settings (`trajectory2task.programs.distributed.generate_ray`); ``ray_local``: that Ray is
    this machine's, whose CPUs the driver shares."""
    from trajectory2task.programs.generation.pipeline import GenerationPipeline
    from trajectory2task.store.failures import StoreSink

    loaded: list[str] = []
    if config.programs:
        loaded = load_program_state(task_store, config.programs, modules)
        for role, role_lm in lms.items():  # dspy's load_state resets each predictor's LM to the saved one
            modules[role].set_lm(role_lm)
    versions = {role: type(module).__name__ + (f"@{config.programs}" if config.programs else "")
                for role, module in modules.items()}
    task_store.start_run("generate", config.model_dump(mode="json"), seed=config.seed, run_id=run_id)
    pipeline = GenerationPipeline(env, StoreSink(task_store), config, explorer=modules["explorer"],
                                  writer=modules["writer"], adaptation=modules["adapter"],
                                  program_versions=versions, lms=lms, workers=workers or (8 if lms else 1),
                                  targets=_guided_targets(task_store, env, config), retry_failed=retry_failed)
    if ray is not None:
        from trajectory2task.programs.distributed.generate_ray import RayItems, WorkerSetup, shippable

        settings = dict(session.settings) if session is not None else {}
        setup = WorkerSetup(config=config, program_versions=versions, lm_settings=settings,
                            lm_objects={} if session is not None else shippable(lms),
                            program_states={role: modules[role].dump_state() for role in loaded},
                            cache=session.cache if session is not None else False, workers=pipeline.workers)
        # the workers' calls reach the store with their items (those no item carried, as the run
        # ends or stops, by themselves); the ledger counts them for the live line
        on_calls = (lambda calls: session.ledger.add_rows(calls, keep=False)) if session is not None else None
        pipeline.executor = RayItems(ray, setup, driver_on_cpus=ray_local, on_calls=on_calls,
                                     store_calls=lambda calls: task_store.add_lm_calls(run_id, calls))
        pipeline.executor.start()
    return pipeline


def _guided_targets(task_store: TaskStore, env: Any, config: GenerationConfig) -> Any:
    """The coverage-guided plan (trajectory2task.optimize.coverage) when the run is guided, else None."""
    if not config.guided:
        return None
    from trajectory2task.optimize.coverage import GuidedTargets

    return GuidedTargets(task_store, env.domain, config.conditions)


def done_items(pipeline: GenerationPipeline, run_id: str) -> int:
    """Items of the run already recorded (a resumed run's head start)."""
    return len({item.index for item in pipeline.sink.recorded(run_id) if item.index < pipeline.config.n})


class _Tee:
    """A store sink that also keeps what it stores (the store has it; the caller gets it too)."""

    def __init__(self, store_sink: Any, memory: MemorySink) -> None:
        self.store_sink, self.memory = store_sink, memory

    def recorded(self, run_id: str) -> list[GenerationItem]:
        return self.store_sink.recorded(run_id)

    def add(self, run_id: str, item: GenerationItem, trajectories: Sequence[Trajectory], tasks: Sequence[Task],
            verdicts: Sequence[Verdict], lm_calls: Sequence[LMCall]) -> None:
        self.store_sink.add(run_id, item, trajectories, tasks, verdicts, lm_calls)
        self.memory.add(run_id, item, trajectories, tasks, verdicts, lm_calls)

    def finish(self, run_id: str, status: str) -> None:
        self.store_sink.finish(run_id, status)


def _generated_db(domain: Any, seed: int, users: int) -> Any:
    if domain.generate_db is None:
        raise ValueError(f"domain {domain.name} has no database generator: pass db=")
    return domain.generate_db(seed, users)


class VerifyResult(BaseModel):
    verdicts: list[Verdict]

    @property
    def passed(self) -> int:
        return sum(v.passed for v in self.verdicts)


def verify(tasks: Sequence[Task], environment: Any) -> VerifyResult:
    """Each task's static verdict (gold replay, do-nothing agent, infeasibility), as `t2t verify`."""
    from trajectory2task.programs.verification.verifier import Verifier

    verifier = Verifier(environment)
    return VerifyResult(verdicts=[verifier.verify_task(t) for t in tasks])


def audit(tasks: Sequence[Task], environment: Any) -> Any:
    """Every finding code can make on ``tasks`` and their diversity (`t2t audit`): an
    ``AuditReport`` whose ``counts`` has a row for every class."""
    from trajectory2task.programs.verification.audit import audit as run_audit

    return run_audit(environment, list(tasks))


class BenchResult(BaseModel):
    """A finished benchmark: the scores per (agent, condition) and per agent over all
    conditions ('all'), and every rollout with its verdict."""

    run_id: str
    cells: list[Any]  # trajectory2task.optimize.metrics.CellScore
    rollouts: list[Any] = Field(default_factory=list)  # trajectory2task.signatures.models.Rollout
    verdicts: list[Verdict] = Field(default_factory=list)
    crashes: list[str] = Field(default_factory=list)  # rollouts that raised (a bug, not a verdict)
    retries: int = 0  # rollouts run again because their Ray actor died (ray=)
    # what `bench_run` (a stored run, as `t2t bench` runs it) adds; its rollouts and verdicts stay
    # in the store (`rows` holds every scored one, before and after a resume)
    config: Any = None  # trajectory2task.programs.loop.bench.BenchConfig
    rows: list[Any] = Field(default_factory=list)  # trajectory2task.optimize.metrics.RolloutRow
    calibration: list[Any] = Field(default_factory=list)  # trajectory2task.programs.loop.bench.CalibrationProblem
    crashed: list[Any] = Field(default_factory=list)  # trajectory2task.programs.loop.rollout.RolloutCrash
    tasks: int = 0
    lm_failure_reasons: list[str] = Field(default_factory=list)  # the ledger's first line per LM error kind

    def cell(self, agent: str, condition: str = "all") -> Any:
        """The scores of ``agent`` on ``condition`` ('all': every condition)."""
        found = [c for c in self.cells if c.agent_model == agent and c.condition == condition]
        if not found:
            raise KeyError(f"no scores for agent {agent!r} on {condition!r}")
        return found[0]

    def calibration_breaches(self) -> list[Any]:
        """The calibration problems on verified tasks (do-nothing passes one, or the oracle fails one)."""
        return [p for p in self.calibration if p.verified]


class BenchProgress(Protocol):
    """What a stored bench run reports as it goes (the CLI's progress bar)."""

    def start(self, total: int, done: int) -> None: ...  # rollouts in the run, and stored before this
    def advance(self) -> None: ...  # one more rollout stored
    def lm_call(self, line: str) -> None: ...  # the ledger's progress line after each LM call
    def stop(self) -> None: ...  # the rollouts are over (also when they were interrupted)


def play_rollouts(engine: Any, tasks: dict[str, Task], jobs: Sequence[Any], *, concurrency: int,
                  target: Any = None, actors: int | None = None, on_result: Callable[[Any], None] | None = None,
                  ledger: Any = None, structured_adapter: bool = False) -> tuple[list[Any], int]:
    """Run ``jobs`` on ``engine``, in this process (``target`` None) or on Ray actors
    (`trajectory2task.programs.distributed.rollouts.run_engine_on_ray`); ``on_result`` runs
    here either way. Returns the crashes and how many rollouts were retried after their actor died."""
    if target is None:
        _, crashes = engine.run_many(tasks, jobs, concurrency=concurrency, on_result=on_result)
        return crashes, 0
    from trajectory2task.programs.distributed.rollouts import run_engine_on_ray

    ran = run_engine_on_ray(target, engine, tasks, jobs, concurrency=concurrency, actors=actors, on_result=on_result,
                            ledger=ledger, structured_adapter=structured_adapter)
    return ran.crashes, ran.retries


def bench(tasks: Sequence[Task], environment: Any, *, agents: Sequence[Any] = ("do-nothing", "oracle"),
          user: Any = None, trials: int = 1, max_turns: int = 30, concurrency: int = 8,
          require_clarification: bool = False, store: str | os.PathLike[str] | None = None,
          ray: str | None = None, actors: int | None = None) -> BenchResult:
    """Play each task ``trials`` times with each agent against the simulated user and judge
    every rollout, as `t2t bench` does.

    An agent is 'do-nothing' or 'oracle' (the calibration references), a ``dspy.LM`` (the
    tool-calling agent on that model) or any `Agent`; ``user`` is None (the offline scripted
    user) or a ``dspy.LM`` (the LM user simulator). With ``store``, the run, its tasks, every
    rollout and every LM call (``lm_calls``, on Ray too) are stored as the command stores them
    (`t2t sql "SELECT * FROM pass_rate"`); the LMs given are left as they are (copies record).

    ``ray`` runs the rollouts on Ray actors as ``t2t bench --ray`` does: ``"local"`` (or ``""``)
    a Ray on this machine, else a cluster address; None reads ``T2T_RAY_ADDRESS`` (unset: one
    process, Ray not imported). ``actors`` is how many (default one per CPU of the cluster);
    the agents and user must then pickle (reference agents, the scripted user, a plain
    ``dspy.LM`` do). Results come back to this process, which alone writes ``store``."""
    from trajectory2task.optimize.metrics import score_cells
    from trajectory2task.programs.distributed.cluster import ray_target
    from trajectory2task.programs.loop.agent import DO_NOTHING, ORACLE, DoNothingAgent, LMAgent, OracleAgent
    from trajectory2task.programs.loop.bench import plan_jobs, rollout_row
    from trajectory2task.programs.loop.rollout import RolloutEngine, RolloutWriter, recording_part
    from trajectory2task.programs.loop.user_sim import LMUser, ScriptedUser
    from trajectory2task.programs.verification.verifier import Verifier

    if trials < 1 or max_turns < 1 or concurrency < 1 or (actors is not None and actors < 1):
        raise ValueError("trials, max_turns, concurrency and actors must each be at least 1")
    target = ray_target(ray)
    if not tasks:
        raise ValueError("no tasks to bench")
    built: list[Any] = []
    for agent in agents:
        if agent == DO_NOTHING:
            built.append(DoNothingAgent(environment))
        elif agent == ORACLE:
            built.append(OracleAgent(environment))
        elif isinstance(agent, str):
            raise ValueError(f"agent {agent!r}: pass 'do-nothing', 'oracle', a dspy.LM or an Agent")
        elif hasattr(agent, "session"):
            built.append(agent)
        else:  # a dspy.LM
            built.append(LMAgent(agent, environment, name=agent.model))
    names = [a.name for a in built]
    if len(set(names)) != len(names):
        raise ValueError(f"an agent is named twice: {names}")
    simulated = ScriptedUser(environment.domain.tools) if user is None else (
        user if hasattr(user, "session") else LMUser(user, name=user.model))
    by_id = {t.id: t for t in tasks}
    run_id = uuid.uuid4().hex
    jobs = plan_jobs(run_id, list(by_id), names, trials, set())
    ledger = None  # with a store: every LM call, stored with the rollouts (lm_calls)
    if store is not None:
        from trajectory2task.programs.lm.accounting import CallLedger

        ledger = CallLedger()
        if target is None:  # here, the LMs record into it (one built for a role into its own ledger too);
            # on Ray each actor's LMs record into the actor's ledger, and reach this one through the run's log
            built = [recording_part(a, "agent", ledger, built_too=True) for a in built]
            simulated = recording_part(simulated, "user", ledger, built_too=True)
    engine = RolloutEngine(environment, simulated, built, max_turns=max_turns,
                           verifier=Verifier(environment, require_clarification=require_clarification))
    results: list[Any] = []

    def run(on_result: Callable[[Any], None]) -> tuple[list[Any], int]:
        return play_rollouts(engine, by_id, jobs, concurrency=concurrency, target=target, actors=actors,
                             on_result=on_result, ledger=ledger if target is not None else None)

    if store is None:
        crashes, retries = run(results.append)
    else:
        from trajectory2task.store import TaskStore

        with TaskStore(Path(store)) as task_store:
            task_store.start_run("bench", {"agents": names, "user": simulated.name, "trials": trials,
                                           "max_turns": max_turns, "task_ids": list(by_id),
                                           "domain": environment.domain.name, "source": "python"}, run_id=run_id)
            task_store.add_tasks(run_id, list(by_id.values()))
            writer = RolloutWriter(task_store, run_id, ledger=ledger)

            def keep(result: Any) -> None:
                results.append(result)
                writer.add(result)

            crashes, retries = run(keep)
            writer.flush()
            _finish(task_store, run_id, crashes, retries)
    rows = [rollout_row(r.rollout.task_id, by_id[r.rollout.task_id].condition, r.rollout.agent_model,
                        r.rollout.trial, r.verdict.passed, r.verdict.reasons, r.rollout.termination, r.rollout.error)
            for r in results]
    return BenchResult(run_id=run_id, cells=score_cells(rows, trials), rollouts=[r.rollout for r in results],
                       verdicts=[r.verdict for r in results],
                       crashes=[f"{c.job.rollout_id}: {c.error}" for c in crashes], retries=retries)


def _finish(task_store: Any, run_id: str, crashes: Sequence[Any], retries: int) -> None:
    """The run's last event; the retries after dead actors are kept with it."""
    task_store.add_run_event(run_id, "failed" if crashes else "finished",
                             {"retried_rollouts": retries} if retries else None)


def bench_estimate(request: BenchRequest, notice: Callable[[str], None]) -> tuple[Any, dict[str, Any], str]:
    """`t2t bench --estimate`: the LM calls, tokens and cost the run a `BenchRequest`
    (`trajectory2task.bench_setup`) asks for would make; nothing is called or stored. Returns
    the plan, each role's settings and a title (`trajectory2task.estimate.print_estimate`)."""
    from trajectory2task.bench_setup import check_request, estimate, prepare
    from trajectory2task.errors import UserError
    from trajectory2task.store import TaskStore

    check_request(request)
    with TaskStore(request.store) as ts:
        prepared = prepare(ts, request, notice)
        if request.resume is not None:
            raise UserError("--estimate plans a new run; it does not go with --resume")
        return estimate(prepared)


def bench_run(request: BenchRequest, notice: Callable[[str], None], progress: BenchProgress | None = None) -> BenchResult:
    """A stored bench run as `t2t bench` makes it, from a `BenchRequest`
    (`trajectory2task.bench_setup`): a new run, or the rest of the run ``request.resume`` names.
    Each rollout is stored as it finishes (in small atomic batches, with its LM calls); the
    result is scored on every rollout the run holds. ``notice`` takes the lines for stderr
    (the run id, skipped tasks, the LM totals). Bad input and an unusable endpoint or cluster
    raise `UserError` with one line, before any rollout."""
    from trajectory2task.bench_setup import check_request, prepare
    from trajectory2task.programs.lm.config import redact_url
    from trajectory2task.store import TaskStore

    check_request(request)
    with TaskStore(request.store) as ts:
        prepared = prepare(ts, request, notice)
        config, session = prepared.config, prepared.session
        if prepared.target is not None:
            _join(prepared.target)  # before the run is recorded: a cluster that cannot be joined leaves nothing
        if session.settings:
            session.install_adapter()
        record = config.model_dump()
        if record.get("api_base"):  # credentials in the URL are not kept in the store
            record["api_base"] = redact_url(record["api_base"])
        run_id = ts.start_run("bench", record, seed=config.db_seed, run_id=request.resume)
        notice(f"t2t bench: run {run_id} (resume with --resume {run_id})")
        if config.tasks_source == "file" and not ts.done_task_ids(run_id):
            ts.add_tasks(run_id, prepared.tasks)
        crashes, retries = _run_stored(ts, run_id, prepared, request.concurrency, notice, progress)
        if session.ledger.calls:
            notice(session.ledger.progress_line())
        return _stored_result(ts, run_id, prepared, crashes, retries)


def _join(target: Any) -> None:
    from trajectory2task.errors import UserError
    from trajectory2task.programs.distributed.cluster import RayUnavailable, connect

    try:
        connect(target)
    except RayUnavailable as exc:
        raise UserError(str(exc)) from None


def _run_stored(ts: Any, run_id: str, prepared: PreparedBench, concurrency: int, notice: Callable[[str], None],
                progress: BenchProgress | None) -> tuple[list[Any], int]:
    from trajectory2task.errors import UserError
    from trajectory2task.programs.distributed.rollouts import ActorStartError
    from trajectory2task.programs.loop.bench import plan_jobs
    from trajectory2task.programs.loop.rollout import RolloutEngine, RolloutWriter
    from trajectory2task.programs.verification.verifier import Verifier

    config, session, target = prepared.config, prepared.session, prepared.target
    jobs = plan_jobs(run_id, config.task_ids, config.agents, config.trials, ts.done_rollout_keys(run_id))
    engine = RolloutEngine(prepared.environment, prepared.user, prepared.agents, max_turns=config.max_turns,
                           verifier=Verifier(prepared.environment, require_clarification=config.require_clarification))
    ledger = session.ledger
    if jobs and session.settings:
        from trajectory2task.programs.lm.session import EndpointError

        try:  # before the first call: a server that is down costs no retries
            session.preflight()
        except EndpointError as exc:
            ts.finish_run(run_id, "failed")
            raise UserError(str(exc)) from None
    writer = RolloutWriter(ts, run_id, ledger=ledger)
    by_id = {t.id: t for t in prepared.tasks}
    total = len(config.task_ids) * len(config.agents) * config.trials
    if progress is not None:
        progress.start(total, total - len(jobs))
        ledger.on_call(progress.lm_call)

    def stored(result: Any) -> None:
        writer.add(result)
        if progress is not None:
            progress.advance()

    try:
        crashes, retries = play_rollouts(engine, by_id, jobs, concurrency=concurrency,
                                         target=target if jobs else None, actors=prepared.actors,
                                         on_result=stored, ledger=ledger, structured_adapter=bool(session.settings))
        if progress is not None:
            progress.stop()
    except ActorStartError as exc:
        writer.flush()
        ts.finish_run(run_id, "failed")
        raise UserError(str(exc)) from None
    except BaseException:
        writer.flush()
        ts.finish_run(run_id, "interrupted")
        if progress is not None:
            progress.stop()
        notice(f"t2t bench: interrupted; {writer.written} rollout(s) stored this time; finish with --resume {run_id}")
        raise
    writer.flush()
    if retries:
        notice(f"t2t bench: {retries} rollout(s) retried on another Ray actor after theirs died")
    _finish(ts, run_id, crashes, retries)
    return crashes, retries


def _stored_result(ts: Any, run_id: str, prepared: PreparedBench, crashes: list[Any], retries: int) -> BenchResult:
    """The run scored on every rollout it holds, with the reference agents' calibration."""
    from trajectory2task.optimize.metrics import score_cells
    from trajectory2task.programs.loop.agent import REFERENCE_AGENTS
    from trajectory2task.programs.loop.bench import calibration_problems, stored_rows
    from trajectory2task.programs.verification.verifier import Verifier

    config = prepared.config
    rows = stored_rows(ts, run_id)
    problems: list[Any] = []
    if any(a in REFERENCE_AGENTS for a in config.agents):
        verifier = Verifier(prepared.environment)
        problems = calibration_problems(rows, {t.id: verifier.verify_task(t) for t in prepared.tasks})
    return BenchResult(run_id=run_id, cells=score_cells(rows, config.trials), retries=retries,
                       crashes=[f"{c.job.rollout_id}: {c.error}" for c in crashes], crashed=list(crashes),
                       config=config, rows=rows, calibration=problems, tasks=len(prepared.tasks),
                       lm_failure_reasons=prepared.session.ledger.reasons())


def trainset(program: str, store: str | os.PathLike[str], environment: Any, where: str = "verified") -> list[Any]:
    """``dspy.Example``s for compiling ``program`` ('explorer', 'writer', 'adapter', 'user' or
    'agent') from a store, in one call: ``where`` is a filter over ``tasks_latest`` (over the
    ``trajectories`` table for the explorer) or a full query whose first column is the id, as
    `t2t optimize --trainset` takes it. Each example's inputs are the program's own inputs."""
    from trajectory2task.optimize.compile import select_ids
    from trajectory2task.store import TaskStore

    target = _target(program, environment)
    with TaskStore(Path(store), read_only=True) as task_store:
        return target.examples(task_store, select_ids(task_store, where, target.selects))


def metric(program: str, environment: Any, feedback: bool = False) -> Callable[..., Any]:
    """The metric `t2t optimize` scores ``program`` with: ``metric(example, prediction,
    trace=None)`` -> a float in [0, 1] (1.0 / 0.0 while bootstrapping, where only a full pass
    makes a demo); with ``feedback=True`` a ``dspy.Prediction(score, feedback)`` for GEPA."""
    scorer = _target(program, environment).metric()
    return scorer.with_feedback() if feedback else scorer


def _target(program: str, environment: Any) -> Any:
    from trajectory2task.optimize.compile import TARGETS

    if program not in TARGETS:
        raise ValueError(f"unknown program {program!r}; choose from {', '.join(TARGETS)}")
    return TARGETS[program](environment)


EXPORT_FORMATS = ("tau2", "parquet", "sft")


def export(store: str | os.PathLike[str], out: str | os.PathLike[str], format: str = "tau2", *,
           where: str | None = None, condition: str | None = None, model: str | None = None,
           replace: bool = False) -> int:
    """Write what a SQL filter selects from a store, as `t2t export` does: tasks as tau2's
    ``tasks.json`` or Parquet, or passing rollouts as SFT chat JSONL (``model`` selects an
    agent). Written through a temporary file and renamed into place; an existing ``out`` is
    replaced only with ``replace``. Returns the number of records written."""
    from trajectory2task.store import TaskStore

    if format not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {format!r} (use {', '.join(EXPORT_FORMATS)})")
    if model and format != "sft":
        raise ValueError("model selects rollouts: it applies to the sft format only")
    with TaskStore(Path(store), read_only=True) as task_store:
        filter_sql, params = task_store.selection(where, condition, model)
        if format == "tau2":
            return task_store.export_tau2(filter_sql, Path(out), params, replace=replace)
        if format == "parquet":
            return task_store.export_parquet(filter_sql, Path(out), params, replace=replace)
        from trajectory2task.store.sft import export_sft

        return export_sft(task_store, filter_sql, Path(out), params, replace=replace)
