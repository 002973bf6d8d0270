"""Successful rollouts as fine-tuning data: OpenAI chat fine-tuning JSONL with tool calls.

One line per passing rollout::

    {"messages": [{"role": "system", ...}, {"role": "user", ...},
                  {"role": "assistant", "content": null, "tool_calls": [{"id": ..., "type": "function",
                   "function": {"name": ..., "arguments": "<JSON string>"}}]},
                  {"role": "tool", "tool_call_id": ..., "content": ...}, ...],
     "tools": [{"type": "function", "function": {"name": ..., "description": ..., "parameters": {...}}}]}

The tools are the schemas the agent was shown, read from the bench run's config. Control
markers of the simulated user (``###STOP###`` and the like) are removed from its messages,
and the conversation ends on the agent's last turn (the user's closing words are not a
training target).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from trajectory2task.signatures.models import Message, Rollout

_CONTROL_MARKER = re.compile(r"\s*###[A-Z][A-Z_-]*###\s*")


def _user_text(content: str | None) -> str:
    return _CONTROL_MARKER.sub(" ", content or "").strip()


def sft_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """A rollout's messages in the fine-tuning shape (ids made unique per conversation)."""
    out: list[dict[str, Any]] = []
    used: set[str] = set()
    renamed: dict[str, str] = {}  # the latest id given to each original tool-call id
    for m in messages:
        if m.role in ("system", "user"):
            text = m.content if m.role == "system" else _user_text(m.content)
            if text:
                out.append({"role": m.role, "content": text})
        elif m.role == "assistant":
            item: dict[str, Any] = {"role": "assistant", "content": m.content or None}
            if m.tool_calls:
                calls = []
                for call in m.tool_calls:
                    call_id = call.id or f"call_{len(used) + 1}"
                    if call_id in used:
                        call_id = f"{call_id}_{len(used) + 1}"
                    used.add(call_id)
                    renamed[call.id or call_id] = call_id
                    calls.append({"id": call_id, "type": "function",
                                  "function": {"name": call.name, "arguments": json.dumps(call.arguments)}})
                item["tool_calls"] = calls
            elif not m.content:
                continue
            out.append(item)
        elif m.role == "tool":
            call_id = renamed.get(m.tool_call_id or "", m.tool_call_id)
            out.append({"role": "tool", "tool_call_id": call_id, "content": m.content or ""})
    while out and out[-1]["role"] in ("system", "user"):
        out.pop()
    return out


def sft_record(rollout: Rollout, tools: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    messages = sft_messages(rollout.messages)
    if not any(m["role"] == "assistant" for m in messages):
        return None
    record: dict[str, Any] = {"messages": messages}
    if tools:
        record["tools"] = tools
    return record


def sft_records(store: Any, where: str | None, params: list | None = None) -> list[dict[str, Any]]:
    """The fine-tuning records of the passing rollouts matching `where` (SQL over
    `rollouts_latest`: condition, agent_model, user_model, task_id, run_id, trial,
    termination, ...), in store order; what `export_sft` writes, one dict a line."""
    from trajectory2task.store.sqlcheck import FILTER_SLOT

    # checked first in this place: the filter then stays the right operand of `pass AND`
    selected = store.filtered(f"SELECT rollout_id, run_id FROM rollouts_latest WHERE pass AND {FILTER_SLOT}", where)
    _, rows = store.query(selected, params)
    condition = f"pass AND (\n{where}\n)" if where and where.strip() else "pass"
    rollouts: list[Rollout] = store.rollouts(condition, params)
    run_of = {rollout_id: run_id for rollout_id, run_id in rows}
    tools_of: dict[str, list[dict[str, Any]] | None] = {}
    for run_id in set(run_of.values()):
        _, config_rows = store.query("SELECT config FROM runs WHERE run_id = ? LIMIT 1", [run_id])
        config = json.loads(config_rows[0][0]) if config_rows and config_rows[0][0] else {}
        tools_of[run_id] = config.get("tool_schemas") if isinstance(config, dict) else None
    records = [sft_record(rollout, tools_of.get(run_of.get(rollout.id, ""))) for rollout in rollouts]
    return [r for r in records if r is not None]


def export_sft(store: Any, where: str | None, path: str | os.PathLike[str], params: list | None = None,
               replace: bool = False) -> int:
    """Write `sft_records(store, where, params)` as fine-tuning JSONL. Returns the number of
    lines written. An existing file is replaced only with `replace`; the store's own files never."""
    from trajectory2task.store.outfile import output_file

    records = sft_records(store, where, params)
    with output_file(path, replace=replace, protected=store.store_files()) as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(records)
