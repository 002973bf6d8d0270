"""The agent under test (`ToolCallingAgent`, a DSPy program) and two offline reference agents.

`ToolCallingAgent` is one `dspy.Predict(AgentTurn)` on DSPy's own tool-calling types: the
conversation comes in as a `dspy.History` of chat messages, the tools as `dspy.Tool`s and
the calls go out as `dspy.ToolCalls`. Its instruction and its demos are what an optimizer
tunes (`t2t optimize --program agent`); both reach the model. How a turn reaches the LM is
chosen explicitly (`native_function_calling`), and `AgentAdapter` (a `dspy.ChatAdapter`)
renders it:

- native (the default): what a tool-calling agent sends to any chat-completions API: a
  system message (the instruction, the demos as example exchanges, the domain policy), the
  conversation as OpenAI messages (assistant `tool_calls`, `tool` results; assistant content
  is "" and never null, which llama.cpp's chat templates need) and the tools in the
  request's `tools`, each with the domain's exact JSON schema (`SchemaTool`). The reply's
  text is the message to the user as it is (no field markers); its `tool_calls` are the
  calls. Arguments that are not a JSON object are kept as an error for the rollout to show
  the agent, never repaired (DSPy's own parse would repair them with json_repair).
- text: the same signature through `dspy.ChatAdapter`'s field format, the conversation as
  a transcript and the tools described in the prompt; the LM writes its calls as JSON. For
  models with no function calling.

A reply that does not parse is asked again (`parse_attempts` in all, through
`trajectory2task.programs.generation.reask.Reask`, a plain dspy.Module), each re-ask with its own `rollout_id`,
so that DSPy's cache does not hand back the same failed reply.

Reference agents calibrate a task set offline: `DoNothingAgent` never calls a tool (every
verified task must fail for it), `OracleAgent` replays the task's gold actions (every
verified task must pass for it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import dspy
from pydantic import BaseModel, Field

from trajectory2task.domains import Environment
from trajectory2task.programs.generation.reask import Reask
from trajectory2task.programs.loop.user_sim import turn_error
from trajectory2task.signatures.conversation import AgentToolCall, AgentTurn
from trajectory2task.signatures.models import Action, Message, Task, TokenUsage

DO_NOTHING = "do-nothing"
ORACLE = "oracle"
REFERENCE_AGENTS = (DO_NOTHING, ORACLE)
DEMO_MESSAGES = 6  # the last messages of a demo's conversation shown with it


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


# ============================================================================ DSPy types


class SchemaTool(dspy.Tool):
    """A `dspy.Tool` that sends the domain's own function schema unchanged.

    `dspy.Tool.format_as_litellm_function_call` rebuilds the schema from `args` (dropping
    `additionalProperties: false` and recomputing `required`); the agent must see the tool
    exactly as the domain declares it. The agent never runs a tool itself: the rollout runs
    its calls on the episode.
    """

    openai_schema: dict[str, Any] = Field(default_factory=dict)

    def __init__(self, schema: Mapping[str, Any]) -> None:
        function = schema["function"]
        super().__init__(_run_by_the_rollout, name=function["name"], desc=function.get("description") or "",
                         args=dict(function.get("parameters", {}).get("properties", {})))
        self.openai_schema = json.loads(json.dumps(schema))

    def format_as_litellm_function_call(self) -> dict[str, Any]:
        # the tool's own (private, copied-once) schema, not a fresh copy per call: it is asked
        # for on every agent turn, and what receives it (DSPy's request building) only reads it
        return self.openai_schema


def _run_by_the_rollout(**arguments: Any) -> Any:
    raise RuntimeError("the agent's tools run in the rollout's episode, not through dspy.Tool")


def agent_tools(schemas: Sequence[Mapping[str, Any]]) -> list[dspy.Tool]:
    return [SchemaTool(schema) for schema in schemas]


class ParsedToolCall(dspy.ToolCalls.ToolCall):
    """A call as the provider sent it; ``arguments_error`` set (and ``args`` empty) when its
    arguments were not a JSON object."""

    arguments_error: str | None = None


def history_of(conversation: Sequence[Message]) -> dspy.History:
    """The conversation as the `dspy.History` the agent program takes: one chat message each."""
    return dspy.History(messages=[m.model_dump(mode="json", exclude_none=True) for m in conversation])


def _messages_of(history: Any) -> list[dict[str, Any]]:
    """History messages from a `dspy.History` or its saved form (demos loaded from a store)."""
    if isinstance(history, dspy.History):
        return list(history.messages)
    if isinstance(history, Mapping):
        return list(history.get("messages") or [])
    return list(history or [])


def _calls_of(tool_calls: Any) -> list[dict[str, Any]]:
    """[{name, args}] from `dspy.ToolCalls` or its saved form."""
    if isinstance(tool_calls, dspy.ToolCalls):
        return [{"name": c.name, "args": c.args} for c in tool_calls.tool_calls]
    if isinstance(tool_calls, Mapping):
        return [{"name": c.get("name"), "args": c.get("args") or {}} for c in tool_calls.get("tool_calls") or []]
    return []


# ============================================================================ rendering


def openai_messages(conversation: Sequence[Message] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages as OpenAI messages (tool-call arguments as JSON strings)."""
    out: list[dict[str, Any]] = []
    for raw in conversation:
        m = raw.model_dump(mode="json", exclude_none=True) if isinstance(raw, Message) else dict(raw)
        # content is never null: llama.cpp's chat templates fail on an assistant tool-call
        # message without it, and OpenAI-compatible servers take "" there
        item: dict[str, Any] = {"role": m["role"], "content": m.get("content") or ""}
        if m.get("tool_calls"):
            item["tool_calls"] = [{"id": c.get("id"), "type": "function",
                                   "function": {"name": c["name"], "arguments": json.dumps(c.get("arguments") or {})}}
                                  for c in m["tool_calls"]]
        if m.get("tool_call_id") is not None:
            item["tool_call_id"] = m["tool_call_id"]
        out.append(item)
    return out


