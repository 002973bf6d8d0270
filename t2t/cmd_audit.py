"""`t2t audit`: what code can find in a task file, and how varied the tasks are."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from trajectory2task.cmd_tasks import DbOpt, DomainOpt, PolicyOpt, StrictOpt, _load
from trajectory2task.output import console, print_json_line, print_table
from trajectory2task.settings import load_environment


def audit(tasks_file: Annotated[Path, typer.Argument(help="tau2 tasks.json (ours or tau2's), or JSON lines of tasks.")],
          domain: DomainOpt = "retail", db: DbOpt = None, policy: PolicyOpt = None,
          json_out: Annotated[bool, typer.Option("--json", help="One JSON object instead of tables.")] = False,
          strict: StrictOpt = False) -> None:
    """Mutants, premises, text lint and diversity figures of a task set."""
    from trajectory2task.programs.verification.audit import audit as run_audit
    from trajectory2task.errors import UserError

    env = load_environment(domain, db, policy)
    tasks, _ = _load(tasks_file, strict, domain)
    unknown = sorted({a.name for t in tasks for a in t.gold_actions if a.name not in env.tools})
    if unknown:
        raise UserError(f"unknown tool(s) for domain {domain}: {', '.join(unknown)}")
    report = run_audit(env, tasks)
    if json_out:
        print_json_line(report.model_dump())
        return
    d = report.diversity
    print_table(f"audit of {len(tasks)} tasks: problems code can find",
                ["problem", "tasks", "examples"],
                [(p, "n/a" if n is None else n,
                  ", ".join(sorted({f.task_id for f in report.findings if f.problem == p})[:6]))
                 for p, n in report.counts.items()])
    if None in report.counts.values():
        console.print("n/a: a class only a domain's policy defines, which this domain's policy does not have "
                      "(it supplies no check for it)")
    if report.non_discriminative_writes:
        console.print("non-discriminative writes (dropping them still passes): "
                      + ", ".join(f"{k} {n}" for k, n in report.non_discriminative_writes.items()))
    if report.lint_rules:
        console.print("lint findings by rule: " + ", ".join(f"{k} {n}" for k, n in report.lint_rules.items()))
    print_table("diversity", ["figure", "value"], [
        ("tasks by condition", ", ".join(f"{k} {n}" for k, n in d.by_condition.items())),
        ("write-tool mix", ", ".join(f"{k} {n}" for k, n in d.write_tool_mix.items())),
        ("distinct write sequences", d.distinct_write_sequences),
        ("writes per task", ", ".join(f"{k}: {n}" for k, n in d.writes_per_task.items())),
        ("gold length (mean / median / max)", f"{d.gold_length['mean']} / {d.gold_length['median']:g} / "
                                              f"{d.gold_length['max']:g}"),
        ("distinct customers (max tasks per customer)", f"{d.distinct_customers} ({d.max_tasks_per_customer})"),
        ("tasks with information to tell", f"{d.communicate_share:.0%}"),
        ("tasks with a hand-off", d.handoff_tasks),
        ("tasks with a generic tool", d.generic_tool_tasks),
        *((f"{condition}: tasks per write tool", ", ".join(f"{k} {n}" for k, n in tools.items()))
          for condition, tools in d.by_condition_and_tool.items()),
    ])


def register(app: typer.Typer) -> None:
    app.command("audit")(audit)
