"""The DSPy internals this package relies on (trajectory2task.programs.lm.dspy_private) still
exist with the shape it uses; a DSPy release that changes one fails here first. And no other
module of the package reaches past DSPy's public surface."""

from __future__ import annotations

import ast
from pathlib import Path

import dspy
import pytest

from trajectory2task.programs.lm import dspy_private

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("t2t", "domains", "signatures", "programs", "optimize", "store")


class Ask(dspy.Signature):
    """Answer."""

    question: str = dspy.InputField()
    answer: int = dspy.OutputField()


def test_the_structured_output_schema_is_the_one_dspy_builds():
    assert dspy_private.has_open_ended_mapping(Ask) is False
    schema = dspy_private.structured_outputs_format(Ask, True).model_json_schema()
    assert schema["properties"]["answer"]["type"] == "integer" and schema["required"] == ["answer"]


@pytest.mark.parametrize("hook", sorted(dspy_private.CHAT_ADAPTER_HOOKS))
def test_the_chat_adapter_hooks_the_agent_overrides_keep_their_parameters(hook):
    assert dspy_private.hook_parameters(hook) == dspy_private.CHAT_ADAPTER_HOOKS[hook]


def test_the_execution_module_and_the_model_rates_exist():
    assert dspy_private.execution_module().__name__ == dspy_private.EXECUTION_MODULE
    prompt, completion = dspy_private.model_rates("openai/gpt-4o-mini")
    assert isinstance(prompt, float) and isinstance(completion, float) and 0 < prompt < completion


def test_dspys_reply_reading_functions_the_reply_bound_wraps_keep_their_shape():
    assert dspy_private.reply_hook_parameters() == dspy_private.LM15_REPLY_HOOKS
    dspy_private.bound_dspy_engine_replies(32 << 20)
    assert dspy_private.reply_hook_parameters() == dspy_private.LM15_REPLY_HOOKS  # the originals, once wrapped


def _private_uses(tree: ast.AST) -> list[str]:
    """Imports of a private DSPy name or of DSPy's internal client modules, and attribute
    chains on ``dspy`` that reach a private name (code only: docstrings may name them)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dspy"):
            if node.module.startswith("dspy.clients") or any(a.name.startswith("_") for a in node.names):
                found.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name.startswith("dspy.clients")]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id == "dspy":
                found.append(f"line {node.lineno}: dspy...{node.attr}")
    return found


def test_no_other_module_uses_a_private_dspy_name():
    offenders = []
    for top in PACKAGE_DIRS:
        for path in (REPO / top).rglob("*.py"):
            if path.name != "dspy_private.py":
                offenders += [f"{path.relative_to(REPO)} {use}"
                              for use in _private_uses(ast.parse(path.read_text(encoding="utf-8")))]
    assert not offenders, "\n".join(offenders)


def test_the_scan_finds_a_private_import():
    assert _private_uses(ast.parse("from dspy.adapters.json_adapter import _x\nimport dspy.clients.y\n"
                                   "dspy.settings._hidden"))  == ["line 1: from dspy.adapters.json_adapter import ...",
                                                                   "line 2: import dspy.clients.y",
                                                                   "line 3: dspy..._hidden"]