def transcript(messages: Sequence[Mapping[str, Any]]) -> str:
    """Chat messages as plain lines, for the text mode and for demos."""
    lines = []
    for m in messages:
        role, content = m.get("role"), m.get("content") or ""
        if role == "system":
            continue
        for call in m.get("tool_calls") or []:
            lines.append(f"assistant calls {call['name']} {json.dumps(call.get('arguments') or {}, sort_keys=True)}")
        if role == "tool":
            lines.append(f"tool result: {content}")
        elif content:
            lines.append(f"{role}: {content}")
    return "\n".join(lines)


def _demo_text(demo: Mapping[str, Any]) -> str:
    shown = _messages_of(demo.get("history"))[-DEMO_MESSAGES:]
    calls = _calls_of(demo.get("tool_calls"))
    if calls:
        reply = "\n".join(f"call {c['name']} {json.dumps(c['args'], sort_keys=True)}" for c in calls)
    else:
        reply = str(demo.get("message") or "")
    return f"<example>\n<conversation>\n{transcript(shown)}\n</conversation>\n<reply>\n{reply}\n</reply>\n</example>"


def system_prompt(instructions: str, policy: str, demos: Sequence[Mapping[str, Any]] = ()) -> str:
    """The agent's system message: its instruction, its demos as example turns, the policy."""
    parts = [instructions.strip()]
    if demos:
        parts.append("Examples of good turns (the end of a conversation, then the reply):\n"
                     + "\n".join(_demo_text(d) for d in demos))
    parts.append(f"<policy>\n{policy.strip()}\n</policy>")
    return "\n\n".join(parts)


# ============================================================================ the adapter


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


