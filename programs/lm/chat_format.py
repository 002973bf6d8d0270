"""One rendering of a conversation and its tools into model text, for training and inference.

`t2t finetune` trains on exactly the text `LocalLM` later prompts with, so both go through
`ChatFormat`. Conversations are OpenAI chat messages (system / user / assistant with
``tool_calls`` / tool with ``tool_call_id``) and tools OpenAI function schemas, as
`t2t export --format sft` writes them and as an agent's chat request carries them.

- A tokenizer whose chat template takes ``tools`` renders the conversation itself
  (``apply_chat_template(..., tools=...)``), tool calls and tool results included.
- Any other template (SmolLM2's ChatML, say) gets the tools described in the system message,
  one JSON schema a line, each call written in the assistant turn as
  ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` and each tool result shown as a
  user turn ``<tool_response>...</tool_response>``.

`parse_reply` reads a generated assistant turn back: the text outside the call blocks is the
message, each block one call. Arguments that are not a JSON object are handed on as raw text,
for the agent to report as an error (never repaired).

`training_segments` cuts a rendered conversation into (text, trainable) pieces, trainable
exactly where an assistant turn is written (its end-of-turn marker included), so the loss
falls on the agent's own words and calls only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
TOOL_RESPONSE_OPEN = "<tool_response>"
TOOL_RESPONSE_CLOSE = "</tool_response>"

_TOOLS_HEADER = (
    "# Tools\n\nYou may call one of the functions below. Their signatures, one JSON schema a line:\n<tools>\n"
)
_TOOLS_FOOTER = (
    "\n</tools>\n\nTo call a function, answer with one block\n"
    f'{TOOL_CALL_OPEN}{{"name": <function name>, "arguments": <JSON object>}}{TOOL_CALL_CLOSE}\n'
    f"Results come back as {TOOL_RESPONSE_OPEN}...{TOOL_RESPONSE_CLOSE}. To talk to the user, answer in plain text."
)
_BLOCK = re.compile(re.escape(TOOL_CALL_OPEN) + r"\s*(.*?)\s*(?:" + re.escape(TOOL_CALL_CLOSE) + r"|$)", re.DOTALL)

Segment = tuple[str, bool]  # (text, trainable)


class ParsedCall(BaseModel):
    """One tool call read from model text; ``arguments`` is JSON text, as OpenAI sends it."""

    name: str
    arguments: str


class ParsedReply(BaseModel):
    content: str = ""
    tool_calls: list[ParsedCall] = Field(default_factory=list)


def template_takes_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template renders a ``tools`` argument."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the default one counts
        template = template.get("default") or next(iter(template.values()), "")
    return isinstance(template, str) and re.search(r"\btools\b", template) is not None


def _arguments_object(raw: Any) -> Any:
    """Tool-call arguments as a value for a template (dict when the JSON text is one)."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _arguments_text(raw: Any) -> str:
    return raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False)


def tool_call_block(name: str, arguments: Any) -> str:
    """A call as the text-format assistant writes it."""
    value = _arguments_object(arguments)
    body = json.dumps({"name": name, "arguments": value}, ensure_ascii=False)
    return f"{TOOL_CALL_OPEN}{body}{TOOL_CALL_CLOSE}"


def tools_text(tools: Sequence[dict[str, Any]]) -> str:
    lines = [json.dumps(t.get("function", t), ensure_ascii=False, separators=(",", ":")) for t in tools]
    return _TOOLS_HEADER + "\n".join(lines) + _TOOLS_FOOTER


