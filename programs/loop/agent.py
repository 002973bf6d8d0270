"""The agent under test (`ToolCallingAgent`, a dspy program) and two offline reference agents.

`ToolCallingAgent` is one `dspy.Predict(AgentTurn)`: its signature's instruction is the
part an optimizer tunes. How a turn reaches the LM is chosen explicitly
(`native_function_calling`):

- native (the default): `NativeToolsAdapter` sends what a tool-calling agent sends to any
  chat-completions API: a system message (the instruction and the domain policy), the
  conversation as OpenAI messages (assistant `tool_calls`, `tool` results) and the tool
  schemas in the request's `tools`. The reply's text is the message to the user; its
  `tool_calls` are the calls. Arguments that are not a JSON object are kept as an error
  for the rollout to show the agent, never repaired silently.
- text: DSPy's `ChatAdapter` with the same signature: tools are described in the prompt
  and the LM writes its calls as a JSON list. For models with no function calling.

Reference agents calibrate a task set offline: `DoNothingAgent` never calls a tool (every
verified task must fail for it), `OracleAgent` replays the task's gold actions (every
verified task must pass for it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any, Protocol

import dspy
from pydantic import BaseModel, Field

from domains import Environment
from signatures.conversation import AgentToolCall, AgentTurn
from signatures.models import Action, Message, Task, TokenUsage
from programs.loop.user_sim import turn_error

DO_NOTHING = "do-nothing"
ORACLE = "oracle"
REFERENCE_AGENTS = (DO_NOTHING, ORACLE)


class AgentReply(BaseModel):
    """What the agent did in one turn: a message to the user, or tool calls (or both)."""

    content: str | None = None
    tool_calls: list[AgentToolCall] = Field(default_factory=list)


class AgentSession(Protocol):
    def reply(self, conversation: Sequence[Message]) -> AgentReply: ...

    async def areply(self, conversation: Sequence[Message]) -> AgentReply: ...

    def usage(self) -> TokenUsage: ...


class Agent(Protocol):
    """An agent: `session(task)` starts one conversation. Only reference agents may read
    the task; an agent under test gets none of it."""

    name: str

    def system_prompt(self) -> str: ...

    def session(self, task: Task) -> AgentSession: ...


def system_prompt(instructions: str, policy: str) -> str:
    """The agent's system message: its instruction, then the domain policy."""
    return f"{instructions.strip()}\n\n<policy>\n{policy.strip()}\n</policy>"


# ============================================================================ native adapter


