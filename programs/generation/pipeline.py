"""The generation pipeline: explore -> write -> adapt -> static verify -> sink.

A run works through items 0..n-1. Item i explores one trajectory from a seed derived from
(run seed, i) alone, so a resumed run produces the same items as an uninterrupted one.
A valid trajectory becomes a general task (the writer) and one adapted task per chosen
condition (the intent adaptation); every task gets a static verdict. Each finished item, done or
failed, goes to the sink the caller provides (``ItemSink``; the command line's is the task
store's, ``trajectory2task.store.failures.StoreSink``, one transaction per item), so an interrupted run
loses only the items in flight, and ``resume`` skips the recorded ones.

Items run on one asyncio event loop: a program with async methods (``aexplore``, ``awrite``,
``aadapt``: the LM programs, on DSPy's ``acall``) is awaited, so ``workers`` items wait on the
network at once; the offline baselines are plain calls that never yield, so an offline run does
the items one after another in index order, as it always did.

Past one process. With an ``executor`` (``ItemExecutor``; the Ray one is
``trajectory2task.programs.distributed.generate_ray.RayItems``) the items run elsewhere, each on a
pipeline of the same config, and come back as ``ItemOutput`` with the LM calls made for them;
this process still stores every item itself, one transaction each. An item depends on
(run seed, index) alone, so where it ran does not change a byte of it.

Faults. The LM layer retries failing calls (429, 5xx, timeouts); the programs re-ask when
output does not parse. What still fails is recorded on the item with its reason
(``lm_error``), and the run goes on. So is an exception raised inside a function of the
domain's kit (``kit_error``, one line naming the function): in exploration, writing or
adapting it fails the whole item, and none of the item's tasks is kept (a kit that raises is a
bug in the domain, not a condition the item cannot take; an LM error while adapting rejects only
that condition). Every
LM call, failed or not, is recorded once, by the LM's ledger callback
(``trajectory2task.programs.lm.accounting``), not here.

Verified means lint-clean: a task with a finding of
``trajectory2task.programs.verification.lint`` gets a failing static verdict (``lint``, each
finding in the details), whatever the other checks found.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import hashlib
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from trajectory2task.domains import Environment
from trajectory2task.domains.kit import KitFault, guarded_kit
from trajectory2task.programs.lm import event_loop
from trajectory2task.programs.lm.errors import first_line
from trajectory2task.programs.verification.lint import lint_task, private_ids
from trajectory2task.programs.verification.verifier import Verifier
from trajectory2task.signatures.models import (
    CONDITIONS,
    Condition,
    GenerationItem,
    LMCall,
    Provenance,
    Task,
    Trajectory,
    Verdict,
)

# the role names runs, programs files and the command line store and take; "adapter" is the
# intent adaptation's role, a name kept so that stored runs resume and --adapter-lm works
GENERATION_ROLES = ("explorer", "writer", "adapter")


# ---------------------------------------------------------------- program contracts


class ItemSink(Protocol):
    """Where finished items go, and where a resumed run reads which are done."""

    def recorded(self, run_id: str) -> list[GenerationItem]: ...

    def add(self, run_id: str, item: GenerationItem, trajectories: Sequence[Trajectory], tasks: Sequence[Task],
            verdicts: Sequence[Verdict], lm_calls: Sequence[LMCall]) -> None: ...

    def finish(self, run_id: str, status: str) -> None: ...


class ItemExecutor(Protocol):
    """Runs items away from this process and yields each finished one (in any order), with
    the LM calls made for it in ``ItemOutput.lm_calls``. ``planned`` gives (index, target):
    the coverage target is picked here, where the store is."""

    retried: int  # items run again because the worker running them was lost

    def outputs(self, run_id: str, planned: Iterable[tuple[int, Any]],
                here: Callable[[int, Any], ItemOutput] | None = None) -> Iterator[ItemOutput]:
        """``here(index, target)`` makes an item in this process, for an executor that would
        otherwise wait idle."""


class ExplorerProgram(Protocol):
    def explore(self, env: Environment[Any], seed: int, trajectory_id: str | None = None,
                provenance: Provenance | None = None, target_write: str | None = None,
                goal: str | None = None) -> Any: ...


class WriterProgram(Protocol):
    def write(self, trajectory: Trajectory, env: Environment[Any], provenance: Provenance | None = None) -> Any: ...


class AdaptationProgram(Protocol):
    def adapt(self, task: Task, trajectory: Trajectory, condition: str, env: Environment[Any], seed: int,
              prefer_write: str | None = None) -> Any: ...


# ---------------------------------------------------------------- configuration and results


class GenerationConfig(BaseModel):
    """Everything that determines a run's items; recorded as the run's config."""

    domain: str = "retail"
    # the module the domain was loaded from ('trajectory2task.domains.retail', 'mypkg.module'): --resume loads it again
    domain_module: str | None = None
    n: int = Field(ge=1, description="items to explore; each yields a general task and its adaptations")
    conditions: list[Condition] = Field(default_factory=lambda: list(CONDITIONS))
    seed: int = 0
    db_path: str | None = None  # None: generated with generate_db(seed, db_users)
    db_users: int = 500
    db_initial_hash: str
    source: Literal["baseline", "lm"] = "baseline"
    roles: dict[str, str] = Field(default_factory=dict)  # role -> 'baseline' or the LM model string
    programs: str | None = None  # compiled program state name loaded from the store
    guided: bool = False  # coverage-guided (trajectory2task.optimize.coverage): items depend on the store's state
    id_prefix: str = ""


class ConditionSummary(BaseModel):
    """One row of a run's summary: what became of the run's items in one condition."""

    condition: str
    explored: int  # items explored
    valid: int  # items with a valid trajectory
    tasks: int  # tasks made in this condition
    verified: int  # of those, passing static verification

    @property
    def rate(self) -> float:
        return self.verified / self.explored if self.explored else 0.0


class RunSummary(BaseModel):
    run_id: str
    items: int
    failed: dict[str, int] = Field(default_factory=dict)  # reason -> items
    conditions: list[ConditionSummary] = Field(default_factory=list)
    rejected: dict[str, dict[str, int]] = Field(default_factory=dict)  # condition -> rejection reason -> items
    retried: int = 0  # items run again after the worker running them was lost (an ``ItemExecutor``'s)


class ItemOutput(BaseModel):
    """One finished item, ready to be stored."""

    item: GenerationItem
    trajectory: Trajectory | None = None
    tasks: list[Task] = Field(default_factory=list)
    verdicts: list[Verdict] = Field(default_factory=list)
    # the LM calls recorded with this item where it ran away from the storing process (an
    # ``ItemExecutor``'s worker): its own and those of items in flight beside it there
    lm_calls: list[LMCall] = Field(default_factory=list)


def item_seed(run_seed: int, index: int) -> int:
    """The seed of item ``index``: a function of the run seed and the index only."""
    digest = hashlib.blake2b(f"{run_seed}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def condition_seed(seed: int, condition: str) -> int:
    digest = hashlib.blake2b(f"{seed}/{condition}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def id_prefix(config: GenerationConfig, run_id: str | None) -> str:
    """Prefix of the run's trajectory and task ids.

    Offline runs are reproducible: the same domain, database, seed and programs give the
    same ids, so a repeated run re-stores the same items under the same ids. LM output is
    not reproducible, so an LM run's ids also depend on its run id.
    """
    key = [config.domain, config.db_initial_hash, str(config.seed), config.source,
           repr(sorted(config.roles.items())), config.programs or ""]
    if config.source == "lm" or config.guided:
        key.append(run_id or "")
    return f"{config.domain}-{hashlib.blake2b('|'.join(key).encode(), digest_size=5).hexdigest()}"


def _lm_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean 'the LM failed us' (after retries), not a bug in our code."""
    from trajectory2task.programs.generation.exploration import ExplorationError
    from trajectory2task.programs.generation.writing import WriterError

    if "dspy" not in sys.modules:
        # no DSPy program was built (each imports DSPy), so no DSPy error can come: an offline
        # run, and a Ray worker's start, need not pay DSPy's import for its error types
        return (ExplorationError, WriterError)
    from dspy.utils.exceptions import AdapterParseError, LMError

    # the adaptation raises no error type of its own: its LM's failures are DSPy's
    return (LMError, AdapterParseError, ExplorationError, WriterError)


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc, 300)}"


