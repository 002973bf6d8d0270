"""Rollouts as Ray work: actors that each hold a rollout engine, results streamed to the driver.

Each actor builds its `RolloutEngine` once, from ``make_engine`` (a picklable callable put in
the object store once and handed to every actor): the domain's database is loaded once per
actor, then every rollout it runs is a copy-on-write episode of it. The driver keeps the
queue: it hands each actor at most its share of ``concurrency`` rollouts at a time and calls
``on_result`` as each one comes back, so the store stays with the driver (DuckDB has one
writer) and is written one transaction per batch as in a one-process run.

Bounds hold for the whole cluster by a fixed split: actor ``i`` of ``n`` gets
``ActorShare(i, n).of(bound)`` of the rollouts in flight and of each role's ``max_concurrent``
(the shares add up to the bound, no actor gets none: there are never more actors than the
smallest bound). A split needs no call to a shared semaphore per LM call; an actor that dies
takes its share with it and its replacement gets the same share.

Faults. An actor that dies (killed, its node lost) fails the rollouts it had in flight; each
is queued again for another actor (``retries`` counts them) and a replacement actor takes the
dead one's place. A rollout is run again under the same ``rollout_id``, and the driver passes a
rollout id to ``on_result`` once only, so nothing is lost or stored twice. The LM calls an
actor completed reach the driver's ledger even when the actor dies before its rollout comes
back: with LMs and a ledger the run starts a
`trajectory2task.programs.distributed.call_log.CallLog` actor, each actor sends it every call
as the call ends, and has sent them all before a rollout comes back; the driver moves the
log's calls into the ledger before each result it hands on, and once more when the run ends
(normally or not), so a dead actor's calls are stored too, each once. A rollout that raises
inside an actor is a `RolloutCrash`, as in one process. The actors are owned by the
driver: if the driver dies, Ray ends them.
"""

from __future__ import annotations

import collections
import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trajectory2task.programs.lm.accounting import CallLedger
    from trajectory2task.programs.lm.config import LMSettings
    from trajectory2task.programs.loop.rollout import RolloutCrash, RolloutEngine, RolloutJob, RolloutResult
    from trajectory2task.signatures.models import Task

# how often one rollout may lose its actor before it is reported as a crash
MAX_ATTEMPTS = 3


class ActorStartError(RuntimeError):
    """A rollout actor could not build its engine (one line: the first of the cause)."""


@dataclass(frozen=True)
class ActorShare:
    """Actor ``index`` of ``count``: its part of a cluster-wide bound."""

    index: int
    count: int

    def of(self, total: int) -> int:
        """``total`` split as evenly as possible; the parts of all ``count`` actors add up to it."""
        return total // self.count + (1 if self.index < total % self.count else 0)


# builds an actor's engine; its LMs record into the ledger and take the share of each bound
EngineFactory = Callable[["CallLedger", ActorShare], "RolloutEngine"]


@dataclass
class RayRolloutRun:
    """What a run on Ray did: results in completion order, crashes, and how many rollouts were
    queued again because their actor died."""

    results: list[RolloutResult] = field(default_factory=list)
    crashes: list[RolloutCrash] = field(default_factory=list)
    retries: int = 0
    actors: int = 0
    start_s: float = 0.0  # spent starting the actors (each builds its engine) before the first rollout


