"""Audit a task set: what code can find in it, and how varied it is.

For any tasks (ours, or tau2's own) on one environment: gold replay, mutants
(``trajectory2task.programs.verification.mutants``), claims (``trajectory2task.programs.verification.premises``), text lint
(``trajectory2task.programs.verification.lint``), the classes only a domain's policy defines, by the
domain's own checks (``trajectory2task.domains.audit_checks``; ``None``: the domain has none for
that class), and diversity figures: the write-tool mix, distinct write sequences, how often one
customer is reused, gold length, and the breadth items (3+ writes, information the agent must
tell, a hand-off to a human, a generic tool such as a calculator).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from trajectory2task.domains import Environment
from trajectory2task.domains.audit_checks import DOMAIN_AUDIT_CLASSES
from trajectory2task.programs.verification.coherence import COHERENCE_CLASSES, coherence_findings
from trajectory2task.programs.verification.lint import lint_task, private_ids
from trajectory2task.programs.verification.mutants import run_mutants
from trajectory2task.programs.verification.premises import false_claims
from trajectory2task.programs.verification.verifier import Verifier
from trajectory2task.signatures.models import Task


# every class the audit reports, in its table's order (a class with no finding shows 0; a
# domain-defined class the domain has no check for shows None, "n/a" in the table)
PROBLEMS: tuple[str, ...] = ("failing_gold", "noop_passes", "mutant_passes", "single_reading", "false_premise",
                             *COHERENCE_CLASSES, *DOMAIN_AUDIT_CLASSES, "lint")


class TaskFinding(BaseModel):
    task_id: str
    condition: str
    problem: str  # one of PROBLEMS
    detail: str


class Diversity(BaseModel):
    tasks: int
    by_condition: dict[str, int]
    write_tool_mix: dict[str, int]  # gold writes per tool, over all tasks
    distinct_write_sequences: int  # distinct ordered tuples of write tools
    writes_per_task: dict[str, int]  # "0", "1", "2", "3+" -> tasks
    gold_length: dict[str, float]  # mean, median, max gold actions
    distinct_customers: int  # users the gold authenticates (or acts for)
    max_tasks_per_customer: int
    communicate_share: float  # tasks whose criteria hold information the agent must tell
    handoff_tasks: int  # gold or required actions with a tool that ends the conversation
    generic_tool_tasks: int  # gold with a generic tool (e.g. a calculator)
    by_condition_and_tool: dict[str, dict[str, int]]  # condition -> write (or forbidden write) tool -> tasks


class AuditReport(BaseModel):
    findings: list[TaskFinding] = Field(default_factory=list)
    # problem -> tasks with a finding, every class in PROBLEMS; None: a class the domain has no check for
    counts: dict[str, int | None] = Field(default_factory=dict)
    lint_rules: dict[str, int] = Field(default_factory=dict)  # rule -> findings
    non_discriminative_writes: dict[str, int] = Field(default_factory=dict)  # tool -> tasks where dropping it passes
    diversity: Diversity


def _tool_kind(environment: Environment[Any], name: str) -> str:
    spec = environment.tools.get(name)
    return spec.kind if spec is not None else "unknown"


def diversity(environment: Environment[Any], tasks: Sequence[Task], verifier: Verifier) -> Diversity:
    writes = [[a.name for a in t.gold_actions if _tool_kind(environment, a.name) == "write"] for t in tasks]
    lengths = [len(t.gold_actions) for t in tasks] or [0]
    customers: Counter[str] = Counter()
    for task in tasks:
        user = verifier.replay_gold(task).user_id
        if user:
            customers[user] += 1
    ends = {n for n, s in environment.tools.items() if s.ends_conversation}
    generic = {n for n, s in environment.tools.items() if s.kind == "generic" and not s.ends_conversation}
    per_cell: dict[str, Counter[str]] = {}
    for task, names in zip(tasks, writes):
        tools = [a.name for a in task.actions_should_not_take] if task.condition == "infeasible" else names
        per_cell.setdefault(task.condition, Counter()).update(set(tools))
    bins = Counter("3+" if len(w) >= 3 else str(len(w)) for w in writes)
    return Diversity(
        tasks=len(tasks), by_condition=dict(Counter(t.condition for t in tasks)),
        write_tool_mix=dict(Counter(n for w in writes for n in w).most_common()),
        distinct_write_sequences=len({tuple(w) for w in writes}),
        writes_per_task={k: bins.get(k, 0) for k in ("0", "1", "2", "3+")},
        gold_length={"mean": round(statistics.mean(lengths), 2), "median": float(statistics.median(lengths)),
                     "max": float(max(lengths))},
        distinct_customers=len(customers), max_tasks_per_customer=max(customers.values(), default=0),
        communicate_share=round(sum(bool(t.communicate_info) for t in tasks) / len(tasks), 4) if tasks else 0.0,
        handoff_tasks=sum(any(a.name in ends for a in t.gold_actions + t.actions_should_take) for t in tasks),
        generic_tool_tasks=sum(any(a.name in generic for a in t.gold_actions) for t in tasks),
        by_condition_and_tool={c: dict(sorted(n.items())) for c, n in sorted(per_cell.items())})


def audit(environment: Environment[Any], tasks: Sequence[Task]) -> AuditReport:
    """Every finding code can make on ``tasks``, and their diversity figures."""
    verifier = Verifier(environment)
    private = private_ids(environment)
    findings: list[TaskFinding] = []
    lint_rules: Counter[str] = Counter()
    weak_writes: Counter[str] = Counter()

    def add(task: Task, problem: str, detail: str) -> None:
        findings.append(TaskFinding(task_id=task.id, condition=task.condition, problem=problem, detail=detail))

    for task in tasks:
        gold = verifier.replay_gold(task)
        if gold.errors:
            add(task, "failing_gold", "; ".join(f"{e.action_id or e.name}: {e.error}" for e in gold.errors))
        report = run_mutants(verifier, task)
        if "do_nothing" in report.passing:
            add(task, "noop_passes", "a do-nothing agent passes")
        others = [n for n in report.passing if n != "do_nothing"]
        if others:
            add(task, "mutant_passes", ", ".join(others))
            weak_writes.update({o.name.split(":", 1)[-1] for o in report.outcomes if o.passed and o.kind == "drop_write"})
        if report.executable_readings is not None and report.executable_readings < 2:
            add(task, "single_reading", f"{report.executable_readings} reading(s) run")
        for false in false_claims(environment, task.claims):
            add(task, "false_premise", false)
        for finding in coherence_findings(environment, task):
            add(task, finding.cls, finding.detail)
        for check in environment.domain.audit_checks:
            for detail in check.check(task, environment):
                add(task, check.cls, detail)
        found = lint_task(task, private)
        if found:
            lint_rules.update(f.rule for f in found)
            add(task, "lint", "; ".join(f"{f.rule} in {f.field}: {f.excerpt}" for f in found[:3]))
    counts = Counter({problem: 0 for problem in PROBLEMS})
    for problem in {(f.task_id, f.problem) for f in findings}:
        counts[problem[1]] += 1
    checked = {check.cls for check in environment.domain.audit_checks}
    by_class: dict[str, int | None] = {p: None if p in DOMAIN_AUDIT_CLASSES and p not in checked else counts[p]
                                       for p in PROBLEMS}
    return AuditReport(findings=findings, counts=by_class, lint_rules=dict(lint_rules.most_common()),
                       non_discriminative_writes=dict(weak_writes.most_common()),
                       diversity=diversity(environment, tasks, verifier))