class ChatFormat:
    """The rendering of one tokenizer (see module doc)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.native_tools = template_takes_tools(tokenizer)

    # ------------------------------------------------------------ rendering

    def _text_messages(self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None,
                       ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for m in messages:
            role = m.get("role")
            content = m.get("content") or ""
            if role == "assistant" and m.get("tool_calls"):
                blocks = [tool_call_block(str(_get(_get(c, "function"), "name") or ""),
                                          _get(_get(c, "function"), "arguments") or {})
                          for c in m["tool_calls"]]
                content = "\n".join([content.strip()] * bool(content.strip()) + blocks)
                out.append({"role": "assistant", "content": content})
            elif role == "tool":
                out.append({"role": "user", "content": f"{TOOL_RESPONSE_OPEN}\n{content}\n{TOOL_RESPONSE_CLOSE}"})
            else:
                out.append({"role": role, "content": content})
        if tools:
            described = tools_text(tools)
            if out and out[0]["role"] == "system":
                out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{described}"}
            else:
                out.insert(0, {"role": "system", "content": described})
        return out

    def _native_messages(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for m in messages:
            item = {k: v for k, v in m.items() if v is not None}
            item.setdefault("content", "")
            if m.get("tool_calls"):
                item["tool_calls"] = [{"id": _get(c, "id"), "type": "function",
                                       "function": {"name": _get(_get(c, "function"), "name"),
                                                    "arguments": _arguments_object(
                                                        _get(_get(c, "function"), "arguments") or {})}}
                                      for c in m["tool_calls"]]
            out.append(item)
        return out

    def render(self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None,
               add_generation_prompt: bool = False) -> str:
        """The model text of a conversation (ending with the assistant's cue when asked)."""
        if self.native_tools:
            return self.tokenizer.apply_chat_template(self._native_messages(messages), tools=list(tools or []) or None,
                                                      tokenize=False, add_generation_prompt=add_generation_prompt)
        return self.tokenizer.apply_chat_template(self._text_messages(messages, tools), tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def training_segments(self, messages: Sequence[dict[str, Any]],
                          tools: Sequence[dict[str, Any]] | None = None) -> list[list[Segment]]:
        """The conversation as (text, trainable) pieces whose texts add up to ``render``.

        One list when the template renders each prefix of the conversation as a prefix of the
        whole (ChatML and most templates); else one prompt/completion pair per assistant turn
        (templates that rewrite earlier turns)."""
        whole = self.render(messages, tools)
        turns = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
        pieces: list[Segment] = []
        cursor = 0
        for i in turns:
            cue = self.render(messages[:i], tools, add_generation_prompt=True)
            upto = self.render(messages[:i + 1], tools)
            if not (upto.startswith(cue) and whole.startswith(upto) and len(cue) >= cursor):
                return self._per_turn(messages, tools, turns)
            pieces += [(whole[cursor:len(cue)], False), (whole[len(cue):len(upto)], True)]
            cursor = len(upto)
        pieces.append((whole[cursor:], False))
        return [[(text, trainable) for text, trainable in pieces if text]]

    def _per_turn(self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None,
                  turns: list[int]) -> list[list[Segment]]:
        out = []
        for i in turns:
            cue = self.render(messages[:i], tools, add_generation_prompt=True)
            upto = self.render(messages[:i + 1], tools)
            completion = upto[len(cue):] if upto.startswith(cue) else upto
            out.append([(cue, False), (completion, True)])
        return out

    def parse(self, text: str) -> ParsedReply:
        return parse_reply(text)


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


def _call_of(body: str) -> ParsedCall:
    try:
        value = json.loads(body)
    except ValueError:
        return ParsedCall(name="", arguments=body)
    if not isinstance(value, dict):
        return ParsedCall(name="", arguments=body)
    arguments = value.get("arguments", value.get("parameters", {}))
    return ParsedCall(name=str(value.get("name") or ""), arguments=_arguments_text(arguments))


def parse_reply(text: str) -> ParsedReply:
    """A generated assistant turn -> its message and tool calls (see module doc)."""
    calls = [_call_of(m.group(1)) for m in _BLOCK.finditer(text)]
    content = _BLOCK.sub("", text).strip()
    if not calls and content.startswith("{") and content.endswith("}"):
        try:  # a template's own format: the reply is one JSON call (Llama 3.1 and others)
            value = json.loads(content)
        except ValueError:
            value = None
        if isinstance(value, dict) and isinstance(value.get("name"), str) and (
                "arguments" in value or "parameters" in value):
            return ParsedReply(content="", tool_calls=[_call_of(content)])
    return ParsedReply(content=content, tool_calls=calls)