class RolloutActor:
    """One Ray actor's engine: runs rollouts on its own event loop, concurrently. ``log``: the
    run's CallLog, which the engine's LM calls are sent to as they end (None: they are dropped)."""

    def __init__(self, make_engine: EngineFactory, share: ActorShare, log: Any = None) -> None:
        from trajectory2task.programs.lm.accounting import CallLedger
        from trajectory2task.programs.lm.errors import first_line

        self.ledger = CallLedger()
        self.calls: Any = None  # a CallSender to the log
        if log is not None:
            from trajectory2task.programs.distributed.call_log import CallSender

            self.calls = CallSender(log, self.ledger.take)
            self.ledger.on_call(lambda line: self.calls.send())  # after the ledger recorded the call
        self.failed: str | None = None
        try:
            self.engine = make_engine(self.ledger, share)
        except Exception as exc:  # told by ready() in one line; raised here, Ray would wrap it in its traceback
            self.failed = f"{type(exc).__name__}: {first_line(exc)}"

    def ready(self) -> str | None:
        """None when the engine is built, else why not (one line)."""
        return self.failed

    async def rollout(self, task: Task, job: RolloutJob) -> RolloutResult | RolloutCrash:
        """The rollout (or its crash); its LM calls are in the run's log when it comes back."""
        from trajectory2task.programs.loop.rollout import RolloutCrash

        if self.failed is not None:  # a replacement actor whose engine could not be built
            return RolloutCrash(job=job, error=f"its actor could not start: {self.failed}")
        try:
            result: RolloutResult | RolloutCrash = await self.engine.arun(task, job.agent, job.trial, job.rollout_id)
        except Exception as exc:  # a bug in one rollout: reported, the actor goes on
            result = RolloutCrash(job=job, error=f"{type(exc).__name__}: {exc}")
        if self.calls is not None:
            await self.calls.arrived()
        else:
            self.ledger.take()  # no one wants them: not kept for the actor's life
        return result


@dataclass
class LMAgentSpec:
    """An LM agent as an actor builds it: its LM from ``settings`` (with the actor's share of
    ``max_concurrent``) recording into the actor's ledger."""

    settings: LMSettings
    native_function_calling: bool
    program: Any = None  # a compiled ToolCallingAgent, copied for the agent
    dialect: str | None = None  # the structured-output dialect the driver's preflight found

    def build(self, environment: Any, ledger: CallLedger, share: ActorShare) -> Any:
        from trajectory2task.programs.loop.agent import LMAgent

        lm = _build_lm(self.settings, "agent", ledger, share, self.dialect)
        return LMAgent(lm, environment, program=self.program.deepcopy() if self.program is not None else None,
                       native_function_calling=self.native_function_calling, name=self.settings.model)


@dataclass
class LMUserSpec:
    """The LM user simulator as an actor builds it (see `LMAgentSpec`)."""

    settings: LMSettings
    name: str
    program: Any = None  # a compiled UserSimulator
    dialect: str | None = None

    def build(self, ledger: CallLedger, share: ActorShare) -> Any:
        from trajectory2task.programs.loop.user_sim import LMUser

        return LMUser(_build_lm(self.settings, "user", ledger, share, self.dialect), program=self.program,
                      name=self.name)


def _build_lm(settings: LMSettings, role: str, ledger: CallLedger, share: ActorShare, dialect: str | None) -> Any:
    from trajectory2task.programs.lm.accounting import role_of
    from trajectory2task.programs.lm.build import build_lm

    if settings.max_concurrent is not None:
        settings = settings.model_copy(update={"max_concurrent": share.of(settings.max_concurrent)})
    lm = build_lm(settings, role=role, ledger=ledger)
    tag = role_of(lm)
    if tag is not None and dialect is not None:
        tag.dialect = dialect
    return lm


