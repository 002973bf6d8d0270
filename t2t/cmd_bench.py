"""`t2t bench`: agents x simulated user on verified tasks; pass@1 and pass^k per condition.

The command parses its flags into a `BenchRequest`, runs it with
`trajectory2task.usecases.bench_run` (or `bench_estimate`), and prints the result; the exit
status says whether the task set is calibrated.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from trajectory2task.bench_setup import BENCH_ROLES, BenchRequest
from trajectory2task.lm_options import (ContextOpt, MaxConcurrentOpt, MaxTokensOpt, RetriesOpt, StructuredOpt, TemperatureOpt,
                            TimeoutOpt, knob_flags)
from trajectory2task.output import console, print_error_line, print_json_line, print_table, print_text
from trajectory2task.ray_options import RayOpt
from trajectory2task.settings import MAX_TRIALS, MAX_TURNS, MAX_WORKERS


def _split_models(value: str | None) -> list[str]:
    return [m.strip() for m in (value or "").split(",") if m.strip()]


def bench(
    agent_lm: Annotated[Optional[str], typer.Option(
        "--agent-lm", help="Agent models, comma-separated LiteLLM strings; 'do-nothing' and 'oracle' name the "
                           "reference agents. Default: both reference agents (calibration).")] = None,
    user_lm: Annotated[Optional[str], typer.Option(
        "--user-lm", help="User-simulator model (LiteLLM string). Default: the scripted offline user.")] = None,
    user_program: Annotated[Optional[str], typer.Option(
        "--user-program", help="Compiled user-simulator state saved by `t2t optimize --program user --name NAME`; "
                               "needs --user-lm.")] = None,
    agent_program: Annotated[Optional[str], typer.Option(
        "--agent-program", help="Compiled agent state saved by `t2t optimize --program agent --name NAME`, "
                                "loaded into every --agent-lm model.")] = None,
    trials: Annotated[Optional[int], typer.Option("--trials", help="Trials per task and agent (k). \\[default: 1]",
                                                  min=1, max=MAX_TRIALS)] = None,
    tasks: Annotated[Optional[str], typer.Option(
        "--tasks", help="An SQL filter over tasks_latest (e.g. \"condition = 'ambiguous'\"), or a tau2 tasks.json "
                        "/ JSON-lines file. \\[default: verified]")] = None,
    db: Annotated[Optional[str], typer.Option("--db", help="Database JSON (default: a generated one).")] = None,
    seed: Annotated[Optional[int], typer.Option(
        "--seed", help="Seed of the generated database when --db is not given. \\[default: 0]")] = None,
    domain: Annotated[Optional[str], typer.Option("--domain", help="Domain name. \\[default: the tasks' own "
                                                                   "domain, else retail]")] = None,
    store: Annotated[Optional[str], typer.Option("--store", help="Store file (default $T2T_STORE or ./t2t.duckdb).")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Rollouts run at once.", min=1,
                                             max=MAX_WORKERS)] = 8,
    processes: Annotated[int, typer.Option(
        "--processes", help="Ray actors the rollouts run on, each a process with its own event loop and a share "
                            "of --concurrency and of each role's --max-concurrent. Above 1 without --ray: "
                            "a Ray on this machine with that many CPUs (same as --ray local). With --ray: "
                            "the number of actors. \\[default: 1 without --ray, one per CPU with it]",
        min=1, max=64, show_default=False)] = 1,
    ray: RayOpt = None,
    max_turns: Annotated[Optional[int], typer.Option("--max-turns", help="Agent turns per rollout. \\[default: 30]",
                                                     min=1, max=MAX_TURNS)] = None,
    resume: Annotated[Optional[str], typer.Option("--resume", help="Finish an interrupted bench run.")] = None,
    api_base: Annotated[Optional[str], typer.Option("--api-base", help="OpenAI-compatible endpoint for the LMs.")] = None,
    function_calling: Annotated[Optional[bool], typer.Option(
        "--function-calling/--no-function-calling",
        help="Send tools natively (register the model as function-calling if LiteLLM does not know it), or "
             "describe them in the prompt. Default: what LiteLLM's model map says.")] = None,
    lm_config: Annotated[Optional[str], typer.Option("--lm-config", help="LM config file (TOML or JSON).")] = None,
    require_clarification: Annotated[Optional[bool], typer.Option(
        "--require-clarification", help="An ambiguous task's rollout also fails (no_clarification) when the agent "
                                        "acts before the user gives any withheld detail. The oracle knows the gold "
                                        "and does not ask: leave this off for calibration.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per score cell, then a summary.")] = False,
    timeout: TimeoutOpt = None,
    retries: RetriesOpt = None,
    max_tokens: MaxTokensOpt = None,
    temperature: TemperatureOpt = None,
    structured: StructuredOpt = None,
    context_window: ContextOpt = None,
    max_concurrent: MaxConcurrentOpt = None,
    estimate: Annotated[bool, typer.Option("--estimate", help="Print the LM calls, tokens and cost the run would "
                                                              "make, counted on the real prompts rendered on the "
                                                              "reference agents' conversations, and exit without "
                                                              "calling a model.")] = False,
) -> None:
    """Run agents against the simulated user on tasks, judge every rollout, report pass@1 and pass^k."""
    from trajectory2task.settings import store_path
    from trajectory2task.usecases import bench_estimate, bench_run

    request = BenchRequest(
        store=store_path(store), agents=_split_models(agent_lm) or None, user=user_lm, user_program=user_program,
        agent_program=agent_program, trials=trials, tasks=tasks, db=db, seed=seed, domain=domain,
        max_turns=max_turns, resume=resume, api_base=api_base, function_calling=function_calling,
        lm_config=lm_config, require_clarification=require_clarification, concurrency=concurrency,
        processes=processes, ray=ray,
        knobs=knob_flags(BENCH_ROLES, timeout=timeout, retries=retries, max_tokens=max_tokens,
                         temperature=temperature, structured=structured, context_window=context_window,
                         max_concurrent=max_concurrent))
    if estimate:
        from trajectory2task.estimate import print_estimate

        plan, settings, title = bench_estimate(request, print_error_line)
        print_estimate(plan, settings, json_out, unit="task", title=title)
        return
    with _ProgressBar() as bar:
        result = bench_run(request, print_error_line, bar)
    _report(result, json_out)


class _ProgressBar:
    """The rollouts bar on stderr (a terminal only), with the LM totals as its description; shown
    from the first rollout to the last, so the lines before and after stay plain."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, total: int, done: int) -> None:
        from trajectory2task.output import progress

        self.bar = progress("rollouts", total).__enter__()
        self.task = self.bar.add_task("rollouts", total=total, completed=done)

    def advance(self) -> None:
        self.bar.update(self.task, advance=1)

    def lm_call(self, line: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=f"rollouts | {line}")

    def stop(self) -> None:
        bar, self.bar = self.bar, None
        if bar is not None:
            bar.__exit__(None, None, None)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _report(result: Any, json_out: bool) -> None:
    """The scores (a table, or one JSON line per cell and a summary), the calibration, the
    crashes; exits 1 when a verified task breaks a reference agent or no LM rollout was scored."""
    from trajectory2task.errors import UserError
    from trajectory2task.programs.loop.agent import REFERENCE_AGENTS

    config, rows, cells, problems = result.config, result.rows, result.cells, result.calibration
    run_id, crashes = result.run_id, result.crashed
    breaches = result.calibration_breaches()
    if json_out:
        for cell in cells:
            print_json_line(cell.public())
        print_json_line({"run_id": run_id, "rollouts": len(rows), "crashed": [c.model_dump() for c in crashes],
                         "calibration": [p.model_dump() for p in problems], "retried": result.retries})
    else:
        ks = [k for k in range(2, config.trials + 1)][:4]
        columns = ["agent", "condition", "tasks", "rollouts", "pass@1", *[f"pass^{k}" for k in ks],
                   "failure reasons", "not scored (not the agent's)"]
        table_rows = [(c.agent_model, c.condition, c.tasks, c.rollouts, _fmt(c.pass_at_1 if c.tasks else None),
                       *[_fmt(c.pass_hat_k.get(k)) for k in ks],
                       ", ".join(f"{r} {n}" for r, n in c.failure_reasons.items()) or "-",
                       ", ".join(f"{side} {n}" for side, n in c.not_scored.items()) or "-") for c in cells]
        print_table(f"bench run {run_id} (user: {config.user}, {config.trials} trial(s), "
                    f"max {config.max_turns} turns)", columns, table_rows)
        if any(a in REFERENCE_AGENTS for a in config.agents):
            if problems:
                unverified = len(problems) - len(breaches)
                head = (f"{len(breaches)} verified task(s) break a reference agent" if breaches
                        else "no verified task breaks a reference agent")
                console.print(f"calibration: {head}" + (f"; {unverified} unverified task(s) do" if unverified else ""))
                for problem in problems:
                    print_text(f"  {problem.describe()}")
            else:
                console.print(f"calibration: all {result.tasks} task(s) fail for do-nothing and pass for "
                              "the oracle")
    for crash in crashes[:5]:
        print_error_line(f"t2t: rollout {crash.job.task_id}/{crash.job.agent}/{crash.job.trial} crashed: "
                         f"{crash.error}")
    if crashes:
        raise UserError(f"{len(crashes)} rollout(s) crashed and were not stored; rerun with --resume {run_id}")
    lm_agents = [a for a in config.agents if a not in REFERENCE_AGENTS]
    lm_rows = [r for r in rows if r.agent_model in lm_agents or config.user != "scripted"]
    if lm_rows and all(r.not_agents for r in lm_rows):
        # nothing was measured: every rollout that involved an LM failed on the LM's side
        for line in result.lm_failure_reasons or ["every LM rollout ended lm_error"]:
            print_error_line(f"t2t: error: {line}")
        print_error_line(f"t2t: error: no rollout scored: all {len(lm_rows)} failed on the user simulator or "
                         "the LM server; fix the above and redo them with a new run")
        raise typer.Exit(1)
    if breaches:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
