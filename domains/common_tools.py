"""Generic tools any domain may list: arithmetic and the hand-off to a human agent.

Both behave as tau2-bench's tools of the same names, in retail and airline alike.
"""

from __future__ import annotations

import ast
import operator

from trajectory2task.domains.runtime import ToolError, Transaction, tool

_OPERATORS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.UAdd: operator.pos, ast.USub: operator.neg,
}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.operand))
    raise ToolError("Invalid expression")


def evaluate(expression: str) -> float:
    """The value of an arithmetic expression as ``calculate`` computes it (ToolError if it is not one)."""
    if any(ch not in "0123456789+-*/(). " for ch in expression):
        raise ToolError("Invalid characters in expression")
    try:
        return _evaluate(ast.parse(expression, mode="eval"))
    except SyntaxError:
        raise ToolError("Invalid expression") from None
    except ZeroDivisionError:
        raise ToolError("Division by zero") from None


CALCULATOR_TOOL = "calculate"  # the name generation code uses to work a sum out with the tool below


def calculator_arguments(expression: str) -> dict[str, str]:
    """The arguments of a ``calculate`` call for ``expression``."""
    return {"expression": expression}


def amount_text(value: float) -> str:
    """An amount as an agent reads it off ``calculate`` ("540" for 540.0, "12.5", "99.99"): a
    substring of what ``calculate`` prints and of the same amount written with cents."""
    rounded = round(value, 2)
    return str(int(rounded)) if rounded == int(rounded) else str(rounded)


@tool("generic")
def calculate(tx: Transaction, expression: str) -> str:
    """Evaluate an arithmetic expression and return the result rounded to two decimals.

    Args:
        expression: Numbers, parentheses, spaces and the operators + - * / only, e.g. '(12.5 + 3) * 2'.
    """
    return str(round(evaluate(expression), 2))


@tool("generic", ends_conversation=True)
def transfer_to_human_agents(tx: Transaction, summary: str) -> str:
    """Hand the conversation to a human agent, with a short summary of the user's issue.

    Only for requests that cannot be handled with the other tools under the policy.

    Args:
        summary: What the user needs and what has been done so far.
    """
    return "Transfer successful"