@dataclass
class RolloutEngineSpec:
    """An `EngineFactory` from parts: the environment (pickled once into the object store, so a
    ``--db`` file need not exist on the other nodes), agents (reference or any picklable `Agent`,
    or `LMAgentSpec`), the user (a picklable `SimulatedUser` or `LMUserSpec`)."""

    environment: Any
    agents: list[Any]
    user: Any
    max_turns: int
    require_clarification: bool = False
    structured_adapter: bool = False  # install the structured adapter as the default (LMSession.install_adapter)

    @classmethod
    def of(cls, engine: RolloutEngine, structured_adapter: bool = False) -> RolloutEngineSpec:
        """The spec that rebuilds ``engine`` in an actor: an LM agent or user whose LM was built
        for a role (``build_lm(..., role=...)``, as the CLI builds them) is rebuilt from its
        settings, recording into the actor's ledger with the actor's share of its bound; every
        other part (reference agents, the scripted user, an LM given as a plain ``dspy.LM``) is
        shipped as it is, and a plain LM's calls are recorded into the actor's ledger too."""
        from trajectory2task.programs.lm.accounting import role_of
        from trajectory2task.programs.loop.agent import LMAgent
        from trajectory2task.programs.loop.user_sim import LMUser

        agents: list[Any] = []
        for agent in engine.agents.values():
            tag = role_of(agent.lm) if isinstance(agent, LMAgent) else None
            agents.append(agent if tag is None else LMAgentSpec(
                settings=tag.settings, native_function_calling=agent.program.native_function_calling,
                program=agent.program, dialect=tag.dialect))
        user: Any = engine.user
        tag = role_of(user.lm) if isinstance(user, LMUser) else None
        if tag is not None:
            user = LMUserSpec(settings=tag.settings, name=user.name, program=user.program, dialect=tag.dialect)
        return cls(environment=engine.environment, agents=agents, user=user, max_turns=engine.max_turns,
                   require_clarification=engine.verifier.require_clarification,
                   structured_adapter=structured_adapter)

    def bounds(self) -> list[int]:
        """The ``max_concurrent`` bounds an actor takes a share of."""
        specs = [*self.agents, self.user]
        return [s.settings.max_concurrent for s in specs
                if isinstance(s, (LMAgentSpec, LMUserSpec)) and s.settings.max_concurrent is not None]

    def __call__(self, ledger: CallLedger, share: ActorShare) -> RolloutEngine:
        from trajectory2task.programs.loop.rollout import RolloutEngine, recording_part
        from trajectory2task.programs.verification.verifier import Verifier

        if self.structured_adapter:
            from trajectory2task.programs.lm.session import LMSession

            LMSession.install_adapter()
        # a plain dspy.LM (the Python API's) records into the actor's ledger as a built one does
        agents = [a.build(self.environment, ledger, share) if isinstance(a, LMAgentSpec)
                  else recording_part(a, "agent", ledger) for a in self.agents]
        user = (self.user.build(ledger, share) if isinstance(self.user, LMUserSpec)
                else recording_part(self.user, "user", ledger))
        return RolloutEngine(self.environment, user, agents, max_turns=self.max_turns,
                             verifier=Verifier(self.environment, require_clarification=self.require_clarification))


def records_calls(make_engine: EngineFactory) -> bool:
    """Whether the engines ``make_engine`` builds may make LM calls into the actor's ledger: a
    `RolloutEngineSpec` does when it has an LM agent or user to build, any other factory may."""
    if not isinstance(make_engine, RolloutEngineSpec):
        return True
    from trajectory2task.programs.loop.rollout import records_plain_lm

    return any(isinstance(s, (LMAgentSpec, LMUserSpec)) or records_plain_lm(s)
               for s in [*make_engine.agents, make_engine.user])


def actor_count(ray: Any, wanted: int | None, *, jobs: int, bounds: Sequence[int]) -> int:
    """How many actors a run starts: ``wanted`` (None: one per CPU of the cluster), never more
    than the jobs, the cluster's CPUs, or the smallest bound to split (each actor needs a part)."""
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    return max(1, min(wanted or cpus, cpus, jobs, *bounds))


