"""Commands over task files: replay gold actions, verify tasks and recorded rollouts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from trajectory2task.output import print_error_line, print_json_line, print_table, print_text
from trajectory2task.settings import load_environment

DomainOpt = Annotated[str, typer.Option("--domain", help="Domain name.")]
DbOpt = Annotated[Optional[str], typer.Option("--db", help="Database JSON (default: a generated one, seed 0).")]
PolicyOpt = Annotated[Optional[str], typer.Option("--policy", help="Policy file to use instead of the domain's.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object per line instead of a table.")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Stop at the first malformed task.")]


def _load(tasks_file: Path, strict: bool, domain: str):
    from trajectory2task.store.files import load_tasks

    tasks, problems = load_tasks(tasks_file, strict=strict, domain=domain)
    for problem in problems:
        print_error_line(f"t2t: skipped {problem.line()}")
    return tasks, problems


def replay(tasks_file: Annotated[Path, typer.Argument(help="tau2 tasks.json, or JSON lines of tasks.")],
           domain: DomainOpt = "retail", db: DbOpt = None, policy: PolicyOpt = None, json_out: JsonOpt = False,
           strict: StrictOpt = False) -> None:
    """Replay each task's gold actions on a fresh copy of the database and report errors and changes."""
    from trajectory2task.programs.verification.verifier import Verifier

    env = load_environment(domain, db, policy)
    unknown_tools = set()
    tasks, problems = _load(tasks_file, strict, domain)
    for task in tasks:
        unknown_tools |= {a.name for a in task.gold_actions if a.name not in env.tools}
    if unknown_tools:
        from trajectory2task.errors import UserError

        raise UserError(f"unknown tool(s) for domain {domain}: {', '.join(sorted(unknown_tools))}")
    verifier = Verifier(env)
    rows = []
    failing = []
    for task in tasks:
        gold = verifier.replay_gold(task)
        if gold.errors:
            failing.append(task.id)
        if json_out:
            print_json_line({"task_id": task.id,
                             "errors": [{"action_id": e.action_id, "error": e.error} for e in gold.errors],
                             "changed": gold.changed, "end_state_hash": gold.end_state_hash})
        else:
            changed = ", ".join(f"{t}: {len(ids)}" for t, ids in gold.changed.items()) or "-"
            errors = "; ".join(f"{e.action_id}: {e.error}" for e in gold.errors) or "-"
            rows.append((task.id, len(task.gold_actions), errors, changed, gold.end_state_hash[:12]))
    if not json_out:
        print_table(f"gold replay on {db or 'generated database'}",
                    ["task", "actions", "failing actions", "changed records", "end state"], rows)
        print_text(f"{len(tasks)} tasks replayed, {len(failing)} with failing gold actions"
                   + (f": {', '.join(failing)}" if failing else "")
                   + (f"; {len(problems)} malformed task(s) skipped" if problems else ""))


def verify(tasks_file: Annotated[Path, typer.Argument(help="tau2 tasks.json, or JSON lines of tasks.")],
           domain: DomainOpt = "retail", db: DbOpt = None, policy: PolicyOpt = None, json_out: JsonOpt = False,
           strict: StrictOpt = False,
           rollouts: Annotated[Optional[Path], typer.Option(
               "--rollouts", help="Judge recorded rollouts (JSON lines with task_id, tool_calls, messages).")] = None,
           store: Annotated[Optional[str], typer.Option("--store", help="Store file (default ./t2t.duckdb).")] = None,
           save: Annotated[bool, typer.Option("--save/--no-save", help="Record tasks and verdicts in the store.")] = False,
           mutants: Annotated[bool, typer.Option("--mutants", help="Judge each task's wrong agents (do-nothing, a "
                                                               "write dropped, the first goal, another reading, a "
                                                               "forbidden attempt) and report which pass.")] = False,
           ) -> None:
    """Verify tasks statically (gold replay, do-nothing agent, infeasibility), or judge recorded rollouts."""
    from trajectory2task.programs.verification.verifier import Verifier
    from trajectory2task.store.files import load_rollouts
    from trajectory2task.errors import UserError

    env = load_environment(domain, db, policy)
    tasks, problems = _load(tasks_file, strict, domain)
    verifier = Verifier(env)
    by_id = {t.id: t for t in tasks}
    if mutants:
        if rollouts is not None:
            raise UserError("--mutants judges the tasks' own wrong agents; it does not take --rollouts")
        _report_mutants(verifier, tasks, json_out)
        return
    if rollouts is None:
        verdicts = [verifier.verify_task(t) for t in tasks]
        kind = "static"
    else:
        recorded, bad = load_rollouts(rollouts, strict=strict)
        for problem in bad:
            print_error_line(f"t2t: skipped rollout {problem.line()}")
        verdicts = []
        for index, item in enumerate(recorded):
            if item is None:
                continue
            task = by_id.get(item.task_id)
            if task is None:
                raise UserError(f"rollout on line {index + 1} names task {item.task_id}, which is not in {tasks_file}")
            from trajectory2task.signatures.models import Step

            steps = [Step(call=c, observation="") for c in item.tool_calls]
            verdicts.append(verifier.judge(task, steps, item.messages, rollout_id=f"line-{index + 1}"))
        kind = "rollout"
    if save:
        from trajectory2task.store import TaskStore
        from trajectory2task.settings import store_path

        with TaskStore(store_path(store)) as ts:
            run_id = ts.start_run("verify", {"tasks_file": str(tasks_file), "db": db, "domain": domain,
                                             "rollouts": str(rollouts) if rollouts else None})
            ts.add_tasks(run_id, tasks)
            ts.add_verdicts(run_id, verdicts, kind=kind)
            ts.finish_run(run_id)
    if json_out:
        for verdict in verdicts:
            print_json_line(verdict.public())
        return
    rows = [(v.task_id if kind == "static" else f"{v.task_id} ({v.rollout_id})", "pass" if v.passed else "FAIL",
             ", ".join(v.reasons) or "-", "; ".join(v.details)[:160] or "-") for v in verdicts]
    print_table(f"{kind} verification", ["task", "verdict", "reasons", "details"], rows)
    passed = sum(v.passed for v in verdicts)
    from collections import Counter

    reasons = Counter(r for v in verdicts for r in v.reasons)
    print_text(f"{passed}/{len(verdicts)} passed" + "".join(f"; {r}: {n}" for r, n in reasons.most_common()))


def _report_mutants(verifier, tasks, json_out: bool) -> None:
    from collections import Counter

    from trajectory2task.programs.verification.mutants import run_mutants

    reports = [run_mutants(verifier, t) for t in tasks]
    if json_out:
        for r in reports:
            print_json_line({"task_id": r.task_id, "gold_pass": r.gold_passed, "gold_reasons": r.gold_reasons,
                             "mutants": [o.name for o in r.outcomes], "passing": r.passing})
        return
    rows = [(r.task_id, "pass" if r.gold_passed else "FAIL " + ", ".join(r.gold_reasons), len(r.outcomes),
             ", ".join(r.passing) or "-") for r in reports]
    print_table("mutants", ["task", "gold", "mutants", "passing mutants"], rows)
    kinds = Counter(o.kind for r in reports for o in r.outcomes if o.passed)
    weak = sum(1 for r in reports if r.passing)
    print_text(f"{weak}/{len(reports)} tasks with a passing mutant; {sum(not r.gold_passed for r in reports)} "
               "with a failing gold" + "".join(f"; {k}: {n}" for k, n in kinds.most_common()))


def register(app: typer.Typer) -> None:
    app.command("replay")(replay)
    app.command("verify")(verify)