class AgentAdapter(dspy.ChatAdapter):
    """`dspy.ChatAdapter` for `AgentTurn`-shaped signatures (see the module docstring).

    Native mode keeps DSPy's planning (`_call_preprocess` puts the tools in the request and
    takes the tool fields out of the signature) and replaces what DSPy would render and
    parse: OpenAI messages instead of field markers, plain text as the message, argument
    errors kept. Text mode is DSPy's field format with the history as a transcript. No JSON
    adapter fallback: a reply that does not parse is re-asked by `ToolCallingAgent`.
    """

    def __init__(self, native_function_calling: bool) -> None:
        super().__init__(use_native_function_calling=native_function_calling, use_json_adapter_fallback=False)
        # DSPy's planning builds the render signature anew on every call (`Signature.delete` and
        # `insert` each create a pydantic model class, ~1 ms of CPU apiece): for a given
        # signature it is always the same class, so it is made once. Keyed by the signature
        # class itself (an optimizer's new instructions or demos make a new class).
        self._planned: dict[type[dspy.Signature], type[dspy.Signature]] = {}
        self._text_signatures: dict[type[dspy.Signature], type[dspy.Signature]] = {}

    def _call_preprocess(self, lm: Any, lm_kwargs: dict[str, Any], signature: type[dspy.Signature],
                         inputs: dict[str, Any]) -> type[dspy.Signature]:
        if not self.use_native_function_calling:
            return super()._call_preprocess(lm, lm_kwargs, signature, inputs)
        if not getattr(lm, "supports_function_calling", False):  # DSPy would drop the tools silently
            raise ValueError(f"{getattr(lm, 'model', lm)!r} is not known to support function calling")
        # said explicitly: llama-cpp-python's function-calling format drops the tools of a
        # request without it
        lm_kwargs.setdefault("tool_choice", "auto")
        planned = self._planned.get(signature)
        tools_field = self._get_tool_call_input_field_name(signature)
        if planned is not None and tools_field is not None:
            # what DSPy's planning puts in the request, without rebuilding the signature
            tools = inputs[tools_field]
            lm_kwargs["tools"] = [tool.format_as_litellm_function_call()
                                  for tool in (tools if isinstance(tools, list) else [tools])]
            if self.parallel_tool_calls is not None and lm_kwargs.get("parallel_tool_calls") is None:
                lm_kwargs["parallel_tool_calls"] = self.parallel_tool_calls
            return planned
        before = dict(lm_kwargs)
        planned = super()._call_preprocess(lm, lm_kwargs, signature, inputs)
        changed = {k for k in set(before) | set(lm_kwargs) if before.get(k, None) is not lm_kwargs.get(k, None)}
        # cached only when planning did nothing else than put the tools in (a native response
        # type such as reasoning or citations may change more, and is then planned every call)
        if tools_field is not None and changed <= {"tools", "parallel_tool_calls"}:
            self._planned[signature] = planned
        return planned

    def format(self, signature: type[dspy.Signature], demos: list[dict[str, Any]],
               inputs: dict[str, Any]) -> list[dict[str, Any]]:
        history = _messages_of(inputs.get("history"))
        if self.use_native_function_calling:
            system = system_prompt(signature.instructions, str(inputs.get("policy") or ""), demos)
            return [{"role": "system", "content": system}, *openai_messages(history)]
        text_signature = self._text_signatures.get(signature)
        if text_signature is None:
            text_signature = self._text_signatures[signature] = signature.delete("history").insert(
                1, "conversation", dspy.InputField(desc="the conversation so far, oldest first"), type_=str)
        text_inputs = {k: v for k, v in inputs.items() if k != "history"} | {"conversation": transcript(history)}
        text_demos = [{k: v for k, v in d.items() if k != "history"}
                      | {"conversation": transcript(_messages_of(d.get("history"))[-DEMO_MESSAGES:])}
                      for d in demos]
        return super().format(text_signature, text_demos, text_inputs)

    def _call_postprocess(self, processed_signature: type[dspy.Signature], original_signature: type[dspy.Signature],
                          outputs: list[Any], lm: Any, lm_kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        if not self.use_native_function_calling:
            return super()._call_postprocess(processed_signature, original_signature, outputs, lm, lm_kwargs)
        return [self.parse_native(output) for output in outputs]

    @staticmethod
    def parse_native(output: Any) -> dict[str, Any]:
        """One native completion -> {message, tool_calls}: the text as it is, the calls with
        their argument errors."""
        if not isinstance(output, dict):
            return {"message": output or "", "tool_calls": None}
        calls = []
        for raw in output.get("tool_calls") or []:
            function = _field(raw, "function") or {}
            arguments, error = parse_arguments(_field(function, "arguments"))
            calls.append(ParsedToolCall(id=_field(raw, "id"), name=str(_field(function, "name") or ""),
                                        args=arguments, arguments_error=error))
        return {"message": output.get("text") or "", "tool_calls": dspy.ToolCalls(tool_calls=calls) if calls else None}


# Adapters hold no per-call state: one of each serves every agent and thread.
_ADAPTERS = {True: AgentAdapter(native_function_calling=True), False: AgentAdapter(native_function_calling=False)}


# ============================================================================ LM agent


class ToolCallingAgent(dspy.Module):
    """One agent turn: policy + history + tools -> a message or tool calls."""

    def __init__(self, native_function_calling: bool = True, parse_attempts: int = 2) -> None:
        super().__init__()
        self.turn = dspy.Predict(AgentTurn)
        self.native_function_calling = native_function_calling
        self.parse_attempts = max(1, parse_attempts)

    def adapter(self) -> dspy.Adapter:
        return _ADAPTERS[self.native_function_calling]

    def _reask(self, trial: int) -> Reask:
        """Up to ``parse_attempts`` asks until one parses (`Reask`). The first ask of
        trial 0 has no rollout id (the plain cached call); every other ask, and every ask of
        another trial, has its own."""
        return Reask(self.turn, self.parse_attempts, rollout_offset=trial * self.parse_attempts)

    def forward(self, policy: str, history: dspy.History, tools: list[dspy.Tool], trial: int = 0) -> dspy.Prediction:
        with dspy.context(adapter=self.adapter()):
            return self._reask(trial)(policy=policy, history=history, tools=tools).parsed()

    async def aforward(self, policy: str, history: dspy.History, tools: list[dspy.Tool],
                       trial: int = 0) -> dspy.Prediction:
        with dspy.context(adapter=self.adapter()):
            return (await self._reask(trial).aforward(policy=policy, history=history, tools=tools)).parsed()

    @property
    def instructions(self) -> str:
        return self.turn.signature.instructions

    def system_prompt(self, policy: str) -> str:
        return system_prompt(self.instructions, policy, self.turn.demos if self.native_function_calling else ())

    def messages(self, policy: str, conversation: Sequence[Message], tools: list[dspy.Tool]) -> list[dict[str, Any]]:
        """The chat messages one turn sends (for estimates); the tools travel beside them."""
        inputs = {"policy": policy, "history": history_of(conversation), "tools": tools}
        return self.adapter().format(self.turn.signature, list(self.turn.demos), inputs)


def compact_demo(demo: Mapping[str, Any]) -> dspy.Example:
    """A demo cut to what the agent shows of it: the last `DEMO_MESSAGES` messages of its
    history and its reply. A bootstrapped trace also holds the policy and every tool, the
    same on every turn; kept, they would make the saved state large and each text-mode demo
    a copy of the tool list."""
    kept = {"history": dspy.History(messages=_messages_of(demo.get("history"))[-DEMO_MESSAGES:]),
            "message": demo.get("message"), "tool_calls": demo.get("tool_calls")}
    if demo.get("augmented"):
        kept["augmented"] = True
    return dspy.Example(**kept)


def compact_demos(program: ToolCallingAgent) -> None:
    program.turn.demos = [compact_demo(d) for d in program.turn.demos]


def reply_of(prediction: Any) -> AgentReply:
    """The agent program's prediction as the rollout's `AgentReply`."""
    calls = []
    tool_calls = getattr(prediction, "tool_calls", None)
    for call in (tool_calls.tool_calls if isinstance(tool_calls, dspy.ToolCalls) else []):
        calls.append(AgentToolCall(id=call.id, name=call.name, arguments=dict(call.args or {}),
                                   arguments_error=getattr(call, "arguments_error", None)))
    return AgentReply(content=(getattr(prediction, "message", None) or "").strip() or None, tool_calls=calls)


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
        self.tool_schemas = environment.tool_schemas()
        self.tools = agent_tools(self.tool_schemas)
        self.name = name or str(getattr(lm, "model", "lm"))

    def system_prompt(self) -> str:
        return self.program.system_prompt(self.policy)

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
                prediction = agent.program(policy=agent.policy, history=history_of(conversation), tools=agent.tools)
        except Exception as exc:  # the LM boundary: retries already happened inside dspy.LM
            raise turn_error("agent", "agent", exc) from exc
        return reply_of(prediction)

    async def areply(self, conversation: Sequence[Message]) -> AgentReply:
        agent = self.agent
        try:
            with dspy.context(lm=self.lm, warn_on_type_mismatch=False):
                prediction = await agent.program.acall(policy=agent.policy, history=history_of(conversation),
                                                       tools=agent.tools)
        except Exception as exc:
            raise turn_error("agent", "agent", exc) from exc
        return reply_of(prediction)

    def usage(self) -> TokenUsage:
        from trajectory2task.programs.lm.accounting import usage_of

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
