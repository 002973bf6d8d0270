"""The simulated user: an LM program (`UserSimulator`) and its offline baseline (`ScriptedUser`).

Both play one task's `UserScenario` and nothing else: a session is opened with the scenario
only, so gold actions and evaluation criteria cannot reach the user's side. Both see the
conversation as spoken turns (`ConversationTurn`): the agent's tool calls and results stay
hidden from the user, as they are from a real customer.

A user ends the conversation by putting `STOP_SIGNAL` in a message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal, Protocol

import dspy
from pydantic import BaseModel

from trajectory2task.domains.runtime import ToolSpec
from trajectory2task.signatures.conversation import STOP_SIGNAL, ConversationTurn, SimulateUser
from trajectory2task.signatures.models import TokenUsage, UserScenario

SCRIPTED_USER_NAME = "scripted"


class UserReply(BaseModel):
    """One user message; `stop` when it carries the stop signal."""

    text: str
    stop: bool = False


FailureSide = Literal["agent", "user", "transport"]


class LMTurnError(RuntimeError):
    """An LM call of the user or the agent failed beyond the LM layer's retries, or its
    output could not be used. The rollout ends with termination 'lm_error'.

    ``side`` says whose failure it is: ``agent`` (the agent's output was unusable),
    ``user`` (the simulator's was), ``transport`` (the call itself failed: server down,
    timeout, 5xx, context overflow). Only the first counts against the agent. The message
    starts with ``transport:`` for the last, so the stored rollout error tells the side.
    """

    def __init__(self, message: str, side: FailureSide = "agent") -> None:
        super().__init__(message)
        self.side: FailureSide = side


def turn_error(who: str, side: FailureSide, exc: BaseException) -> LMTurnError:
    """The `LMTurnError` for an exception raised by a turn's program call."""
    from dspy.utils.exceptions import LMError

    from trajectory2task.programs.lm.errors import error_kind

    if isinstance(exc, LMError):
        return LMTurnError(f"transport: {who}: {error_kind(exc)}: {type(exc).__name__}: {exc}", "transport")
    return LMTurnError(f"{who}: {type(exc).__name__}: {exc}", side)


def failure_side(error: str | None) -> FailureSide | None:
    """The side of a stored rollout error (see `LMTurnError`)."""
    if not error:
        return None
    if error.startswith("transport:"):
        return "transport"
    return "user" if error.startswith("user simulator:") else "agent"


class UserSession(Protocol):
    def reply(self, conversation: Sequence[ConversationTurn]) -> UserReply: ...

    async def areply(self, conversation: Sequence[ConversationTurn]) -> UserReply: ...

    def usage(self) -> TokenUsage: ...


class SimulatedUser(Protocol):
    """A user model: `session(scenario)` starts one conversation."""

    name: str

    def session(self, scenario: UserScenario) -> UserSession: ...


def reply_of(text: str) -> UserReply:
    return UserReply(text=text, stop=STOP_SIGNAL in text)


# ============================================================================ LM program


class UserSimulator(dspy.Module):
    """One user turn from the scenario and the spoken conversation (dspy program)."""

    def __init__(self) -> None:
        super().__init__()
        self.respond = dspy.Predict(SimulateUser)

    def forward(self, scenario: UserScenario, conversation: Sequence[ConversationTurn]) -> dspy.Prediction:
        return self.respond(scenario=scenario, conversation=list(conversation))

    async def aforward(self, scenario: UserScenario, conversation: Sequence[ConversationTurn]) -> dspy.Prediction:
        return await self.respond.acall(scenario=scenario, conversation=list(conversation))


class LMUser:
    """A `SimulatedUser` backed by a `UserSimulator` program and a `dspy.LM`.

    Each session calls a private copy of the LM (`lm.copy()`: same client, own history) so
    that tokens and cost add up per rollout even when many rollouts share the program.
    """

    def __init__(self, lm: Any, program: UserSimulator | None = None, name: str | None = None) -> None:
        self.lm = lm
        self.program = program or UserSimulator()
        self.name = name or str(getattr(lm, "model", "lm"))

    def session(self, scenario: UserScenario) -> _LMUserSession:
        return _LMUserSession(self.program, self.lm.copy(), scenario)


class _LMUserSession:
    def __init__(self, program: UserSimulator, lm: Any, scenario: UserScenario) -> None:
        self.program = program
        self.lm = lm
        self.scenario = scenario

    def reply(self, conversation: Sequence[ConversationTurn]) -> UserReply:
        try:
            with dspy.context(lm=self.lm, warn_on_type_mismatch=False):
                prediction = self.program(scenario=self.scenario, conversation=conversation)
        except Exception as exc:  # the LM boundary: retries already happened inside dspy.LM
            raise turn_error("user simulator", "user", exc) from exc
        return self._reply_of(prediction)

    async def areply(self, conversation: Sequence[ConversationTurn]) -> UserReply:
        try:
            with dspy.context(lm=self.lm, warn_on_type_mismatch=False):
                prediction = await self.program.acall(scenario=self.scenario, conversation=conversation)
        except Exception as exc:
            raise turn_error("user simulator", "user", exc) from exc
        return self._reply_of(prediction)

    @staticmethod
    def _reply_of(prediction: Any) -> UserReply:
        text = (prediction.message or "").strip()
        if not text:
            raise LMTurnError("user simulator: the LM returned an empty message", "user")
        return reply_of(text)

    def usage(self) -> TokenUsage:
        from trajectory2task.programs.lm.accounting import usage_of

        return usage_of(self.lm)


# ============================================================================ offline baseline

_SECOND_TO_FIRST = [
    (r"\byou are\b", "I am"), (r"\byou're\b", "I'm"), (r"\byou've\b", "I've"), (r"\byou'd\b", "I'd"),
    (r"\byou'll\b", "I'll"), (r"\byou were\b", "I was"), (r"\byourself\b", "myself"), (r"\byours\b", "mine"),
    (r"\byour\b", "my"), (r"\byou\b", "I"),
]
_SECOND_TO_FIRST_RE = [(re.compile(p, re.IGNORECASE), r) for p, r in _SECOND_TO_FIRST]


def first_person(text: str) -> str:
    """Rewrite scenario prose ("You want to return your lamp") as the user's own words."""
    out = text.strip()
    for pattern, replacement in _SECOND_TO_FIRST_RE:
        out = pattern.sub(replacement, out)
    return out[:1].upper() + out[1:] if out else out


def _has(text: str, words: Sequence[str]) -> bool:
    return any(w in text for w in words)


# Asking who the user is, in any domain; the domain's own words come from identity_cues.
_IDENTITY = ("identify", "authenticate", "verify your identity", "who you are", "locate your account",
             "find your account")


def identity_cues(tools: Iterable[ToolSpec]) -> tuple[str, ...]:
    """What an agent asking who the user is says, read from the tools declared `authenticates`:
    each of their parameters as words ('member_no' -> 'member no') and 'your' + its last
    word ('your name'), after the domain-general phrases."""
    cues = list(_IDENTITY)
    for spec in tools:
        if spec.authenticates is None:
            continue
        for parameter in spec.arguments_model.model_fields:
            words = parameter.replace("_", " ").strip().lower()
            if words:
                cues += [words, f"your {words.split()[-1]}"]
    return tuple(dict.fromkeys(cues))


_CONFIRM = ("confirm", "yes/no", "(yes", "shall i", "should i proceed", "would you like me to proceed",
            "do you want me to", "like me to go ahead", "proceed?", "go ahead?")
_REFUSAL = ("cannot", "can't", "can not", "unable", "not able", "not possible", "not allowed", "not permitted",
            "against our policy", "against the policy", "i'm afraid", "unfortunately", "sorry")
_TRANSFER = ("transfer", "human agent")
_DONE = ("has been", "have been", "successfully", "is now", "all done", "completed", "processed")
_DETAILS_TRIGGER = ("list", "detail", "option", "show", "tell", "present", "summar", "found", "look")


class ScriptedUserSettings(BaseModel):
    """Knobs of the scripted user (part of what a sweep may tune)."""

    max_insist: int = 1  # how many times the user pushes back on a refusal before giving up
    max_idle: int = 3  # agent messages in a row the script has no answer to before it gives up


class ScriptedUser:
    """The offline user simulator: answers from the scenario's fields by fixed rules.

    Deterministic; no LM. The rules, in order, for each agent message:

    1. the agent transfers the user to a human: stop;
    2. the agent asks who the user is (a question with one of the `identity_cues` of the
       domain's authenticating tools): the scenario's `known_info`;
    3. a changing scenario reaches its change point: `revised_request`. The point is read
       from `change_trigger`: a trigger about confirming fires when the agent asks for
       confirmation; a trigger about the agent listing, showing or finding details fires on
       the first agent message that is not an identity question; anything else fires on
       the confirmation request;
    4. the agent asks for confirmation: yes;
    5. the agent asks whether there is anything else: no, stop;
    6. the agent asks a question and details are still withheld: the next withheld detail
       (so an ambiguous scenario reveals them only when asked, one per question);
    7. the agent refuses: insist (`max_insist` times), then stop;
    8. the agent reports the work done: thank and stop;
    9. anything else: say there is nothing more to add; after `max_idle` such turns, stop.
    """

    name = SCRIPTED_USER_NAME

    def __init__(self, tools: Iterable[ToolSpec], settings: ScriptedUserSettings | None = None) -> None:
        self.settings = settings or ScriptedUserSettings()
        self.identity = identity_cues(tools)

    def session(self, scenario: UserScenario) -> ScriptedUserSession:
        return ScriptedUserSession(scenario, self.settings, self.identity)


class ScriptedUserSession:
    def __init__(self, scenario: UserScenario, settings: ScriptedUserSettings,
                 identity: Sequence[str]) -> None:
        self.scenario = scenario
        self.settings = settings
        self.identity = tuple(identity)
        self.revealed = 0
        self.identified = False
        self.changed = False
        self.insisted = 0
        self.idle = 0
        trigger = (scenario.change_trigger or "").lower()
        self.change_on_details = bool(trigger) and "confirm" not in trigger and _has(trigger, _DETAILS_TRIGGER)

    def usage(self) -> TokenUsage:
        return TokenUsage()

    async def areply(self, conversation: Sequence[ConversationTurn]) -> UserReply:
        return self.reply(conversation)

    def reply(self, conversation: Sequence[ConversationTurn]) -> UserReply:
        last_agent = next((t.content for t in reversed(conversation) if t.role == "agent"), None)
        if last_agent is None:
            return UserReply(text=self.opening())
        return reply_of(self.answer(last_agent))

    def opening(self) -> str:
        return first_person(self.scenario.reason_for_call)

    def answer(self, agent_text: str) -> str:
        text = agent_text.lower()
        asks_identity = _has(text, self.identity) and "?" in text
        if _has(text, _TRANSFER) and not asks_identity:
            return f"Okay, thank you. {STOP_SIGNAL}"
        if asks_identity and not self.identified:
            self.identified = True
            self.idle = 0
            known = self.scenario.known_info
            return first_person(known) if known else "I'm afraid I can't give you that."
        if self._change_point(text, asks_identity):
            self.changed = True
            self.idle = 0
            return first_person(self.scenario.revised_request or "")
        if _has(text, _CONFIRM):
            self.idle = 0
            return "Yes, please go ahead."
        if "anything else" in text:
            return f"No, that's all. Thank you! {STOP_SIGNAL}"
        if "?" in text and self.revealed < len(self.scenario.withheld_info):
            detail = self.scenario.withheld_info[self.revealed]
            self.revealed += 1
            self.idle = 0
            return first_person(detail)
        if _has(text, _REFUSAL):
            if self.insisted < self.settings.max_insist:
                self.insisted += 1
                return "I really need this done. Is there no way at all?"
            return f"I understand. {STOP_SIGNAL}"
        if _has(text, _DONE):
            return f"Thank you, that's all I needed. {STOP_SIGNAL}"
        self.idle += 1
        if self.idle >= self.settings.max_idle:
            return f"I don't think this is going anywhere. {STOP_SIGNAL}"
        if "?" in text and self.scenario.unknown_info:
            return first_person(self.scenario.unknown_info)
        return "I have nothing more to add; please go on."

    def _change_point(self, text: str, asks_identity: bool) -> bool:
        if self.changed or not self.scenario.revised_request:
            return False
        if self.change_on_details:
            return not asks_identity
        return _has(text, _CONFIRM)