def openai_messages(conversation: Sequence[Message]) -> list[dict[str, Any]]:
    """Our messages as OpenAI chat messages (tool-call arguments as JSON strings)."""
    out: list[dict[str, Any]] = []
    for m in conversation:
        # content is never null: llama.cpp's chat templates fail on an assistant tool-call
        # message without it, and OpenAI-compatible servers take "" there
        item: dict[str, Any] = {"role": m.role, "content": m.content or ""}
        if m.tool_calls:
            item["tool_calls"] = [{"id": c.id, "type": "function",
                                   "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                                  for c in m.tool_calls]
        if m.tool_call_id is not None:
            item["tool_call_id"] = m.tool_call_id
        out.append(item)
    return out


def _field(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def parse_arguments(raw: Any) -> tuple[dict[str, Any], str | None]:
    """Tool-call arguments as the provider sent them -> (arguments, error).

    LiteLLM hands over the raw JSON text; DSPy's own client wraps text it cannot parse as
    ``{"partial_json": text}``. Both end as an error here, never as repaired arguments. (That
    client also wraps valid JSON that is not an object as ``{"value": ...}``; such a call
    reaches the tool, whose argument check rejects it with an error observation.)
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}, None
    value = raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except ValueError as exc:
            return {}, f"arguments are not valid JSON ({exc}): {raw[:200]}"
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("partial_json"), str):
        text = value["partial_json"]
        try:
            value = json.loads(text)
        except ValueError as exc:
            return {}, f"arguments are not valid JSON ({exc}): {text[:200]}"
    if not isinstance(value, dict):
        return {}, f"arguments must be a JSON object, not {json.dumps(value)[:200]}"
    return value, None


def _adapter_call_marker(lm: Any, messages: list[dict[str, Any]]) -> Any:
    # DSPy 3.4 warns about OpenAI-style messages passed to an LM unless an adapter makes the
    # call; this marks our adapter's call the way DSPy's own adapters do.
    try:
        from dspy.clients._deprecation import adapter_message_call
    except ImportError:  # other DSPy versions: no marker, at most a warning
        return nullcontext()
    return adapter_message_call(lm, messages)


class NativeToolsAdapter(dspy.Adapter):
    """Runs an `AgentTurn`-shaped signature through native function calling (see module doc).

    Demos are not rendered: the signature's instruction is what optimizers tune here.
    """

    def format(self, signature: type[dspy.Signature], demos: list[dict[str, Any]],
               inputs: dict[str, Any]) -> list[dict[str, Any]]:
        system = system_prompt(signature.instructions, inputs["policy"])
        return [{"role": "system", "content": system}, *openai_messages(inputs["conversation"])]

    def __call__(self, lm: Any, lm_kwargs: dict[str, Any], signature: type[dspy.Signature],
                 demos: list[dict[str, Any]], inputs: dict[str, Any]) -> list[dict[str, Any]]:
        messages = self.format(signature, demos, inputs)
        kwargs = self._tool_kwargs(lm_kwargs, inputs)
        with _adapter_call_marker(lm, messages):
            outputs = lm(messages=messages, **kwargs)
        return [self.parse_output(output) for output in outputs]

    async def acall(self, lm: Any, lm_kwargs: dict[str, Any], signature: type[dspy.Signature],
                    demos: list[dict[str, Any]], inputs: dict[str, Any]) -> list[dict[str, Any]]:
        messages = self.format(signature, demos, inputs)
        kwargs = self._tool_kwargs(lm_kwargs, inputs)
        with _adapter_call_marker(lm, messages):
            outputs = await lm.acall(messages=messages, **kwargs)
        return [self.parse_output(output) for output in outputs]

    @staticmethod
    def _tool_kwargs(lm_kwargs: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        # tool_choice said explicitly: llama-cpp-python's function-calling format drops the
        # tools of a request without it
        return {"tool_choice": "auto", **lm_kwargs, "tools": list(inputs["tools"])}

    @staticmethod
    def parse_output(output: Any) -> dict[str, Any]:
        if not isinstance(output, dict):
            return {"message": output or "", "tool_calls": []}
        calls = []
        for raw in output.get("tool_calls") or []:
            function = _field(raw, "function") or {}
            arguments, error = parse_arguments(_field(function, "arguments"))
            calls.append(AgentToolCall(id=_field(raw, "id"), name=str(_field(function, "name") or ""),
                                       arguments=arguments, arguments_error=error))
        return {"message": output.get("text") or "", "tool_calls": calls}


# Adapters hold no per-call state: one of each serves every agent and thread.
_NATIVE_ADAPTER = NativeToolsAdapter()
_TEXT_ADAPTER = dspy.ChatAdapter()


# ============================================================================ LM agent


class ToolCallingAgent(dspy.Module):
    """One agent turn: policy + conversation + tool schemas -> a message or tool calls."""

    def __init__(self, native_function_calling: bool = True) -> None:
        super().__init__()
        self.turn = dspy.Predict(AgentTurn)
        self.native_function_calling = native_function_calling

    def adapter(self) -> dspy.Adapter:
        return _NATIVE_ADAPTER if self.native_function_calling else _TEXT_ADAPTER

    def forward(self, policy: str, conversation: Sequence[Message], tools: list[dict[str, Any]]) -> dspy.Prediction:
        with dspy.context(adapter=self.adapter()):
            return self.turn(policy=policy, conversation=list(conversation), tools=tools)

    async def aforward(self, policy: str, conversation: Sequence[Message],
                       tools: list[dict[str, Any]]) -> dspy.Prediction:
        with dspy.context(adapter=self.adapter()):
            return await self.turn.acall(policy=policy, conversation=list(conversation), tools=tools)

    @property
    def instructions(self) -> str:
        return self.turn.signature.instructions


class LMAgent:
    """An `Agent` backed by a `ToolCallingAgent` program and a `dspy.LM`.

    The session never receives the task. Each session calls a private copy of the LM so that
    tokens and cost add up per rollout.
    """

    def __init__(self, lm: Any, environment: Environment[Any], program: ToolCallingAgent | None = None,
                 native_function_calling: bool = True, name: str | None = None) -> None:
        if native_function_calling and not getattr(lm, "supports_function_calling", False):
            raise ValueError(f"{getattr(lm, 'model', lm)!r} is not known to support function calling: build it "
                             "with LMSettings(function_calling=True), or use native_function_calling=False")
        self.lm = lm
        self.program = program or ToolCallingAgent(native_function_calling)
        self.program.native_function_calling = native_function_calling
        self.policy = environment.policy
        self.tools = environment.tool_schemas()
        self.name = name or str(getattr(lm, "model", "lm"))

    def system_prompt(self) -> str:
        return system_prompt(self.program.instructions, self.policy)

    def session(self, task: Task) -> _LMAgentSession:
        del task  # the agent under test plays blind: it learns the task from the user only
        return _LMAgentSession(self, self.lm.copy())


class _LMAgentSession:
    def __init__(self, agent: LMAgent, lm: Any) -> None:
        self.agent = agent
        self.lm = lm

    def reply(self, conversation: Sequence[Message]) -> AgentReply:
        agent = self.agent
        try:
            with dspy.context(lm=self.lm, warn_on_type_mismatch=False):
                prediction = agent.program(policy=agent.policy, conversation=conversation, tools=agent.tools)
        except Exception as exc:  # the LM boundary: retries already happened inside dspy.LM
            raise turn_error("agent", "agent", exc) from exc
        return self._reply_of(prediction)

    async def areply(self, conversation: Sequence[Message]) -> AgentReply:
        agent = self.agent
        try:
            with dspy.context(lm=self.lm, warn_on_type_mismatch=False):
                prediction = await agent.program.acall(policy=agent.policy, conversation=conversation,
                                                       tools=agent.tools)
        except Exception as exc:
            raise turn_error("agent", "agent", exc) from exc
        return self._reply_of(prediction)

    @staticmethod
    def _reply_of(prediction: Any) -> AgentReply:
        calls = [c if isinstance(c, AgentToolCall) else AgentToolCall.model_validate(c)
                 for c in (prediction.tool_calls or [])]
        return AgentReply(content=(prediction.message or "").strip() or None, tool_calls=calls)

    def usage(self) -> TokenUsage:
        from programs.lm.config import usage_of

        return usage_of(self.lm)


# ============================================================================ reference agents

# Reference agents carry the LM agent's system prompt, so that their rollouts read like the
# agent's own (and can be exported as fine-tuning data next to them).


class DoNothingAgent:
    """Never calls a tool; politely declines every turn."""

    name = DO_NOTHING

    def __init__(self, environment: Environment[Any]) -> None:
        self.policy = environment.policy

    def system_prompt(self) -> str:
        return system_prompt(AgentTurn.instructions, self.policy)

    def session(self, task: Task) -> _DoNothingSession:
        return _DoNothingSession()


class _DoNothingSession:
    def reply(self, conversation: Sequence[Message]) -> AgentReply:
        return AgentReply(content="I'm sorry, but I can't help with that.")

    async def areply(self, conversation: Sequence[Message]) -> AgentReply:
        return self.reply(conversation)

    def usage(self) -> TokenUsage:
        return TokenUsage()


class OracleAgent:
    """Replays the task's gold actions, one tool call per turn, as a model agent should.

    Before its first write it states the action and asks for a "yes"; it then goes on
    whatever the user says (it knows the gold). It also runs any `actions_should_take` the
    gold actions do not cover, ends with the task's `communicate_info`, and for an
    infeasible task ends by refusing.
    """

    name = ORACLE

    def __init__(self, environment: Environment[Any]) -> None:
        self.policy = environment.policy
        self.write_tools = {name for name, spec in environment.tools.items() if spec.kind == "write"}

    def system_prompt(self) -> str:
        return system_prompt(AgentTurn.instructions, self.policy)

    def session(self, task: Task) -> _OracleSession:
        return _OracleSession(task, self.write_tools)


def _same_call(a: Action, b: Action) -> bool:
    return a.name == b.name and json.dumps(a.arguments, sort_keys=True) == json.dumps(b.arguments, sort_keys=True)


class _OracleSession:
    def __init__(self, task: Task, write_tools: set[str]) -> None:
        self.task = task
        self.plan: list[Action] = list(task.gold_actions)
        self.plan += [a for a in task.actions_should_take if not any(_same_call(a, g) for g in task.gold_actions)]
        self.write_tools = write_tools
        self.next = 0
        self.asked = False

    async def areply(self, conversation: Sequence[Message]) -> AgentReply:
        return self.reply(conversation)

    def reply(self, conversation: Sequence[Message]) -> AgentReply:
        if self.next < len(self.plan):
            action = self.plan[self.next]
            if action.name in self.write_tools and not self.asked:
                self.asked = True
                return AgentReply(content=f"I am about to run {action.name} with "
                                          f"{json.dumps(action.arguments, sort_keys=True)}. "
                                          "Do you confirm (yes/no)?")
            self.next += 1
            return AgentReply(tool_calls=[AgentToolCall(id=f"call_{self.next}", name=action.name,
                                                        arguments=dict(action.arguments))])
        said = " ".join(self.task.communicate_info)
        if self.task.condition == "infeasible":
            closing = "I'm sorry, but I cannot do that: our policy does not allow it."
        else:
            closing = "All done: your request has been completed. Is there anything else?"
        return AgentReply(content=f"{said} {closing}".strip())

    def usage(self) -> TokenUsage:
        return TokenUsage()
