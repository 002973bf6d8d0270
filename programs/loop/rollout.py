"""The rollout engine: agent x simulated user x environment, judged by the verifier.

One rollout runs on its own episode of the environment (copy-on-write state, so thousands
can share one loaded database) and goes:

    user opens -> agent turn -> (tool call: run it, show the result to the agent, agent again)
                             -> (message: the user answers) -> ...

until the user's stop signal, a transfer to a human agent, the agent saying nothing, the
turn limit (agent turns), or an LM failure beyond the LM layer's retries (termination
'lm_error'). The agent may make one tool call per turn: further calls in the same turn are
answered with an error observation and not run. Tool calls with unknown names or
arguments that are not a JSON object become error observations the agent can read.

`RolloutEngine.run_many` runs rollouts concurrently on one asyncio event loop (DSPy's async
LM calls), each isolated; a rollout that crashes (a bug, not an LM error) is reported and
the batch goes on. A rollout whose user simulator or LM transport failed, or whose agent
failed before its first turn, is judged `lm_error` alone: it says nothing about the agent.
`RolloutWriter` stores finished rollouts with their verdicts, and the LM calls recorded
since the last write, in small atomic batches.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from trajectory2task.domains import Environment
from trajectory2task.programs.loop.agent import Agent, AgentReply, LMAgent
from trajectory2task.programs.lm import event_loop
from trajectory2task.programs.loop.user_sim import LMTurnError, LMUser, SimulatedUser
from trajectory2task.programs.verification.verifier import Verifier
from trajectory2task.signatures.conversation import ConversationTurn
from trajectory2task.signatures.models import Message, Rollout, Step, Task, Termination, ToolCall, Verdict

DEFAULT_MAX_TURNS = 30
ONE_CALL_PER_TURN = "Error: one tool call per turn; this call was not run. Call it again in a later turn."


def rollout_id_for(run_id: str, task_id: str, agent_model: str, trial: int) -> str:
    """A stable id per (run, task, agent, trial): a resumed run gives a redone rollout the same id."""
    key = "\x1f".join((run_id, task_id, agent_model, str(trial)))
    return "r-" + hashlib.sha1(key.encode()).hexdigest()[:24]


class RolloutJob(BaseModel):
    """One rollout to run: which task, which agent (by name), which trial."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    agent: str
    trial: int
    rollout_id: str


class RolloutResult(BaseModel):
    rollout: Rollout
    verdict: Verdict
    wall_s: float


class RolloutCrash(BaseModel):
    """A rollout that raised (not an LM error: those end as verdicts)."""

    job: RolloutJob
    error: str