# ---------------------------------------------------------------- the pipeline


class GenerationPipeline:
    """Explore -> write -> adapt -> static verify -> sink, item by item.

    ``lms`` maps a role to the ``dspy.LM`` its program uses (for usage records; the
    programs must already be bound to them, e.g. with ``module.set_lm``). ``after_item`` is
    called with each item's record right after it is committed.
    """

    def __init__(self, env: Environment[Any], sink: ItemSink, config: GenerationConfig, *,
                 explorer: ExplorerProgram, writer: WriterProgram, adaptation: AdaptationProgram | None,
                 program_versions: dict[str, str] | None = None, lms: dict[str, Any] | None = None,
                 workers: int = 1,
                 after_item: Callable[[GenerationItem], None] | None = None,
                 targets: Callable[[int], Any] | None = None, retry_failed: bool = False,
                 executor: ItemExecutor | None = None) -> None:
        self.env = _with_guarded_kit(env)
        self.sink = sink
        self.config = config
        self.explorer = explorer
        self.writer = writer
        self.adaptation = adaptation
        self.program_versions = program_versions or {}
        self.lms = lms or {}
        self.workers = max(1, workers)
        self.after_item = after_item
        # coverage-guided runs (trajectory2task.optimize.coverage): item index -> a target with .tool (the
        # write to make first) and .goal (recorded as the trajectory's goal), or None
        self.targets = targets
        self.retry_failed = retry_failed  # a resumed run also redoes the items that failed on the LM
        self.executor = executor  # None: the items run here, on this process's event loop
        # mutants and premises too: a kept task fails every plausible wrong agent and claims only truths
        self.verifier = Verifier(env, discriminative=True)
        self._private_ids: frozenset[str] | None = None
        self._errors = _lm_errors()
        self._usage_lock = threading.Lock()
        self._recorder: Any = None
        if self.lms:
            from trajectory2task.programs.lm.accounting import UsageRecorder

            self._recorder = UsageRecorder()

    # ------------------------------------------------------------ one item

    def generate_item(self, run_id: str, index: int) -> ItemOutput:
        """`agenerate_item` on an event loop of its own."""
        return event_loop.run(self.agenerate_item(run_id, index))

    async def agenerate_item(self, run_id: str, index: int, target: Any = None) -> ItemOutput:
        """Explore, write, adapt and verify item ``index``; never raises for LM failures.
        ``target``: the coverage target picked for it elsewhere (else ``targets`` picks it)."""
        config = self.config
        seed = item_seed(config.seed, index)
        provenance = Provenance(source=config.source, run_id=run_id, program_versions=self.program_versions,
                                seed=seed)
        trajectory_id = f"{config.id_prefix}-{index:05d}"

        if target is None:
            target = self.target(index)
        steer = {"target_write": target.tool, "goal": target.goal} if target is not None else {}
        try:
            explored = await _call(self.explorer, "explore", self.env, seed, trajectory_id=trajectory_id, **steer,
                                   provenance=provenance.model_copy(update={"trajectory_id": trajectory_id}))
        except self._errors as exc:
            return self._failed(index, seed, "explore", "lm_error", _first_line(exc), None)
        except KitFault as exc:
            return self._failed(index, seed, "explore", "kit_error", str(exc), None)
        trajectory = explored.trajectory
        counts = {"proposals": explored.proposals, "dropped_calls": len(explored.dropped)}
        if trajectory is None:
            return self._failed(index, seed, "explore", "no_trajectory", explored.rejected_reason or "", None,
                                **counts)
        try:
            written = await _call(self.writer, "write", trajectory, self.env, provenance.model_copy(
                update={"trajectory_id": trajectory.id}))
        except self._errors as exc:
            return self._failed(index, seed, "write", "lm_error", _first_line(exc), trajectory, **counts)
        except KitFault as exc:
            return self._failed(index, seed, "write", "kit_error", str(exc), trajectory, **counts)
        general = written.task
        if general is None:
            return self._failed(index, seed, "write", "writer_rejected", written.rejected_reason or "", trajectory,
                                **counts)
        tasks: list[Task] = []
        rejected: dict[str, str] = {}
        if "general" in config.conditions:
            tasks.append(general)
        for condition in config.conditions:
            if condition == "general":
                continue
            if self.adaptation is None:
                rejected[condition] = "no adaptation program"
                continue
            adapted = None
            try:  # the LM adaptation re-asks a wording that does not parse itself
                prefer = target.tool if target is not None and target.condition == condition else None
                adapted = await _call(self.adaptation, "adapt", general, trajectory, condition, self.env,
                                      condition_seed(seed, condition), prefer_write=prefer)
            except self._errors as exc:
                rejected[condition] = f"lm_error: {_first_line(exc)}"
            except KitFault as exc:
                return self._failed(index, seed, "adapt", "kit_error", str(exc), trajectory, **counts)
            if adapted is None:
                continue
            if adapted.task is None:
                detail = getattr(adapted, "detail", None)
                rejected[condition] = (adapted.rejected_reason or "rejected") + (f": {detail}" if detail else "")
            else:
                tasks.append(adapted.task)
        tasks = [self._linted(t) for t in tasks]
        verdicts = [_lint_clean(t, self.verifier.verify_task(t)) for t in tasks]
        item = GenerationItem(index=index, seed=seed, status="done", trajectory_id=trajectory.id,
                              general_task_id=general.id, tasks={t.condition: t.id for t in tasks},
                              verified={t.condition: v.passed for t, v in zip(tasks, verdicts)},
                              rejected=rejected, **counts)
        return ItemOutput(item=item, trajectory=trajectory, tasks=tasks, verdicts=verdicts)

    def target(self, index: int) -> Any:
        """The coverage target of item ``index`` (None when the run is not guided)."""
        return self.targets(index) if self.targets is not None else None

    def _linted(self, task: Task) -> Task:
        """The task with its text findings recorded (``trajectory2task.programs.verification.lint``)."""
        if self._private_ids is None:
            self._private_ids = private_ids(self.env)
        return task.model_copy(update={"lint": lint_task(task, self._private_ids)})

    @staticmethod
    def _failed(index: int, seed: int, stage: Literal["explore", "write", "adapt"], reason: Any, detail: str,
                trajectory: Trajectory | None, **counts: int) -> ItemOutput:
        item = GenerationItem(index=index, seed=seed, status="failed", stage=stage, reason=reason, detail=detail,
                              trajectory_id=trajectory.id if trajectory else None, **counts)
        return ItemOutput(item=item, trajectory=trajectory)

    def drain_usage(self) -> list[LMCall]:
        """The LM calls of ``lms`` recorded since the last drain (each call once)."""
        if self._recorder is None:
            return []
        out = []
        with self._usage_lock:
            for role, lm in self.lms.items():
                out.extend(self._recorder.drain(lm, role))
        return out

    def _store(self, run_id: str, output: ItemOutput) -> None:
        # the calls recorded since the last item: this one's, and those of items still in flight
        # (here, or beside it on the worker that ran it)
        self.sink.add(run_id, output.item, [output.trajectory] if output.trajectory else [], output.tasks,
                      output.verdicts, [*output.lm_calls, *self.drain_usage()])

    def _finish_item(self, run_id: str, output: ItemOutput,
                     progress: Callable[[GenerationItem], None] | None) -> None:
        self._store(run_id, output)
        event_loop.result_kept()
        if progress is not None:
            progress(output.item)
        if self.after_item is not None:
            self.after_item(output.item)

    # ------------------------------------------------------------ the run

    def pending_items(self, run_id: str) -> Iterator[int]:
        """Indexes not yet recorded (with ``retry_failed``, also those that failed on the LM; the
        newest record of an index wins), produced lazily: --n may be far larger than memory."""
        done = {item.index for item in self.sink.recorded(run_id)
                if not (self.retry_failed and item.status == "failed" and item.reason == "lm_error")}
        return (i for i in range(self.config.n) if i not in done)

    def run(self, run_id: str, progress: Callable[[GenerationItem], None] | None = None) -> RunSummary:
        """Generate every item of the run not yet recorded, then summarize what the sink holds.

        The run row must exist (``start_run``). On KeyboardInterrupt the run is marked
        'interrupted' and the interrupt propagates; committed items stay.
        """
        try:
            if self.executor is None:
                event_loop.run(self._run_items(run_id, self.pending_items(run_id), progress))
            else:
                planned = ((index, self.target(index)) for index in self.pending_items(run_id))
                # one loop for the items the executor has this process make (offline, between stores)
                with event_loop.frozen_heap(), asyncio.Runner(loop_factory=event_loop.InlineHandoffLoop) as loop:

                    def here(index: int, target: Any) -> ItemOutput:
                        return loop.run(self.agenerate_item(run_id, index, target))

                    for output in self.executor.outputs(run_id, planned, here):
                        self._finish_item(run_id, output, progress)
        except KeyboardInterrupt:
            self.sink.finish(run_id, "interrupted")
            raise
        self.sink.finish(run_id, "finished")
        summary = summarize(run_id, self.sink.recorded(run_id), self.config.conditions)
        summary.retried = self.executor.retried if self.executor is not None else 0
        return summary

    async def _run_items(self, run_id: str, todo: Iterable[int],
                         progress: Callable[[GenerationItem], None] | None) -> None:
        """Keep ``workers`` items in flight on this loop; store each as it finishes (this loop's
        thread is the only writer), those finishing together in index order."""
        queue = iter(todo)
        pending: set[asyncio.Task[ItemOutput]] = set()
        try:
            while True:
                for index in islice(queue, self.workers - len(pending)):
                    pending.add(asyncio.ensure_future(self.agenerate_item(run_id, index)))
                if not pending:
                    break
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: f.result().item.index):
                    self._finish_item(run_id, future.result(), progress)
        finally:
            for future in pending:
                future.cancel()


