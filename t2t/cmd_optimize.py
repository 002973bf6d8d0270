"""`t2t optimize` (DSPy optimizers scored by verification) and `t2t sweep` (Optuna over the
pipeline's knobs)."""

from __future__ import annotations

import os
from typing import Annotated, Any, Optional

import typer

from t2t.errors import UserError

StoreOpt = Annotated[Optional[str], typer.Option("--store", help="Store file (default $T2T_STORE or ./t2t.duckdb).")]
LmOpt = Annotated[Optional[str], typer.Option("--lm", help="LiteLLM model string, e.g. openai/gpt-4o-mini.")]
ApiBaseOpt = Annotated[Optional[str], typer.Option("--api-base", help="Base URL of an OpenAI-compatible server.")]
LmConfigOpt = Annotated[Optional[str], typer.Option("--lm-config", help="LM config file (TOML or JSON).")]
DbOpt = Annotated[Optional[str], typer.Option("--db", help="Database JSON (default: the seeded generator's).")]
UsersOpt = Annotated[int, typer.Option("--users", min=1, help="Users in the generated database.")]
DomainOpt = Annotated[str, typer.Option("--domain", help="Domain name.")]

SWEEP_HELP = """Tune the generation pipeline's knobs with an Optuna study: exploration depth and write
target, the condition mix and (with an LM) the temperatures of the explorer, writer and adapter.

Each trial is one generation run of --n items into the store, on the same database and item seeds; its
value is verified tasks per unit cost (USD, or LM calls when the model has no price; offline, the LM calls
the same run would make: exploration proposals + tasks written + adaptations attempted). Every trial is
stored in the trials table. --trials is the study's total: run the same command again to resume a study
that stopped midway. Which knobs mattered: printed at the end, and with SQL, e.g.

  t2t sql "SELECT k.key AS knob, k.value->>'$' AS level, count(*) AS trials, avg(t.value) AS mean_value
           FROM trials t, json_each(t.params) k WHERE t.study = 'sweep' AND t.state = 'COMPLETE'
           GROUP BY ALL ORDER BY knob, mean_value DESC"
"""


def _lm_config(flags: dict[str, Optional[str]], config_path: Optional[str]) -> Any:
    from programs.lm import LMConfigError, load_lm_config

    try:
        return load_lm_config(flags=flags, config_path=config_path)
    except LMConfigError as exc:
        raise UserError(str(exc)) from None


def sweep(
    trials: Annotated[int, typer.Option("--trials", min=0, help="Trials the study should have in all.")] = 10,
    study: Annotated[str, typer.Option("--study", help="Study name (resumes it when it exists).")] = "sweep",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sampler, the database and the items.")] = 0,
    n: Annotated[int, typer.Option("--n", min=1, help="Items (explorations) per trial.")] = 8,
    domain: DomainOpt = "retail",
    db: DbOpt = None,
    users: UsersOpt = 500,
    lm: LmOpt = None,
    api_base: ApiBaseOpt = None,
    lm_config: LmConfigOpt = None,
    store: StoreOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
) -> None:
    """Optuna sweep over the pipeline's knobs, maximizing verified tasks per unit cost."""
    from programs.lm import ensure_local_cost_map

    ensure_local_cost_map()
    from optimize.sweep import (
        KNOB_LEVELS_SQL,
        PIPELINE_KNOBS,
        SweepSettings,
        pipeline_evaluator,
        run_sweep,
        search_space,
        stored_trials,
    )
    from store import TaskStore
    from t2t.output import console, err_console, print_json_line, print_table, progress
    from t2t.settings import load_environment, store_path

    config = _lm_config({"lm": lm, "api_base": api_base}, lm_config)
    with_lm = not config.offline
    env = load_environment(domain, db, seed=seed, users=users)
    settings = SweepSettings(study=study, trials=trials, seed=seed, n=n, domain=env.domain.name,
                             db_path=os.path.abspath(db) if db else None, db_users=users)
    space = search_space(with_lm)
    with TaskStore(store_path(store)) as task_store:
        evaluate = pipeline_evaluator(task_store, env, settings, config if with_lm else None)
        try:
            with progress("sweep", total=trials) as bar:
                done = min(trials, len(stored_trials(task_store, study)))
                task = bar.add_task(f"sweep {study}", total=trials, completed=done)
                report = run_sweep(task_store, settings, space, evaluate,
                                   run_config={"space": [k.model_dump() for k in PIPELINE_KNOBS
                                                         if k.name in space]},
                                   on_trial=lambda record: bar.advance(task))
        except KeyboardInterrupt:
            err_console.print(f"interrupted: finished trials are stored; run the same command to resume {study}")
            raise
    if json_out:
        print_json_line(report.model_dump(mode="json"))
        return
    print_table(f"study {study}: {len(report.trials)} trial(s), {report.ran} run now",
                ["trial", "state", "value", "verified", "cost", "params"],
                [(t["number"], t["state"], _fmt(t["value"]), t["user_attrs"].get("verified", ""),
                  _fmt(t["user_attrs"].get("cost")), " ".join(f"{k}={_fmt(v)}" for k, v in t["params"].items()))
                 for t in report.trials])
    if report.best is not None:
        attrs = report.best["user_attrs"]
        console.print(f"best: trial {report.best['number']}, {attrs.get('verified')} verified / "
                      f"{_fmt(attrs.get('cost'))} {attrs.get('cost_unit')} = {_fmt(report.best['value'])}")
    if report.importances:
        print_table("which knobs mattered (Optuna importance)", ["knob", "importance"],
                    [(k, f"{v:.3f}") for k, v in sorted(report.importances.items(), key=lambda kv: -kv[1])])
    console.print("per-knob effects with SQL:\n  t2t sql \"" + " ".join(
        KNOB_LEVELS_SQL.replace("'sweep'", f"'{study}'").split()) + "\"", soft_wrap=True, markup=False)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def register(app: typer.Typer) -> None:
    app.command("sweep", help=SWEEP_HELP)(sweep)
