"""`t2t optimize` (DSPy optimizers scored by verification) and `t2t sweep` (Optuna over the
pipeline's knobs)."""

from __future__ import annotations

import os
from typing import Annotated, Any, Optional

import typer

from trajectory2task.errors import UserError
from trajectory2task.lm_options import (CacheDirOpt, ContextOpt, MaxConcurrentOpt, MaxTokensOpt, NoCacheOpt, RetriesOpt,
                                        StructuredOpt, TemperatureOpt, TimeoutOpt, add_knobs, configure_cache)
from trajectory2task.settings import (MAX_CANDIDATES, MAX_DB_USERS, MAX_DEMOS, MAX_ITEMS_PER_TRIAL, MAX_METRIC_CALLS,
                                      MAX_TRIALS, MAX_WORKERS)

StoreOpt = Annotated[Optional[str], typer.Option("--store", help="Store file (default $T2T_STORE or ./t2t.duckdb).")]
LmOpt = Annotated[Optional[str], typer.Option("--lm", help="LiteLLM model string, e.g. openai/gpt-4o-mini.")]
ApiBaseOpt = Annotated[Optional[str], typer.Option("--api-base", help="Base URL of an OpenAI-compatible server.")]
LmConfigOpt = Annotated[Optional[str], typer.Option("--lm-config", help="LM config file (TOML or JSON).")]
DbOpt = Annotated[Optional[str], typer.Option("--db", help="Database JSON (default: the seeded generator's).")]
UsersOpt = Annotated[int, typer.Option("--users", min=1, max=MAX_DB_USERS, help="Users in the generated database.")]
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
    from trajectory2task.programs.lm.config import LMConfigError, load_lm_config
    from trajectory2task.settings import check_lm_config_file

    check_lm_config_file(config_path)
    try:
        return load_lm_config(flags=flags, config_path=config_path)
    except LMConfigError as exc:
        raise UserError(str(exc)) from None