def generation_programs(lms: dict[str, Any]) -> dict[str, Any]:
    """The explorer, writer and intent adaptation: the DSPy program bound to its LM for each role
    in ``lms``, the seeded offline baseline for the others."""
    from trajectory2task.programs.generation.adapting import BaselineAdaptation
    from trajectory2task.programs.generation.exploration import BaselineExplorer
    from trajectory2task.programs.generation.writing import BaselineWriter

    programs: dict[str, Any] = {"explorer": BaselineExplorer(), "writer": BaselineWriter(),
                                "adapter": BaselineAdaptation()}
    # the DSPy programs only for the roles an LM plays: an offline run imports no DSPy
    if "explorer" in lms:
        from trajectory2task.programs.generation.explorer import Explorer

        programs["explorer"] = Explorer()
    if "writer" in lms:
        from trajectory2task.programs.generation.writer import TaskWriter

        programs["writer"] = TaskWriter()
    if "adapter" in lms:
        from trajectory2task.programs.generation.adaptation import IntentAdaptation

        programs["adapter"] = IntentAdaptation()
    for role, lm in lms.items():
        programs[role].set_lm(lm)
    return programs


def _with_guarded_kit(env: Environment[Any]) -> Environment[Any]:
    """The environment with its domain's kit guarded (``trajectory2task.domains.kit.guarded_kit``):
    the same loaded database and tools, a kit whose faults fail one item, not the run."""
    kit = env.domain.kit
    if kit is None:
        return env
    guarded = copy.copy(env)  # shares the loaded database: episodes and hashes are the same
    guarded.domain = dataclasses.replace(env.domain, kit=guarded_kit(kit))
    return guarded