class _Pool:
    """The actors of one run, by share index; a dead one is replaced under the same share."""

    def __init__(self, ray: Any, engine_ref: Any, count: int, per_actor_calls: Callable[[int], int],
                 log: Any = None) -> None:
        self.ray = ray
        self.engine_ref = engine_ref
        self.log = log  # the run's CallLog, handed to each actor
        self.count = count
        self.per_actor_calls = per_actor_calls
        self.handles: dict[int, Any] = {}
        self.generation: dict[int, int] = {}
        self.replaced = 0

    def start(self, index: int) -> Any:
        remote = self.ray.remote(RolloutActor).options(
            num_cpus=1, max_restarts=0, scheduling_strategy="SPREAD",
            max_concurrency=self.per_actor_calls(index) + 1)  # + 1: ready() while rollouts run
        self.handles[index] = remote.remote(self.engine_ref, ActorShare(index, self.count), self.log)
        self.generation[index] = self.generation.get(index, -1) + 1
        return self.handles[index]

    def start_all(self) -> None:
        for index in range(self.count):
            self.start(index)
        try:  # an engine that cannot be built fails here, once, not as retries of every rollout
            failed = [why for why in self.ray.get([h.ready.remote() for h in self.handles.values()]) if why]
        except self.ray.exceptions.RayError as exc:
            failed = [_first_line(exc)]
        if failed:
            self.stop()
            raise ActorStartError(f"a rollout actor could not start: {failed[0]}")

    def replace(self, index: int, generation: int, limit: int) -> None:
        """Start a new actor for share ``index`` unless a newer one already took its place."""
        if self.generation.get(index) != generation or index not in self.handles:
            return
        try:  # dead as a rule; one only unreachable for a while must not come back beside its replacement
            self.ray.kill(self.handles.pop(index))
        except Exception:  # already gone
            pass
        if self.replaced >= limit:
            return  # too many deaths: this share stays empty
        self.replaced += 1
        self.start(index)

    def stop(self) -> None:
        for handle in self.handles.values():
            try:
                self.ray.kill(handle)
            except Exception:  # already gone: nothing to stop
                pass
        self.handles.clear()


def run_rollouts_on_ray(ray: Any, make_engine: EngineFactory, tasks: dict[str, Task], jobs: Sequence[RolloutJob],
                        *, concurrency: int, actors: int,
                        on_result: Callable[[RolloutResult], None] | None = None,
                        ledger: CallLedger | None = None) -> RayRolloutRun:
    """Run ``jobs`` on ``actors`` Ray actors (``ray``: a joined Ray, see
    `trajectory2task.programs.distributed.cluster.connect`), at most ``concurrency`` rollouts in
    flight over all of them. ``on_result`` runs here, once per rollout id, as results arrive;
    the LM calls the actors recorded are added to ``ledger``."""
    run = RayRolloutRun()
    if not jobs:
        return run
    if actors < 1 or concurrency < actors:
        raise ValueError(f"{actors} actor(s) need a concurrency of at least that many, not {concurrency}")
    run.actors = actors
    with contextlib.redirect_stdout(sys.stderr):  # Ray's driver prints an actor's death on stdout: keep it for output
        return _drive(ray, make_engine, tasks, jobs, concurrency, actors, on_result, ledger, run)


