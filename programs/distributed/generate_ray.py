"""Generation items as Ray work: `RayItems`, the pipeline's executor for ``--ray``.

The driver (the process that runs ``t2t generate``) starts one `ItemWorker` actor per CPU of
the cluster (offline on a Ray of its own machine, one fewer: it makes items itself whenever it
has no output to store, from the moment the run starts while the workers still load). Each
loads the domain's environment once: the database is generated again from the run's (seed,
users), or parsed from the ``--db`` file's bytes, put once in Ray's object store by the driver
(a worker on another machine need not see the file); its initial hash must equal the run's.
A worker builds its own programs (the offline baselines, or the LM programs from the roles'
settings, with the run's compiled state), so nothing but small picklable settings crosses the
wire, and runs the items it is sent on a `GenerationPipeline` of the run's config: item
``index`` depends on (run seed, index) alone, so a worker makes it byte for byte as the
one-process run (or the driver) does.

Each finished item streams back to the driver, and the driver alone writes the store, one
transaction per item, as without Ray. With LMs, a worker sends each LM call to the run's
`trajectory2task.programs.distributed.call_log.CallLog` actor as the call ends, and has sent
them all before it returns the item; the driver takes the log's calls once per batch of
outputs and stores them with the first item of the batch (``ItemOutput.lm_calls``).

Faults. A worker that dies (its process killed, its machine lost) fails the items it held;
the driver starts a new worker and sends those items again (``retried`` counts them), so no
item is lost, and none is stored twice: an item is stored only when its output reaches the
driver, once. An item whose worker dies ``max_attempts`` times stops the run (`WorkerLost`);
what was stored stays, and ``--resume`` continues. The LM calls a dead worker completed for
items it never returned are in the log, not lost with it: they are stored with a later item,
or, once the run ends or stops, by ``store_calls`` (calls belong to the run, not to an item);
the items are made again with calls of their own.

LM bounds. A role's ``max_concurrent`` holds across the cluster: its slots live in one
`trajectory2task.programs.distributed.slots.CallSlots` actor.
"""

from __future__ import annotations

import copy
import gc
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from trajectory2task.programs.generation.pipeline import (
    GenerationConfig,
    GenerationPipeline,
    ItemOutput,
    generation_programs,
)
from trajectory2task.programs.lm.errors import first_line
from trajectory2task.programs.lm.config import LMSettings
from trajectory2task.signatures.models import GenerationItem, LMCall, Task, Trajectory, Verdict


class WorkerLost(RuntimeError):
    """An item whose Ray worker died each time it ran: one line saying which, and how to go on."""


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker needs to run a run's items; sent once to each worker."""

    config: GenerationConfig
    program_versions: dict[str, str] = field(default_factory=dict)
    # roles played by an LM built in the worker from these settings (the command line's LMs)
    lm_settings: dict[str, LMSettings] = field(default_factory=dict)
    # roles played by these LM objects (the Python API's), a copy in each worker; their
    # ``max_concurrent`` limiters are dropped here and held cluster-wide there
    lm_objects: dict[str, Any] = field(default_factory=dict)
    program_states: dict[str, Any] = field(default_factory=dict)  # role -> compiled DSPy state (--programs)
    cache: bool = False  # DSPy's LM cache, as the driver's --no-cache / --cache-dir left it
    workers: int = 1  # items in flight at once on each worker (LM items wait on the network together)

    @property
    def bounds(self) -> dict[str, int]:
        """Role -> its ``max_concurrent`` bound, for the roles that have one."""
        out = {role: s.max_concurrent for role, s in self.lm_settings.items() if s.max_concurrent is not None}
        for role, lm in self.lm_objects.items():
            limiter = getattr(lm, "limiter", None)
            if limiter is not None:
                out[role] = limiter.limit
        return out


def shippable(lms: dict[str, Any]) -> dict[str, Any]:
    """The LM objects as they can cross to a worker: a limiter (locks, per process) is dropped
    from a shallow copy; the worker bounds the copy cluster-wide instead. Raises ValueError,
    naming the role, for an LM that does not pickle (one holding a connection or a lock: an LM
    built for an ``api_base``): give its ``LMSettings`` instead, which each worker builds."""
    from ray import cloudpickle

    out = {}
    for role, lm in lms.items():
        if getattr(lm, "limiter", None) is not None:
            lm = copy.copy(lm)
            lm.limiter = None
        try:
            cloudpickle.dumps(lm)
        except Exception as exc:  # whatever pickling raises: the object is not ours
            raise ValueError(f"ray: the {role}'s LM cannot be sent to Ray workers ({first_line(exc, 300)}); pass its "
                             f"LMSettings instead (lms={{'{role}': LMSettings(...)}}), which each worker "
                             "builds") from None
        out[role] = lm
    return out