def sweep(
    trials: Annotated[int, typer.Option("--trials", min=0, max=MAX_TRIALS,
                                                 help="Trials the study should have in all.")] = 10,
    study: Annotated[str, typer.Option("--study", help="Study name (resumes it when it exists).")] = "sweep",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sampler, the database and the items.")] = 0,
    n: Annotated[int, typer.Option("--n", min=1, max=MAX_ITEMS_PER_TRIAL,
                                             help="Items (explorations) per trial.")] = 8,
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
    from trajectory2task.programs.lm.prices import ensure_local_cost_map

    ensure_local_cost_map()
    from trajectory2task.optimize.sweep import (
        KNOB_LEVELS_SQL,
        PIPELINE_KNOBS,
        SweepSettings,
        pipeline_evaluator,
        run_sweep,
        search_space,
        stored_trials,
    )
    from trajectory2task.store import TaskStore
    from trajectory2task.output import console, err_console, print_json_line, print_table, progress
    from trajectory2task.settings import load_environment, store_path

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


OPTIMIZE_HELP = """Optimize a generation program with a DSPy optimizer, scored by verification.

--program explorer|writer|adapter|user|agent picks the module; --optimizer bootstrap|mipro|gepa picks
dspy.BootstrapFewShot, dspy.MIPROv2 or dspy.GEPA. --trainset selects the examples from the store: a
filter over tasks_latest (writer, adapter, user, agent) or the trajectories table (explorer), e.g.
"condition = 'general' AND verified", or a full query whose first column is the task or trajectory id.
The metric is computed by code: a task must pass static verification, a rollout of the oracle agent with
the scripted user, and its condition checks; a trajectory must be valid and new; a simulated user must
keep to its scenario; the agent's rollouts with the offline scripted user must pass the verifier
(--metric pass1, or --metric pass^k --k K over --metric-trials N rollouts per task; the agent learns from
verified tasks only). The compiled state (instructions and demos) is saved in the store under --name with
the scores before and after and the optimizer's trials; `t2t generate --programs NAME` loads it, and
`t2t bench --agent-program NAME` an agent's.

Needs an LM for the program's role (--lm, --<role>-lm via --lm-config, or T2T_LM). The database is the
one the selected items were generated on (from their generate run), unless --db/--seed/--users say
otherwise.
"""


def _environment_for(store: Any, kind: str, ids: list[str], domain: str, db: Optional[str], seed: Optional[int],
                     users: Optional[int]) -> Any:
    """The --db/--seed/--users database when given, else the one the first selected item's
    generate run used."""
    import json

    from trajectory2task.settings import DEFAULT_DB_SEED, DEFAULT_DB_USERS, load_environment

    if db is None and seed is None and users is None and ids:
        table, key = ("trajectories", "trajectory_id") if kind == "explorer" else ("tasks_latest", "task_id")
        _, rows = store.query(f"SELECT r.config FROM {table} x JOIN runs r ON r.run_id = x.run_id "
                              f"WHERE x.{key} = ? AND r.kind = 'generate' LIMIT 1", [ids[0]])
        if rows:
            config = json.loads(rows[0][0]) if isinstance(rows[0][0], str) else rows[0][0]
            module = config.get("domain_module") or config.get("domain", domain)  # a package is known by its path
            return load_environment(module, config.get("db_path"),
                                    seed=int(config.get("seed", DEFAULT_DB_SEED)),
                                    users=int(config.get("db_users", DEFAULT_DB_USERS)))
    return load_environment(domain, db, seed=DEFAULT_DB_SEED if seed is None else seed,
                            users=DEFAULT_DB_USERS if users is None else users)


def optimize(
    program: Annotated[str, typer.Option("--program", help="explorer, writer, adapter, user or agent.")],
    optimizer: Annotated[str, typer.Option("--optimizer", help="bootstrap, mipro or gepa.")],
    trainset: Annotated[str, typer.Option("--trainset", help="SQL selecting the training items (see above).")],
    valset: Annotated[Optional[str], typer.Option("--valset", help="SQL selecting the validation items "
                                                                   "(default: the trainset).")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Name to save the compiled program under "
                                                              "(default PROGRAM-OPTIMIZER).")] = None,
    lm: LmOpt = None,
    api_base: ApiBaseOpt = None,
    lm_config: LmConfigOpt = None,
    reflection_lm: Annotated[Optional[str], typer.Option(
        "--reflection-lm", help="Model that proposes instructions (MIPROv2, GEPA); default: the program's.")] = None,
    max_demos: Annotated[int, typer.Option("--max-demos", min=0, max=MAX_DEMOS,
                                                        help="Bootstrapped demos per predictor.")] = 2,
    candidates: Annotated[int, typer.Option("--candidates", min=1, max=MAX_CANDIDATES,
                                                         help="MIPROv2 instruction candidates.")] = 4,
    trials: Annotated[int, typer.Option("--trials", min=1, max=MAX_TRIALS, help="MIPROv2 trials.")] = 8,
    max_metric_calls: Annotated[int, typer.Option("--max-metric-calls", min=1, max=MAX_METRIC_CALLS,
                                                               help="GEPA budget.")] = 40,
    threads: Annotated[int, typer.Option("--threads", min=1, max=MAX_WORKERS,
                                                      help="Examples evaluated at once.")] = 1,
    metric: Annotated[Optional[str], typer.Option(
        "--metric", help="The agent's metric: pass1 or pass^k (with --k). \\[default: pass1]")] = None,
    k: Annotated[Optional[int], typer.Option("--k", min=1, max=MAX_TRIALS,
                                                  help="pass^k: the trials that must all pass.")] = None,
    metric_trials: Annotated[Optional[int], typer.Option(
        "--metric-trials", min=1, max=MAX_TRIALS,
        help="The agent's rollouts per task and evaluation (pass^k is estimated from them). \\[default: k]")] = None,
    function_calling: Annotated[Optional[bool], typer.Option(
        "--function-calling/--no-function-calling",
        help="The agent: send tools natively, or describe them in the prompt. Default: what LiteLLM's model map "
             "says.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the generated database (and the "
                                                               "optimizer).")] = None,
    domain: DomainOpt = "retail",
    db: DbOpt = None,
    users: Annotated[Optional[int], typer.Option("--users", min=1, max=MAX_DB_USERS,
                                                        help="Users in the generated database.")] = None,
    store: StoreOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
    timeout: TimeoutOpt = None,
    retries: RetriesOpt = None,
    max_tokens: MaxTokensOpt = None,
    temperature: TemperatureOpt = None,
    structured: StructuredOpt = None,
    context_window: ContextOpt = None,
    max_concurrent: MaxConcurrentOpt = None,
    no_cache: NoCacheOpt = False,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Compile a generation program with a DSPy optimizer against verification pass rates."""
    from trajectory2task.programs.lm.prices import ensure_local_cost_map

    ensure_local_cost_map()
    from trajectory2task.optimize.compile import (
        OPTIMIZERS,
        PROGRAM_KINDS,
        TARGETS,
        CompileError,
        OptimizerSettings,
        compile_program,
        make_target,
    )

    if program not in PROGRAM_KINDS:
        raise UserError(f"--program: unknown program '{program}'; choose from {', '.join(PROGRAM_KINDS)}")
    if optimizer not in OPTIMIZERS:
        raise UserError(f"--optimizer: unknown optimizer '{optimizer}'; choose from {', '.join(OPTIMIZERS)}")
    agent_metric = _agent_metric(program, metric, k, metric_trials, function_calling)
    from trajectory2task.programs.lm.config import ROLES

    flags = add_knobs({"lm": lm, "api_base": api_base}, ROLES, timeout=timeout, retries=retries,
                      max_tokens=max_tokens, temperature=temperature, structured=structured,
                      context_window=context_window, max_concurrent=max_concurrent)
    config = _lm_config(flags, lm_config)
    settings = config.for_role(program)
    if settings is None:
        raise UserError(f"t2t optimize needs an LM for the {program}: pass --lm MODEL (and --api-base URL for a "
                        f"local server), --lm-config FILE, or set T2T_LM")
    if function_calling is not None:
        settings = settings.model_copy(update={"function_calling": function_calling})
    name = name or f"{program}-{optimizer}"

    import logging

    from trajectory2task.programs.lm.session import EndpointError, LMSession
    from trajectory2task.store import TaskStore, Trial
    from trajectory2task.output import console, print_json_line, print_table
    from trajectory2task.settings import store_path

    logging.getLogger("dspy").setLevel(logging.WARNING)
    path = store_path(store)
    if not path.exists():
        raise UserError(f"{path}: no store here yet (run t2t generate first, or pass --store)")
    # every call of the program, the optimizer's copies and the proposer lands in the ledger
    session = LMSession(cache=configure_cache(no_cache, cache_dir))
    program_lm = session.build(program, settings)
    proposer_lm = program_lm
    if reflection_lm:
        proposer_lm = session.build("optimizer", settings.model_copy(update={"model": reflection_lm}))
    session.install_adapter()
    with TaskStore(path) as task_store:
        selects = TARGETS[program].selects
        train_ids = _selected(task_store, "--trainset", trainset, selects)
        if not train_ids:
            raise UserError(f"--trainset selects no {selects}")
        val_ids = _selected(task_store, "--valset", valset, selects) if valset else train_ids
        env = _environment_for(task_store, program, train_ids, domain, db, seed, users)
        options: dict[str, Any] = {}
        if agent_metric is not None:
            native = (bool(program_lm.supports_function_calling) if settings.function_calling is None
                      else settings.function_calling)
            options = {"metric": agent_metric, "native_function_calling": native}
        target = make_target(program, env, **options)
        train = target.examples(task_store, train_ids)
        val = target.examples(task_store, val_ids) if valset else train
        if not train:
            why = ("is verified on this database" if program == "agent"
                   else f"gives a {program} example on this database")
            raise UserError(f"--trainset: none of the {len(train_ids)} selected {selects} {why} (pass the "
                            "--db/--seed/--users they were made on)")
        opt_settings = OptimizerSettings(max_bootstrapped_demos=max_demos, num_candidates=candidates,
                                         num_trials=trials, max_metric_calls=max_metric_calls, num_threads=threads,
                                         seed=seed or 0)
        run_config = {"program": program, "optimizer": optimizer, "name": name, "trainset": trainset,
                      "valset": valset, "examples": {"train": len(train), "val": len(val)},
                      "lm": settings.redacted(), "reflection_lm": reflection_lm,
                      "settings": opt_settings.model_dump(), "db_initial_hash": env.initial_hash()}
        if agent_metric is not None:
            run_config |= {"metric": agent_metric.model_dump(), "function_calling": options["native_function_calling"]}
        try:  # a server that is down fails here, in one line, not after minutes of retries
            session.preflight()
        except EndpointError as exc:
            raise UserError(str(exc)) from None
        run_id = task_store.start_run("optimize", run_config, seed=seed)
        try:
            result = compile_program(target, optimizer, train, val, program_lm, opt_settings,
                                     reflection_lm=proposer_lm)
        except CompileError as exc:
            task_store.finish_run(run_id, "failed")
            raise UserError(f"t2t optimize: {exc}") from None
        except _lm_failures() as exc:
            task_store.finish_run(run_id, "failed")
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            why = session.ledger.reasons(1)
            raise UserError(f"t2t optimize: the LM failed: {why[0] if why else f'{type(exc).__name__}: {first}'}"
                            ) from None
        except BaseException:
            task_store.finish_run(run_id, "failed")
            raise
        finally:
            task_store.add_lm_calls(run_id, session.ledger.take())
        task_store.add_program(name, program, result.state, run_id, score_before=result.score_before,
                               score_after=result.score_after, optimizer=optimizer)
        task_store.add_trials(run_id, f"optimize:{name}", [Trial(**t) for t in result.trials])
        task_store.finish_run(run_id, "finished")
    summary = {"name": name, "run_id": run_id, "program": program, "optimizer": optimizer,
               "train": result.trainset, "val": result.valset, "score_before": round(result.score_before, 4),
               "score_after": round(result.score_after, 4), "demos": result.demos,
               "instructions_changed": result.instructions_changed, "trials": len(result.trials)}
    if json_out:
        print_json_line(summary)
        return
    print_table(f"optimize {program} with {optimizer}", ["name", "train", "val", "before", "after", "demos",
                                                          "instructions changed"],
                [(name, result.trainset, result.valset, f"{result.score_before:.2%}", f"{result.score_after:.2%}",
                  result.demos, ", ".join(result.instructions_changed) or "-")])
    if result.score_after < result.score_before:
        console.print("note: the compiled program scores lower than the uncompiled one on the validation set")
    if program in ("explorer", "writer", "adapter"):
        console.print(f"use it: t2t generate --programs {name} --{program}-lm {settings.model}")
    elif program == "agent":
        console.print(f"use it: t2t bench --agent-lm {settings.model} --agent-program {name}")
    console.print(f"run {run_id}")


def _agent_metric(program: str, metric: Optional[str], k: Optional[int], trials: Optional[int],
                  function_calling: Optional[bool]) -> Any:
    """The agent target's metric from --metric/--k/--metric-trials (None for other programs,
    which take none of these flags)."""
    from trajectory2task.optimize.compile import AgentMetric, CompileError

    if program != "agent":
        given = [flag for flag, value in (("--metric", metric), ("--k", k), ("--metric-trials", trials),
                                          ("--function-calling", function_calling)) if value is not None]
        if given:
            raise UserError(f"{given[0]} goes with --program agent, not --program {program}")
        return None
    try:
        return AgentMetric.of(metric or "pass1", k, trials)
    except CompileError as exc:
        raise UserError(str(exc)) from None


def _selected(task_store: Any, flag: str, sql: str, selects: str) -> list[str]:
    """The ids an --trainset/--valset expression selects; refused SQL names the flag."""
    from trajectory2task.optimize.compile import select_ids
    from trajectory2task.store import StoreError

    try:
        return select_ids(task_store, sql, selects)
    except StoreError as exc:
        raise UserError(f"{flag}: {exc}") from None


def _lm_failures() -> tuple[type[BaseException], ...]:
    """What a program raises when its LM failed beyond retries or never gave parsable output."""
    from dspy.utils.exceptions import AdapterParseError, LMError

    from trajectory2task.programs.generation.exploration import ExplorationError
    from trajectory2task.programs.loop.user_sim import LMTurnError
    from trajectory2task.programs.generation.writing import WriterError

    return (LMError, AdapterParseError, ExplorationError, WriterError, LMTurnError)


def register(app: typer.Typer) -> None:
    app.command("optimize", help=OPTIMIZE_HELP)(optimize)
    app.command("sweep", help=SWEEP_HELP)(sweep)
