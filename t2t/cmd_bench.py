"""`t2t bench`: agents x simulated user on verified tasks; pass@1 and pass^k per condition."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from trajectory2task.errors import UserError
from trajectory2task.lm_options import (ContextOpt, MaxConcurrentOpt, MaxTokensOpt, RetriesOpt, StructuredOpt, TemperatureOpt,
                            TimeoutOpt, knob_flags)
from trajectory2task.output import console, err_console, print_error_line, print_json_line, print_table, print_text
from trajectory2task.ray_options import RayOpt, ray_target_of
from trajectory2task.settings import MAX_TRIALS, MAX_TURNS, MAX_WORKERS

BENCH_ROLES = ("agent", "user")

DEFAULT_TASKS = "verified"


def _split_models(value: str | None) -> list[str]:
    return [m.strip() for m in (value or "").split(",") if m.strip()]


def _stored_config(ts: Any, run_id: str) -> dict[str, Any]:
    _, rows = ts.query("SELECT kind, config FROM runs WHERE run_id = ? LIMIT 1", [run_id])
    if not rows:
        raise UserError(f"--resume {run_id}: no such run in {ts.path}")
    kind, config = rows[0]
    if kind != "bench":
        raise UserError(f"--resume {run_id}: that run is a '{kind}' run, not a bench run")
    return json.loads(config) if isinstance(config, str) else dict(config)


def _merge_resume(stored: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """A resumed run keeps what defines its rollouts; flags may only repeat those values."""
    merged = dict(stored)
    defining = ("agents", "user", "user_program", "agent_program", "trials", "tasks", "domain", "db", "db_seed",
                "max_turns", "function_calling", "require_clarification")
    for key, value in given.items():
        if value is None:
            continue
        if key in defining and stored.get(key) != value:
            raise UserError(f"--resume: {key} was {stored.get(key)!r} in that run, not {value!r} "
                            "(start a new run to change it)")
        merged[key] = value
    return merged


def _domain_of_tasks(ts: Any, tasks_arg: str) -> str:
    """With no --domain: the one domain of the tasks to run (retail when there are none, or
    when they are of several: the domain check after loading then names the other one)."""
    from trajectory2task.store import StoreError
    from trajectory2task.store.files import load_tasks

    try:
        if Path(tasks_arg).is_file():
            found = {t.domain for t in load_tasks(Path(tasks_arg))[0]}
        else:
            found = {t.domain for t in ts.iter_tasks(tasks_arg)}
    except StoreError:
        return "retail"  # the filter is refused with its own line when the tasks are loaded
    return found.pop() if len(found) == 1 else "retail"


def _load_tasks(ts: Any, config: Any, resume: bool) -> list[Any]:
    from trajectory2task.programs.loop.bench import tasks_by_id
    from trajectory2task.store.files import load_tasks

    if config.tasks_source == "file":
        tasks, problems = load_tasks(Path(config.tasks), domain=config.domain)
        if problems and not tasks:  # nothing usable: one line, the first reason
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise UserError(f"{config.tasks}: no usable task: {problems[0].line()}{more}")
        for problem in problems:
            print_error_line(f"t2t: skipped {problem.line()}")
    elif resume:
        tasks = ts.tasks("list_contains(?, task_id)", [config.task_ids])
    else:
        from trajectory2task.store import StoreError

        try:
            tasks = ts.tasks(config.tasks)
        except StoreError as exc:
            raise UserError(f"--tasks {config.tasks!r}: {str(exc).splitlines()[0]}") from None
    by_id = tasks_by_id(tasks)
    if resume:
        missing = [t for t in config.task_ids if t not in by_id]
        if missing:
            raise UserError(f"--resume: {len(missing)} task(s) of the run are gone: {', '.join(missing[:5])}")
        return [by_id[t] for t in config.task_ids]
    return list(by_id.values())


def _build_agents(config: Any, env: Any, lm_config_path: str | None, ts: Any,
                  session: Any = None, knobs: dict[str, str] | None = None) -> tuple[list[Any], Any]:
    from trajectory2task.programs.loop.agent import DO_NOTHING, ORACLE, DoNothingAgent, OracleAgent
    from trajectory2task.programs.loop.user_sim import SCRIPTED_USER_NAME, LMUser, ScriptedUser

    agents: list[Any] = []
    if config.agent_program and all(name in (DO_NOTHING, ORACLE) for name in config.agents):
        raise UserError("--agent-program needs an LM agent: pass --agent-lm MODEL")
    # checked before any LM is built: a bad name costs nothing
    compiled = _compiled_agent(ts, config.agent_program) if config.agent_program else None
    for name in config.agents:
        if name == DO_NOTHING:
            agents.append(DoNothingAgent(env))
        elif name == ORACLE:
            agents.append(OracleAgent(env))
        else:
            settings = _settings("agent", name, config, lm_config_path, knobs)
            if config.function_calling is not None:
                settings = settings.model_copy(update={"function_calling": config.function_calling})
            # each LM agent gets its own copy of the compiled program (the agent sets its mode on it)
            agents.append(_lm_agent(settings, env, session, compiled.deepcopy() if compiled is not None else None))
    if config.user == SCRIPTED_USER_NAME:
        user: Any = ScriptedUser(env.domain.tools)
    else:
        from trajectory2task.programs.lm.config import build_lm

        user_settings = _settings("user", config.user, config, lm_config_path, knobs)
        user_lm = session.build("user", user_settings) if session is not None else build_lm(user_settings)
        user = LMUser(user_lm,
                      program=_compiled_user(ts, config.user_program) if config.user_program else None,
                      name=config.user)
    return agents, user


def _compiled_user(ts: Any, name: str) -> Any:
    """A UserSimulator with the compiled state saved under ``name`` by `t2t optimize --program user`."""
    from trajectory2task.programs.loop.user_sim import UserSimulator

    record = ts.latest_program(name)
    if record is None:
        raise UserError(f"--user-program: no program named '{name}' in the store")
    if record["program"] != "user":
        raise UserError(f"--user-program: '{name}' holds a '{record['program']}' program, not a user simulator")
    program = UserSimulator()
    try:
        program.load_state(record["state"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"--user-program: the state in '{name}' does not fit the user simulator: {exc}") from None
    return program


def _compiled_agent(ts: Any, name: str) -> Any:
    """A ToolCallingAgent with the compiled state saved under ``name`` by `t2t optimize --program agent`."""
    from trajectory2task.programs.loop.agent import ToolCallingAgent

    record = ts.latest_program(name)
    if record is None:
        raise UserError(f"--agent-program: no program named '{name}' in the store")
    if record["program"] != "agent":
        raise UserError(f"--agent-program: '{name}' holds a '{record['program']}' program, not an agent")
    program = ToolCallingAgent()
    try:
        program.load_state(record["state"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"--agent-program: the state in '{name}' does not fit the agent: {exc}") from None
    return program


def _settings(role: str, model: str, config: Any, lm_config_path: str | None,
              knobs: dict[str, str] | None = None) -> Any:
    from trajectory2task.programs.lm.config import LMConfigError, load_lm_config
    from trajectory2task.settings import check_lm_config_file

    check_lm_config_file(lm_config_path)
    try:
        lm_config = load_lm_config(flags={f"{role}_lm": model, "api_base": config.api_base, **(knobs or {})},
                                   config_path=lm_config_path)
    except LMConfigError as exc:
        raise UserError(str(exc)) from None
    settings = lm_config.for_role(role)
    assert settings is not None  # the flag names a model
    return settings


def _lm_agent(settings: Any, env: Any, session: Any = None, program: Any = None) -> Any:
    from trajectory2task.programs.loop.agent import LMAgent
    from trajectory2task.programs.lm.config import build_lm

    try:
        lm = session.build("agent", settings) if session is not None else build_lm(settings)
    except RuntimeError as exc:
        raise UserError(str(exc)) from None
    native = bool(lm.supports_function_calling) if settings.function_calling is None else settings.function_calling
    if not native:
        note = ("--no-function-calling" if settings.function_calling is False else
                f"{settings.model} is not known to support function calling (pass --function-calling to send "
                "native tools anyway)")
        err_console.print(f"t2t bench: {settings.model}: tools described in the prompt text ({note})")
    return LMAgent(lm, env, program=program, native_function_calling=native, name=settings.model)


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
        min=1, max=64)] = 1,
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
    from trajectory2task.programs.lm.config import redact_url
    from trajectory2task.programs.loop.agent import REFERENCE_AGENTS
    from trajectory2task.programs.loop.user_sim import SCRIPTED_USER_NAME
    from trajectory2task.store import TaskStore
    from trajectory2task.settings import DEFAULT_DB_SEED, load_environment, store_path

    path = store_path(store)
    target = ray_target_of(ray)
    if target is None and processes > 1:  # --processes N alone: a local Ray with N CPUs, N actors
        from trajectory2task.programs.distributed.cluster import RayTarget

        target = RayTarget(num_cpus=processes)
    given: dict[str, Any] = {
        "agents": _split_models(agent_lm) or None, "user": user_lm, "trials": trials, "tasks": tasks,
        "domain": domain, "db": db, "db_seed": seed, "max_turns": max_turns, "function_calling": function_calling,
        "api_base": api_base, "user_program": user_program, "agent_program": agent_program,
        "require_clarification": require_clarification,
    }
    if given["agents"] is not None and len(set(given["agents"])) != len(given["agents"]):
        raise UserError("--agent-lm names a model twice")
    if tasks is not None and tasks.strip().lower().endswith((".json", ".jsonl")) and not Path(tasks).is_file():
        raise UserError(f"{tasks}: no such tasks file")
    if not path.exists() and (resume is not None or tasks is None or not Path(tasks).is_file()):
        raise UserError(f"{path}: no store here yet (run t2t generate, or pass --store or a tasks file)")
    with TaskStore(path) as ts:
        from trajectory2task.programs.loop.bench import BenchConfig

        if resume is not None:
            raw = _merge_resume(_stored_config(ts, resume), given)
            if api_base is None and "***@" in str(raw.get("api_base") or ""):  # redacted when stored
                raise UserError(f"--resume {resume}: the run's --api-base carried credentials, which are not stored; "
                                "pass --api-base again")
        else:
            tasks_arg = tasks or DEFAULT_TASKS
            raw = {
                "domain": domain or _domain_of_tasks(ts, tasks_arg), "db": db, "db_seed": DEFAULT_DB_SEED if seed is None else seed,
                "tasks_source": "file" if Path(tasks_arg).is_file() else "store", "tasks": tasks_arg,
                "task_ids": [], "agents": given["agents"] or list(REFERENCE_AGENTS),
                "user": user_lm or SCRIPTED_USER_NAME, "user_program": user_program,
                "agent_program": agent_program,
                "require_clarification": bool(require_clarification),
                "trials": trials or 1, "max_turns": max_turns or 30,
                "function_calling": function_calling, "api_base": api_base,
            }
        config = BenchConfig.model_validate(raw)
        env = load_environment(config.domain, config.db, None, config.db_seed, config.db_users)
        task_list = _load_tasks(ts, config, resume is not None)
        if not task_list:
            raise UserError(f"no tasks match {config.tasks!r}" + ("" if config.tasks_source == "file" else
                            " in the store (run t2t generate and t2t verify, or pass --tasks)"))
        other = sorted({t.domain for t in task_list} - {env.domain.name, config.domain})
        if other:
            raise UserError(f"the tasks include {other[0]} tasks, not {env.domain.name} ones: pass --domain "
                            f"{other[0]}" + ("" if domain is not None or resume is not None else
                                             " (the store's tasks are of several domains)"))
        foreign = [t.id for t in task_list if t.initial_state_hash and t.initial_state_hash != env.initial_hash()]
        if foreign:
            raise UserError(f"{len(foreign)} task(s) were made for another database (e.g. {foreign[0]}): pass the "
                            "--db or --seed they were generated on")
        config.task_ids = [t.id for t in task_list]
        config.tool_schemas = env.tool_schemas()
        if config.user_program and config.user == SCRIPTED_USER_NAME:
            raise UserError("--user-program needs an LM user simulator: pass --user-lm MODEL")
        from trajectory2task.programs.lm.session import LMSession

        knobs = knob_flags(BENCH_ROLES, timeout=timeout, retries=retries, max_tokens=max_tokens,
                           temperature=temperature, structured=structured, context_window=context_window,
                           max_concurrent=max_concurrent)
        session = LMSession()  # no cache: trials of a rollout must be independent draws
        agents, user = _build_agents(config, env, lm_config, ts, session, knobs)
        if estimate:
            if resume is not None:
                raise UserError("--estimate plans a new run; it does not go with --resume")
            _print_estimate(env, task_list, agents, user, config, json_out)
            return
        if session.settings:
            session.install_adapter()
        record = config.model_dump()
        if record.get("api_base"):  # credentials in the URL are not kept in the store
            record["api_base"] = redact_url(record["api_base"])
        run_id = ts.start_run("bench", record, seed=config.db_seed, run_id=resume)
        err_console.print(f"t2t bench: run {run_id} (resume with --resume {run_id})")
        if config.tasks_source == "file" and not ts.done_task_ids(run_id):
            ts.add_tasks(run_id, task_list)
        outcome = _run(ts, run_id, config, env, task_list, agents, user, concurrency, session, target,
                       processes if processes > 1 else None)
        if session.ledger.calls:
            err_console.print(session.ledger.progress_line(), markup=False, highlight=False)
        _report(ts, run_id, config, env, task_list, outcome, json_out, session.ledger)


def _print_estimate(env: Any, task_list: list[Any], agents: list[Any], user: Any, config: Any,
                    json_out: bool) -> None:
    """`--estimate`: what the run would send, per role and in all; no model is called."""
    from trajectory2task.programs.lm.accounting import role_of
    from trajectory2task.programs.lm.estimate import adapter_for, litellm_tokenizer, litellm_tool_tokenizer
    from trajectory2task.programs.loop.agent import LMAgent
    from trajectory2task.programs.loop.estimate import estimate_rollouts
    from trajectory2task.programs.loop.user_sim import LMUser
    from trajectory2task.estimate import print_estimate

    lm_agents = [a for a in agents if isinstance(a, LMAgent)]
    lm_user = user if isinstance(user, LMUser) else None
    settings: dict[str, Any] = {f"agent {a.name}": role_of(a.lm).settings for a in lm_agents}
    if lm_user is not None:
        settings["user"] = role_of(lm_user.lm).settings
    models = {role: s.model for role, s in settings.items()}
    tools = env.tool_schemas()

    def tokenizer(role: str, with_tools: bool) -> Any:
        model = models.get(role, "")
        return litellm_tool_tokenizer(model, tools) if with_tools else litellm_tokenizer(model)

    plan = estimate_rollouts(env, task_list, agents=lm_agents, user=lm_user, trials=config.trials,
                             max_turns=config.max_turns, tokenizer=tokenizer, models=models,
                             user_adapter=adapter_for(settings["user"].structured) if lm_user else None)
    print_estimate(plan, settings, json_out, unit="task",
                   title=f"estimate: bench, {len(task_list)} task(s) x {config.trials} trial(s), prompts rendered "
                         f"on the oracle's conversations of {plan.sampled} task(s)")


def _run(ts: Any, run_id: str, config: Any, env: Any, task_list: list[Any], agents: list[Any], user: Any,
         concurrency: int, session: Any = None, target: Any = None, actors: int | None = None) -> Any:
    from trajectory2task.programs.loop.bench import plan_jobs
    from trajectory2task.programs.loop.rollout import RolloutEngine, RolloutWriter
    from trajectory2task.output import progress

    jobs = plan_jobs(run_id, config.task_ids, config.agents, config.trials, ts.done_rollout_keys(run_id))
    from trajectory2task.programs.verification.verifier import Verifier

    engine = RolloutEngine(env, user, agents, max_turns=config.max_turns,
                           verifier=Verifier(env, require_clarification=config.require_clarification))
    ledger = session.ledger if session is not None else None
    if jobs and session is not None and session.settings:
        from trajectory2task.programs.lm.session import EndpointError

        try:  # before the first call: a server that is down costs no retries
            session.preflight()
        except EndpointError as exc:
            ts.finish_run(run_id, "failed")
            raise UserError(str(exc)) from None
    if jobs and target is not None:
        from trajectory2task.programs.distributed.cluster import RayUnavailable, connect

        try:  # before the first rollout: a cluster that cannot be joined costs nothing
            connect(target)
        except RayUnavailable as exc:
            ts.finish_run(run_id, "failed")
            raise UserError(str(exc)) from None
    writer = RolloutWriter(ts, run_id, ledger=ledger)
    retries = 0
    by_id = {t.id: t for t in task_list}
    total = len(config.task_ids) * len(config.agents) * config.trials
    with progress("rollouts", total) as bar:
        bar_task = bar.add_task("rollouts", total=total, completed=total - len(jobs))
        if ledger is not None:  # the live line: calls, tokens, cost and errors by kind, as each LM call ends
            ledger.on_call(lambda line: bar.update(bar_task, description=f"rollouts | {line}"))

        def stored(result: Any) -> None:
            writer.add(result)
            bar.update(bar_task, advance=1)

        from trajectory2task.programs.distributed.rollouts import ActorStartError

        try:
            if target is None or not jobs:
                _, crashes = engine.run_many(by_id, jobs, concurrency=concurrency, on_result=stored)
            else:
                from trajectory2task.programs.distributed.rollouts import run_engine_on_ray

                ran = run_engine_on_ray(target, engine, by_id, jobs, concurrency=concurrency, actors=actors,
                                        on_result=stored, ledger=ledger,
                                        structured_adapter=session is not None and bool(session.settings))
                crashes, retries = ran.crashes, ran.retries
        except ActorStartError as exc:
            writer.flush()
            ts.finish_run(run_id, "failed")
            raise UserError(str(exc)) from None
        except BaseException:
            writer.flush()
            ts.finish_run(run_id, "interrupted")
            err_console.print(f"t2t bench: interrupted; {writer.written} rollout(s) stored this time; "
                              f"finish with --resume {run_id}")
            raise
        writer.flush()
    status = "failed" if crashes else "finished"
    if retries:  # kept with the run: how often an actor died with rollouts in it
        err_console.print(f"t2t bench: {retries} rollout(s) retried on another Ray actor after theirs died")
        ts.add_run_event(run_id, status, {"retried_rollouts": retries})
    else:
        ts.finish_run(run_id, status)
    return crashes


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _report(ts: Any, run_id: str, config: Any, env: Any, task_list: list[Any], crashes: list[Any],
            json_out: bool, ledger: Any = None) -> None:
    from trajectory2task.programs.loop.agent import REFERENCE_AGENTS
    from trajectory2task.optimize.metrics import score_cells
    from trajectory2task.programs.loop.bench import calibration_problems, stored_rows
    from trajectory2task.programs.verification.verifier import Verifier

    rows = stored_rows(ts, run_id)
    cells = score_cells(rows, config.trials)
    problems = []
    if any(a in REFERENCE_AGENTS for a in config.agents):
        verifier = Verifier(env)
        static = {t.id: verifier.verify_task(t) for t in task_list}
        problems = calibration_problems(rows, static)
    breaches = [p for p in problems if p.verified]
    if json_out:
        for cell in cells:
            print_json_line(cell.public())
        print_json_line({"run_id": run_id, "rollouts": len(rows), "crashed": [c.model_dump() for c in crashes],
                         "calibration": [p.model_dump() for p in problems]})
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
                console.print(f"calibration: all {len(task_list)} task(s) fail for do-nothing and pass for "
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
        for line in (ledger.reasons() if ledger is not None else []) or ["every LM rollout ended lm_error"]:
            print_error_line(f"t2t: error: {line}")
        print_error_line(f"t2t: error: no rollout scored: all {len(lm_rows)} failed on the user simulator or "
                         "the LM server; fix the above and redo them with a new run")
        raise typer.Exit(1)
    if breaches:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