class _NoSink:
    """A worker's pipeline never stores: the driver does."""

    def recorded(self, run_id: str) -> list[GenerationItem]:
        return []

    def add(self, run_id: str, item: GenerationItem, trajectories: Sequence[Trajectory], tasks: Sequence[Task],
            verdicts: Sequence[Verdict], lm_calls: Sequence[LMCall]) -> None:
        raise RuntimeError("a Ray worker does not store items; the driver does")

    def finish(self, run_id: str, status: str) -> None:
        del run_id, status


def worker_environment(config: GenerationConfig, db_json: bytes | None) -> Any:
    """The run's environment, loaded again in a worker: from the database file's bytes, or
    generated from the run's (seed, users). Raises RuntimeError when it is not the run's."""
    from trajectory2task.domains import get_domain

    domain = get_domain(config.domain_module or config.domain)
    if db_json is not None:
        db = domain.db_model.model_validate_json(db_json)
    elif domain.generate_db is not None:
        db = domain.generate_db(config.seed, config.db_users)
    else:
        raise RuntimeError(f"domain {domain.name} has no database generator and the run gave no database")
    env = domain.environment(db)
    if env.initial_hash() != config.db_initial_hash:
        raise RuntimeError("the worker's database differs from the one the run started on")
    return env


class ItemWorker:
    """Runs items of one run (a Ray actor: ``ray.remote(ItemWorker)``; plain here, so the
    module imports without Ray). ``slots`` is the run's CallSlots actor, or None when no role
    is bounded; ``holder`` names this worker to it. ``log`` is the run's CallLog actor (None
    offline), which each LM call is sent to as it ends."""

    def __init__(self, setup: WorkerSetup, db_json: bytes | None, slots: Any = None, holder: str = "",
                 log: Any = None) -> None:
        env = worker_environment(setup.config, db_json)
        lms: dict[str, Any] = dict(setup.lm_objects)
        self.session: Any = None
        if setup.lm_settings:
            from trajectory2task.programs.lm.session import LMSession

            self.session = LMSession(cache=setup.cache, warn=None)
            for role, settings in setup.lm_settings.items():
                lms[role] = self.session.build(role, settings)
        if lms:
            from trajectory2task.programs.lm.session import LMSession

            LMSession.install_adapter()
            if self.session is not None:
                self.session.preflight()  # learns each endpoint's structured-output dialect, as the driver did
        if slots is not None:
            from trajectory2task.programs.distributed.slots import ClusterLimiter

            bounds = setup.bounds
            for role, lm in lms.items():
                if role in bounds:
                    lm.limiter = ClusterLimiter(bounds[role], slots, role, holder)
        programs = generation_programs(lms)
        for role, state in setup.program_states.items():
            programs[role].load_state(state)
            programs[role].set_lm(lms[role])  # load_state resets each predictor's LM to the saved one
        self.pipeline = GenerationPipeline(env, _NoSink(), setup.config, explorer=programs["explorer"],
                                           writer=programs["writer"], adaptation=programs["adapter"],
                                           program_versions=setup.program_versions, lms=lms,
                                           workers=setup.workers)
        self.calls: Any = None  # a CallSender to the log, with LMs
        if log is not None and lms:
            from trajectory2task.programs.distributed.call_log import CallSender, send_after_each_call

            self.calls = CallSender(log, self.pipeline.drain_usage)
            send_after_each_call(lms.values(), self.calls)
        # the database and programs live as long as the worker: keep them out of the
        # collector's full scans (what event_loop.run does for a one-process run); no collect
        # first: it would cost a tenth of a second of the worker's start to free the little
        # garbage that importing left
        gc.freeze()

    async def run_items(self, run_id: str, planned: list[tuple[int, Any]]) -> list[ItemOutput]:
        """The planned items, one after another; their LM calls are in the run's log when they return."""
        outputs = [await self.pipeline.agenerate_item(run_id, index, target) for index, target in planned]
        if self.calls is not None:
            await self.calls.arrived()
        return outputs

    def process_id(self) -> int:
        """The worker's process id (to watch it, or to stop it in a fault test)."""
        return os.getpid()


def _take(retry: list[tuple[int, Any]], queue: Iterator[tuple[int, Any]], count: int) -> list[tuple[int, Any]]:
    """Up to ``count`` items to run next: those to run again first (taken from ``retry``),
    then the queue's (never drawn past what is taken: it may be a generator)."""
    out = [retry.pop(0) for _ in range(min(count, len(retry)))]
    out.extend(islice(queue, count - len(out)))
    return out


def _worker_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """What ``ray.get`` raises when the worker (or the node holding the result) is gone."""
    x = ray.exceptions
    return (x.RayActorError, x.WorkerCrashedError, x.ObjectLostError, x.NodeDiedError)