class RolloutEngine:
    """Runs agents against a user model on one environment and judges every rollout."""

    def __init__(self, environment: Environment[Any], user: SimulatedUser, agents: Sequence[Agent],
                 verifier: Verifier | None = None, max_turns: int = DEFAULT_MAX_TURNS) -> None:
        if max_turns < 1:
            raise ValueError("max_turns must be at least 1")
        self.environment = environment
        self.user = user
        self.agents = {agent.name: agent for agent in agents}
        self.verifier = verifier or Verifier(environment)
        self.max_turns = max_turns

    # ------------------------------------------------------------ one rollout

    def _ends_conversation(self, tool_name: str) -> bool:
        spec = self.environment.tools.get(tool_name)
        return spec is not None and spec.ends_conversation

    def run(self, task: Task, agent: Agent | str, trial: int = 0, rollout_id: str | None = None) -> RolloutResult:
        """One rollout, on an event loop of its own (see `arun`)."""
        return event_loop.run(self.arun(task, agent, trial, rollout_id))

    async def arun(self, task: Task, agent: Agent | str, trial: int = 0,
                   rollout_id: str | None = None) -> RolloutResult:
        """One rollout. LM sessions await their calls (``areply``), so many rollouts share one
        event loop; sessions with only a synchronous ``reply`` are called directly."""
        agent = self.agents[agent] if isinstance(agent, str) else agent
        started = time.perf_counter()
        rollout_id = rollout_id or rollout_id_for("adhoc", task.id, agent.name, trial)
        episode = self.environment.episode()
        user = self.user.session(task.scenario)
        bot = agent.session(task)
        messages: list[Message] = [Message(role="system", content=agent.system_prompt())]
        spoken: list[ConversationTurn] = []  # what the user sees: words only
        steps: list[Step] = []
        termination: Termination = "max_turns"
        error: str | None = None
        side: str | None = None
        turns = 0
        call_ids: set[str] = set()
        try:
            said = await _reply(user, spoken)
            messages.append(Message(role="user", content=said.text))
            spoken.append(ConversationTurn(role="user", content=said.text))
            while True:
                if said.stop:
                    termination = "user_stop"
                    break
                if turns >= self.max_turns:
                    termination = "max_turns"
                    break
                reply = await _reply(bot, messages[1:])
                turns += 1
                if reply.tool_calls:
                    if self.run_tool_calls(episode, reply, messages, steps, call_ids):
                        termination = "transfer"
                        break
                    continue
                if not reply.content:
                    termination = "agent_stop"
                    break
                messages.append(Message(role="assistant", content=reply.content))
                spoken.append(ConversationTurn(role="agent", content=reply.content))
                said = await _reply(user, spoken)
                messages.append(Message(role="user", content=said.text))
                spoken.append(ConversationTurn(role="user", content=said.text))
        except LMTurnError as exc:
            termination = "lm_error"
            error = str(exc)[:2000]
            side = exc.side
        usage = user.usage() + bot.usage()
        end_state_hash = episode.state_hash()
        rollout = Rollout(id=rollout_id, task_id=task.id, agent_model=agent.name, user_model=self.user.name,
                          trial=trial, messages=messages, steps=steps, end_state_hash=end_state_hash, usage=usage,
                          termination=termination, error=error)
        verdict = self.verifier.judge(task, steps, messages, end_state_hash=end_state_hash, rollout_id=rollout_id,
                                      termination=termination)
        if side is not None and (side != "agent" or turns == 0 and not steps):
            # the user simulator or the transport failed, or the agent never got a turn in:
            # nothing here judges the agent, so no end-state or action reasons are added
            verdict = verdict.model_copy(update={"reasons": ["lm_error"], "details": [
                f"not scored for the agent: the {'user simulator' if side == 'user' else side} failed"
                + ("" if side != "agent" else " before the agent's first turn")]})
        return RolloutResult(rollout=rollout, verdict=verdict, wall_s=time.perf_counter() - started)

    def run_tool_calls(self, episode: Any, reply: AgentReply, messages: list[Message], steps: list[Step],
                        used_ids: set[str]) -> bool:
        """Record the assistant's tool-call message, run its first call, answer every call
        (what a rollout and a stepped episode, ``trajectory2task.programs.loop.episode``, do
        with one agent turn's calls). Returns whether the call handed the user to a human agent."""
        recorded: list[ToolCall] = []
        for call in reply.tool_calls:
            # the transcript needs ids that tool results can answer: fill in missing or reused ones
            call_id = call.id if call.id and call.id not in used_ids else f"call_{len(used_ids) + 1}"
            used_ids.add(call_id)
            recorded.append(ToolCall(name=call.name, arguments=call.arguments, id=call_id))
        messages.append(Message(role="assistant", content=reply.content, tool_calls=recorded))
        transferred = False
        for index, (call, record) in enumerate(zip(reply.tool_calls, recorded)):
            if index > 0:
                observation = ONE_CALL_PER_TURN
            elif call.arguments_error is not None:
                observation = f"Error: invalid arguments for {call.name}: {call.arguments_error}"
                steps.append(Step(call=record, observation=observation, error=True))
            else:
                result = episode.call(call.name, call.arguments)
                observation = result.output
                steps.append(Step(call=record, observation=observation, error=result.error))
                transferred = self._ends_conversation(call.name) and not result.error
            messages.append(Message(role="tool", content=observation, tool_call_id=record.id))
        return transferred

    def runner(self, agent: str) -> Callable[[Task], tuple[Rollout, Verdict]]:
        """`task -> (rollout, verdict)` with one agent: the shape metrics take a reference
        rollout in (e.g. `trajectory2task.optimize.metrics.check_task(..., run_rollout=engine.runner("oracle"))`)."""

        def run(task: Task) -> tuple[Rollout, Verdict]:
            result = self.run(task, agent)
            return result.rollout, result.verdict

        return run

    # ------------------------------------------------------------ many rollouts

    def warm(self, tasks: Iterable[Task]) -> None:
        """Replay every task's gold once up front, so that worker threads only read the cache."""
        for task in tasks:
            self.verifier.replay_gold(task)

    def run_many(self, tasks: dict[str, Task], jobs: Sequence[RolloutJob], concurrency: int = 8,
                 on_result: Callable[[RolloutResult], None] | None = None,
                 ) -> tuple[list[RolloutResult], list[RolloutCrash]]:
        """Run jobs with at most `concurrency` rollouts in flight, all on one event loop in
        this thread (DSPy's async LM calls; no thread per rollout). `on_result` is called
        here as each rollout finishes (store it there). A Ctrl-C loses only the rollouts in
        flight. To go past one process (one loop is bound by its CPU per LM call, see
        docs/closed-loop.md), run the jobs on Ray actors:
        `trajectory2task.programs.distributed.rollouts.run_engine_on_ray`."""
        return event_loop.run(self.arun_many(tasks, jobs, concurrency, on_result))

    async def arun_many(self, tasks: dict[str, Task], jobs: Sequence[RolloutJob], concurrency: int = 8,
                        on_result: Callable[[RolloutResult], None] | None = None,
                        ) -> tuple[list[RolloutResult], list[RolloutCrash]]:
        self.warm(tasks[j.task_id] for j in jobs)
        results: list[RolloutResult] = []
        crashes: list[RolloutCrash] = []
        queue = list(reversed(jobs))
        pending: dict[asyncio.Task[RolloutResult], RolloutJob] = {}
        try:
            while queue or pending:
                while queue and len(pending) < max(1, concurrency):
                    job = queue.pop()
                    coro = self.arun(tasks[job.task_id], job.agent, job.trial, job.rollout_id)
                    pending[asyncio.ensure_future(coro)] = job
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    job = pending.pop(future)
                    exc = future.exception()
                    if exc is not None:  # a bug in one rollout must not stop the batch
                        if not isinstance(exc, Exception):
                            raise exc
                        crashes.append(RolloutCrash(job=job, error=f"{type(exc).__name__}: {exc}"))
                        continue
                    result = future.result()
                    results.append(result)
                    event_loop.result_kept()
                    if on_result is not None:
                        on_result(result)
        finally:
            for future in pending:
                future.cancel()
        return results, crashes