def _lint_clean(task: Task, verdict: Verdict) -> Verdict:
    """The static verdict, failed (``lint``) when the task has a lint finding: verified means
    that the text is clean too."""
    if not task.lint:
        return verdict
    findings = [f"lint: {f.rule} in {f.field}: {f.excerpt}" for f in task.lint]
    return verdict.model_copy(update={"passed": False, "reasons": [*verdict.reasons, "lint"],
                                      "details": [*verdict.details, *findings]})


async def _call(program: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    """``program.a<method>`` awaited where the program has it (DSPy's async path), else ``program.<method>``."""
    asynchronous = getattr(program, "a" + method, None)
    if asynchronous is not None:
        return await asynchronous(*args, **kwargs)
    return getattr(program, method)(*args, **kwargs)


def summarize(run_id: str, items: Sequence[GenerationItem], conditions: Sequence[str]) -> RunSummary:
    """Per-condition counts of a run, from its item records."""
    failed: dict[str, int] = {}
    for item in items:
        if item.status == "failed" and item.reason:
            failed[item.reason] = failed.get(item.reason, 0) + 1
    valid = sum(1 for item in items if item.trajectory_id)
    rejected: dict[str, dict[str, int]] = {}
    for item in items:
        for condition, why in item.rejected.items():
            reason = why.split(":")[0]
            counts = rejected.setdefault(condition, {})
            counts[reason] = counts.get(reason, 0) + 1
    rows = [ConditionSummary(condition=c, explored=len(items), valid=valid,
                             tasks=sum(1 for item in items if c in item.tasks),
                             verified=sum(1 for item in items if item.verified.get(c)))
            for c in conditions]
    return RunSummary(run_id=run_id, items=len(items), failed=failed, conditions=rows, rejected=rejected)