class RayItems:
    """The pipeline's executor (``ItemExecutor``) on a Ray cluster: ``actors`` workers (None: one
    per CPU of the cluster, or of ``cpus``; one fewer for an offline run with
    ``driver_on_cpus``, a Ray of the driver's machine, whose driver makes items too) with
    ``depth`` items in flight each (None: the setup's ``workers``, at least 8, 16 offline:
    a worker has items queued through the driver's pauses, such as the store's checkpoints,
    which take up to a quarter of a second every few hundred items), sent ``batch`` items
    to a Ray call (None: 8 offline, where an item takes a few tens of milliseconds and each
    Ray call costs the driver and the worker a millisecond or two, so that 400 items ran
    4-8% faster on 2 cores than with 4; 1 with LMs, where an item waits on the network and
    streams back alone).

    With LMs the workers' calls go through the run's `CallLog`: ``on_calls`` is given every
    call the driver takes from it (the driver's ledger counts them), and ``store_calls`` the
    calls no item carried to the store, those the log still held when the run ended or
    stopped (a dead worker's unfinished items, the items in flight at an interrupt); without
    ``store_calls`` these are only given to ``on_calls``."""

    def __init__(self, ray: Any, setup: WorkerSetup, *, actors: int | None = None, cpus: int | None = None,
                 driver_on_cpus: bool = False, depth: int | None = None, batch: int | None = None,
                 max_attempts: int = 3,
                 on_calls: Callable[[list[LMCall]], None] | None = None,
                 store_calls: Callable[[list[LMCall]], None] | None = None) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.ray = ray
        self.setup = setup
        self.actors = actors
        self.cpus = cpus
        self.offline = not setup.lm_settings and not setup.lm_objects
        # an offline run's driver makes items itself between stores (`outputs`' ``here``): on a
        # Ray of this machine it is busy on one of the CPUs Ray counts, so one worker fewer starts
        self.driver_on_cpus = driver_on_cpus
        self.made_here = 0  # items the driver made itself (offline, given ``here``)
        self.depth = depth or max(setup.workers, 16 if self.offline else 8)
        self.batch = max(1, min(batch or (8 if self.offline else 1), self.depth))
        self.max_attempts = max_attempts
        self.on_calls = on_calls  # e.g. the driver's ledger, for its live line and its summary
        self.store_calls = store_calls  # e.g. the store's add_lm_calls for the run
        self.retried = 0
        self.workers_lost = 0
        self.slots: Any = None
        self.log: Any = None  # the run's CallLog (with LMs)
        self._untaken: list[LMCall] = []  # taken from the log in a batch with no output to carry them
        self.workers: dict[str, Any] = {}  # the live workers of the run under way, by name
        self._db_ref: Any = None
        self._spawned = 0
        self._errors = _worker_errors(ray)

    # ------------------------------------------------------------ workers

    def _worker_count(self, todo: int) -> int:
        count = self.actors or ((self.cpus or int(self.ray.cluster_resources().get("CPU", 1)) or 1)
                                - (1 if self.offline and self.driver_on_cpus else 0))
        return max(1, min(count, todo))

    def _start(self, db_ref: Any, holder: str) -> Any:
        remote = self.ray.remote(num_cpus=1, max_restarts=0, scheduling_strategy="SPREAD",
                                 max_concurrency=max(self.depth, 1))(ItemWorker)
        return remote.remote(self.setup, db_ref, self.slots, holder, self.log)

    def _db_bytes(self) -> bytes | None:
        path = self.setup.config.db_path
        if path is None:
            return None
        with open(path, "rb") as handle:
            return handle.read()

    def start(self) -> None:
        """Start the workers (and the slots of the bounded roles) now, so that their start
        overlaps whatever the driver does before the first item (opening the store); `outputs`
        starts them when this was not called. Ray starts actors in the background."""
        if self.workers:
            return
        bounds = self.setup.bounds
        if bounds:
            from trajectory2task.programs.distributed.slots import CallSlots  # its LM limits import DSPy

            self.slots = self.ray.remote(num_cpus=0)(CallSlots).options(
                name=f"t2t-call-slots-{uuid.uuid4().hex}").remote(bounds)
        if not self.offline:
            from trajectory2task.programs.distributed.call_log import start_call_log  # imports DSPy: LM runs only

            self.log = start_call_log(self.ray)
        self._db_ref = self.ray.put(self._db_bytes())
        count = self._worker_count(max(self.setup.config.n, 1))
        for k in range(count):
            holder = f"w{k}"
            self.workers[holder] = self._start(self._db_ref, holder)
        self._spawned = count

    def close(self) -> None:
        """Stop the workers, the slots and the log (`outputs` does when it ends); the calls the
        log still holds go to ``on_calls`` and ``store_calls``."""
        for worker in self.workers.values():
            self.ray.kill(worker)
        self.workers = {}
        if self.slots is not None:
            self.ray.kill(self.slots)
            self.slots = None
        if self.log is not None:  # after the workers are told to end: what they sent is in it
            from trajectory2task.programs.distributed.call_log import last_calls

            log, self.log = self.log, None
            calls, self._untaken = [*self._untaken, *last_calls(self.ray, log)], []
            if calls and self.on_calls is not None:
                self.on_calls(calls)
            if calls and self.store_calls is not None:
                self.store_calls(calls)

    # ------------------------------------------------------------ the run

    def outputs(self, run_id: str, planned: Iterable[tuple[int, Any]],
                here: Callable[[int, Any], ItemOutput] | None = None) -> Iterator[ItemOutput]:
        """Run the planned items on the workers; yield each output as it comes back (those
        back together in index order). ``here`` makes one item in this process: in an offline
        run, whenever every worker has its items in flight and no output is back, the driver
        makes the next item itself (from the start, while the workers load, and between
        stores) instead of waiting. Where an item is made changes none of its bytes."""
        ray = self.ray
        here = here if self.offline else None  # an LM item's calls go through the workers' log
        queue = iter(planned)
        first = list(islice(queue, 1))
        if not first:
            self.close()
            return
        retry: list[tuple[int, Any]] = []  # items whose worker died, sent again first
        retry.extend(first)
        self.start()
        db_ref = self._db_ref
        workers = self.workers
        load: dict[str, int] = {holder: 0 for holder in workers}
        in_flight: dict[Any, tuple[list[tuple[int, Any]], str]] = {}  # ref -> (its items, holder)
        attempts: dict[int, int] = {}
        spawned = self._spawned
        try:
            while True:
                sending = True
                while sending:  # a batch to each worker in turn, until each has ``depth`` in flight
                    sending = False
                    for holder in [h for h in workers if load[h] < self.depth]:
                        sent = _take(retry, queue, min(self.batch, self.depth - load[holder]))
                        if not sent:
                            break
                        ref = workers[holder].run_items.remote(run_id, sent)
                        in_flight[ref] = (sent, holder)
                        load[holder] += len(sent)
                        sending = True
                ready: list[Any] = []
                if here is not None:
                    if in_flight:  # what is back already
                        ready, _ = ray.wait(list(in_flight), num_returns=len(in_flight), timeout=0)
                    if not ready:
                        mine = _take(retry, queue, 1)
                        if mine:
                            self.made_here += 1
                            yield here(*mine[0])
                            continue
                if not in_flight:
                    return
                if not ready:
                    ready, rest = ray.wait(list(in_flight), num_returns=1)
                    if rest:  # and whatever else is back already
                        more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                        ready += more
                finished: list[ItemOutput] = []
                given_up: WorkerLost | None = None
                for ref in ready:
                    sent, holder = in_flight.pop(ref)
                    if holder in load:
                        load[holder] -= len(sent)
                    try:
                        finished.extend(ray.get(ref))
                    except self._errors as exc:
                        for index, target in sent:
                            attempts[index] = attempts.get(index, 0) + 1
                            if attempts[index] >= self.max_attempts:
                                given_up = given_up or WorkerLost(
                                    f"item {index} lost its Ray worker {attempts[index]} times (last: "
                                    f"{first_line(exc, 300)}); the items finished so far are stored")
                            else:
                                self.retried += 1
                                retry.append((index, target))
                        if holder in workers:  # its first failed call: replace the worker
                            self._lost(workers.pop(holder), holder)
                            del load[holder]
                            replacement = f"w{spawned}"
                            spawned += 1
                            workers[replacement], load[replacement] = self._start(db_ref, replacement), 0
                retry.sort()
                finished.sort(key=lambda o: o.item.index)
                if self.log is not None:  # these items' calls are in the log (with those of items still out)
                    self._untaken.extend(ray.get(self.log.take.remote()))
                    if finished and self._untaken:
                        finished[0].lm_calls, self._untaken = [*finished[0].lm_calls, *self._untaken], []
                for output in finished:
                    if output.lm_calls and self.on_calls is not None:
                        self.on_calls(output.lm_calls)
                    yield output
                if given_up is not None:  # after storing what came back with it
                    raise given_up
        finally:
            for ref in in_flight:
                ray.cancel(ref, force=False)
            self.close()

    def _lost(self, worker: Any, holder: str) -> None:
        self.workers_lost += 1
        self.ray.kill(worker)  # it may be only unreachable: make sure it runs nothing more
        if self.slots is not None:
            self.slots.release_holder.remote(holder)