async def _reply(session: Any, conversation: Any) -> Any:
    """A session's next reply: awaited when it can (``areply``), else called."""
    areply = getattr(session, "areply", None)
    if areply is not None:
        return await areply(conversation)
    return session.reply(conversation)


def recording_part(part: Any, role: str, ledger: Any, *, built_too: bool = False) -> Any:
    """An LM agent or LM user (``role`` "agent" or "user") whose plain ``dspy.LM`` records its
    calls in ``ledger`` (a `trajectory2task.programs.lm.accounting.CallLedger`): a shallow
    copy holding a recording copy of the LM. Any other part, or one whose LM t2t built for a
    role (it records into its own ledger), is returned as it is; with ``built_too`` the latter
    records in ``ledger`` as well."""
    if not isinstance(part, (LMAgent, LMUser)):
        return part
    from trajectory2task.programs.lm.accounting import recording

    lm = recording(part.lm, role, ledger, built_too=built_too)
    if lm is part.lm:  # an LM built for a role, left to its own ledger
        return part
    copied = copy.copy(part)
    copied.lm = lm
    return copied


def records_plain_lm(part: Any) -> bool:
    """Whether ``part`` is an LM agent or LM user on a plain ``dspy.LM`` (see `recording_part`)."""
    if not isinstance(part, (LMAgent, LMUser)):
        return False
    from trajectory2task.programs.lm.accounting import role_of

    return role_of(part.lm) is None


class RolloutWriter:
    """Stores rollouts and their verdicts in atomic batches (`TaskStore.add_rollouts`).

    A batch is written when it holds `batch_size` rollouts or `max_delay_s` passed since the
    last write (the first result is written at once), and on `flush()`. Each write is one
    transaction of ~15 ms here whatever its size, which would cost the rollout threads GIL
    time if done per rollout. A killed process loses at most the unwritten batch, and a
    batch is never half written; a resumed run redoes exactly the rollouts not stored.
    """

    def __init__(self, store: Any, run_id: str, batch_size: int = 64, max_delay_s: float = 2.0,
                 ledger: Any = None) -> None:
        self.store = store
        self.run_id = run_id
        self.ledger = ledger  # a trajectory2task.programs.lm.accounting.CallLedger: its rows go with each batch
        self.batch_size = batch_size
        self.max_delay_s = max_delay_s
        self.pending: list[RolloutResult] = []
        self.written = 0
        self._last = float("-inf")  # the first result is written at once: a run shows progress early

    def add(self, result: RolloutResult) -> None:
        self.pending.append(result)
        if len(self.pending) >= self.batch_size or time.monotonic() - self._last >= self.max_delay_s:
            self.flush()

    def flush(self) -> None:
        self._last = time.monotonic()
        calls = self.ledger.take() if self.ledger is not None else []
        if not self.pending and not calls:
            return
        batch, self.pending = self.pending, []
        with self.store.transaction("add_rollouts"):
            self.store.add_rollouts(self.run_id, [r.rollout for r in batch], [r.verdict for r in batch])
            if calls:
                self.store.add_lm_calls(self.run_id, calls)
        self.written += len(batch)