def _drive(ray: Any, make_engine: EngineFactory, tasks: dict[str, Task], jobs: Sequence[RolloutJob], concurrency: int,
         actors: int, on_result: Callable[[RolloutResult], None] | None, ledger: CallLedger | None,
         run: RayRolloutRun) -> RayRolloutRun:
    """The driver's loop: keep each actor at its share of rollouts, collect, retry, replace."""
    from trajectory2task.programs.loop.rollout import RolloutCrash

    started = time.perf_counter()
    log = None
    if ledger is not None and records_calls(make_engine):  # offline rollouts pay nothing for it
        from trajectory2task.programs.distributed.call_log import start_call_log

        log = start_call_log(ray)
    pool = _Pool(ray, ray.put(make_engine), actors, lambda index: ActorShare(index, actors).of(concurrency), log)
    queue = collections.deque(jobs)
    in_flight: dict[Any, tuple[int, int, RolloutJob]] = {}  # ref -> (share, actor generation, job)
    busy: collections.Counter[int] = collections.Counter()
    attempts: collections.Counter[str] = collections.Counter()
    delivered: set[str] = set()
    try:
        pool.start_all()
        run.start_s = time.perf_counter() - started
        while queue or in_flight:
            for index in list(pool.handles):
                while queue and busy[index] < pool.per_actor_calls(index):
                    job = queue.popleft()
                    ref = pool.handles[index].rollout.remote(tasks[job.task_id], job)
                    in_flight[ref] = (index, pool.generation[index], job)
                    busy[index] += 1
            if not in_flight:  # jobs left and no actor to run them
                run.crashes.extend(RolloutCrash(job=job, error="no rollout actor left to run it") for job in queue)
                break
            ready, rest = ray.wait(list(in_flight), num_returns=1)
            if rest:  # and whatever else is back already: one take of the log serves them all
                more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                ready += more
            calls_taken = False
            for ref in ready:
                index, generation, job = in_flight.pop(ref)
                busy[index] -= 1
                try:
                    payload = ray.get(ref)
                except ray.exceptions.RayActorError as exc:  # the actor died with the rollout in it
                    attempts[job.rollout_id] += 1
                    pool.replace(index, generation, limit=actors * MAX_ATTEMPTS)
                    if attempts[job.rollout_id] >= MAX_ATTEMPTS:
                        run.crashes.append(RolloutCrash(job=job, error=f"its actor died {MAX_ATTEMPTS} times: "
                                                                       f"{_first_line(exc)}"))
                    else:
                        run.retries += 1
                        queue.appendleft(job)  # first in line: another actor runs it next
                    continue
                if log is not None and ledger is not None and not calls_taken:
                    # the calls of every rollout in `ready` are in the log (and maybe others')
                    ledger.add_rows(ray.get(log.take.remote()))
                    calls_taken = True
                if isinstance(payload, RolloutCrash):
                    run.crashes.append(payload)
                elif payload.rollout.id not in delivered:  # a retried rollout that also finished: once only
                    delivered.add(payload.rollout.id)
                    run.results.append(payload)
                    if on_result is not None:
                        on_result(payload)
    finally:  # also on a Ctrl-C or a failing on_result: the actors and what runs on them end here
        pool.stop()
        _last_calls(ray, log, ledger)  # after the actors: a dead one's calls, those of rollouts cut short
    return run


def _last_calls(ray: Any, log: Any, ledger: CallLedger | None) -> None:
    """The calls the log still holds into the ledger (whose owner stores them), and the log ended."""
    if log is None:
        return
    from trajectory2task.programs.distributed.call_log import last_calls

    calls = last_calls(ray, log)
    if calls and ledger is not None:
        ledger.add_rows(calls)


def _first_line(exc: BaseException) -> str:
    from trajectory2task.programs.lm.errors import first_line

    return first_line(exc)


def run_engine_on_ray(target: Any, engine: RolloutEngine, tasks: dict[str, Task], jobs: Sequence[RolloutJob], *,
                      concurrency: int, actors: int | None = None,
                      on_result: Callable[[RolloutResult], None] | None = None, ledger: CallLedger | None = None,
                      structured_adapter: bool = False) -> RayRolloutRun:
    """``engine``'s rollouts on the Ray ``target`` names (a
    `trajectory2task.programs.distributed.cluster.RayTarget`): joins it, ships the engine as a
    `RolloutEngineSpec` and runs ``jobs`` on ``actors`` actors (None: one per CPU, see
    `actor_count`). Raises `RayUnavailable` when Ray cannot be joined, `ActorStartError` when
    an actor cannot build the engine."""
    from trajectory2task.programs.distributed.cluster import connect

    ray = connect(target)
    spec = RolloutEngineSpec.of(engine, structured_adapter)
    count = actor_count(ray, actors, jobs=len(jobs), bounds=[concurrency, *spec.bounds()])
    return run_rollouts_on_ray(ray, spec, tasks, jobs, concurrency=concurrency, actors=count, on_result=on_result,
                               ledger=ledger)


__all__ = ["ActorShare", "ActorStartError", "EngineFactory", "LMAgentSpec", "LMUserSpec", "MAX_ATTEMPTS", "RayRolloutRun",
           "RolloutActor", "RolloutEngineSpec", "actor_count", "records_calls", "run_engine_on_ray",
           "run_rollouts_on_ray"]
