"""What a `t2t bench` run is made of: its flags (`BenchRequest`), checked and resolved into the
run's config, environment, tasks, agents and user (`prepare`), from the flags or, with
``--resume``, from the stored run. Errors are `UserError`s with one line; nothing is stored
here. `trajectory2task.usecases.bench_run` runs what this prepares.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from trajectory2task.errors import UserError

BENCH_ROLES = ("agent", "user")
DEFAULT_TASKS = "verified"

Warn = Callable[[str], None]  # takes one line for stderr (a skipped task, a note on tools)


class BenchRequest(BaseModel):
    """The flags of `t2t bench`; None: not given (a new run takes the default, a resumed one
    what it was started with)."""

    store: Path
    agents: list[str] | None = None  # --agent-lm, split
    user: str | None = None
    user_program: str | None = None
    agent_program: str | None = None
    trials: int | None = None
    tasks: str | None = None
    db: str | None = None
    seed: int | None = None
    domain: str | None = None
    max_turns: int | None = None
    resume: str | None = None
    api_base: str | None = None
    function_calling: bool | None = None
    lm_config: str | None = None
    require_clarification: bool | None = None
    concurrency: int = 8
    processes: int = 1  # above 1: that many Ray actors (a local Ray when ray is None)
    ray: str | None = None  # --ray's value ("local" for a bare flag); None reads T2T_RAY_ADDRESS
    knobs: dict[str, str] = Field(default_factory=dict)  # the LM knobs' flags, lm_options.knob_flags


@dataclass
class PreparedBench:
    """A bench run ready to start: the resolved config and what it runs with."""

    config: Any  # trajectory2task.programs.loop.bench.BenchConfig (task_ids and tool_schemas filled in)
    environment: Any
    tasks: list[Any]
    agents: list[Any]
    user: Any
    session: Any  # trajectory2task.programs.lm.session.LMSession: the LMs' ledger and preflight
    target: Any = None  # trajectory2task.programs.distributed.cluster.RayTarget, None: one process
    actors: int | None = None


def ray_target_of(request: BenchRequest) -> Any:
    """Where the rollouts run: ``--ray`` / ``T2T_RAY_ADDRESS``, else ``--processes N`` > 1 as a
    local Ray with N CPUs, else None (one process, Ray not imported)."""
    from trajectory2task.programs.distributed.cluster import RayTarget, ray_target

    try:
        target = ray_target(request.ray)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if target is None and request.processes > 1:
        target = RayTarget(num_cpus=request.processes)
    return target


def prepare(ts: Any, request: BenchRequest, warn: Warn) -> PreparedBench:
    """Check the request against the store and build what the run needs (no LM is called)."""
    from trajectory2task.programs.lm.session import LMSession
    from trajectory2task.programs.loop.agent import REFERENCE_AGENTS
    from trajectory2task.programs.loop.bench import BenchConfig
    from trajectory2task.programs.loop.user_sim import SCRIPTED_USER_NAME
    from trajectory2task.settings import DEFAULT_DB_SEED, load_environment

    given: dict[str, Any] = {
        "agents": request.agents, "user": request.user, "trials": request.trials, "tasks": request.tasks,
        "domain": request.domain, "db": request.db, "db_seed": request.seed, "max_turns": request.max_turns,
        "function_calling": request.function_calling, "api_base": request.api_base,
        "user_program": request.user_program, "agent_program": request.agent_program,
        "require_clarification": request.require_clarification,
    }
    resume = request.resume
    if resume is not None:
        raw = _merge_resume(_stored_config(ts, resume), given)
        if request.api_base is None and "***@" in str(raw.get("api_base") or ""):  # redacted when stored
            raise UserError(f"--resume {resume}: the run's --api-base carried credentials, which are not stored; "
                            "pass --api-base again")
    else:
        tasks_arg = request.tasks or DEFAULT_TASKS
        raw = {
            "domain": request.domain or _domain_of_tasks(ts, tasks_arg), "db": request.db,
            "db_seed": DEFAULT_DB_SEED if request.seed is None else request.seed,
            "tasks_source": "file" if Path(tasks_arg).is_file() else "store", "tasks": tasks_arg,
            "task_ids": [], "agents": request.agents or list(REFERENCE_AGENTS),
            "user": request.user or SCRIPTED_USER_NAME, "user_program": request.user_program,
            "agent_program": request.agent_program,
            "require_clarification": bool(request.require_clarification),
            "trials": request.trials or 1, "max_turns": request.max_turns or 30,
            "function_calling": request.function_calling, "api_base": request.api_base,
        }
    config = BenchConfig.model_validate(raw)
    env = load_environment(config.domain, config.db, None, config.db_seed, config.db_users)
    task_list = _load_tasks(ts, config, resume is not None, warn)
    if not task_list:
        raise UserError(f"no tasks match {config.tasks!r}" + ("" if config.tasks_source == "file" else
                        " in the store (run t2t generate and t2t verify, or pass --tasks)"))
    other = sorted({t.domain for t in task_list} - {env.domain.name, config.domain})
    if other:
        raise UserError(f"the tasks include {other[0]} tasks, not {env.domain.name} ones: pass --domain "
                        f"{other[0]}" + ("" if request.domain is not None or resume is not None else
                                         " (the store's tasks are of several domains)"))
    foreign = [t.id for t in task_list if t.initial_state_hash and t.initial_state_hash != env.initial_hash()]
    if foreign:
        raise UserError(f"{len(foreign)} task(s) were made for another database (e.g. {foreign[0]}): pass the "
                        "--db or --seed they were generated on")
    config.task_ids = [t.id for t in task_list]
    config.tool_schemas = env.tool_schemas()
    if config.user_program and config.user == SCRIPTED_USER_NAME:
        raise UserError("--user-program needs an LM user simulator: pass --user-lm MODEL")
    session = LMSession()  # no cache: trials of a rollout must be independent draws
    agents, user = _build_agents(config, env, request.lm_config, ts, session, request.knobs, warn)
    return PreparedBench(config=config, environment=env, tasks=task_list, agents=agents, user=user,
                         session=session, target=ray_target_of(request),
                         actors=request.processes if request.processes > 1 else None)


def check_request(request: BenchRequest) -> None:
    """What can be refused before the store is opened."""
    if request.agents is not None and len(set(request.agents)) != len(request.agents):
        raise UserError("--agent-lm names a model twice")
    tasks = request.tasks
    if tasks is not None and tasks.strip().lower().endswith((".json", ".jsonl")) and not Path(tasks).is_file():
        raise UserError(f"{tasks}: no such tasks file")
    if not request.store.exists() and (request.resume is not None or tasks is None or not Path(tasks).is_file()):
        raise UserError(f"{request.store}: no store here yet (run t2t generate, or pass --store or a tasks file)")
    ray_target_of(request)  # a bad --ray address is refused here


def estimate(prepared: PreparedBench) -> tuple[Any, dict[str, Any], str]:
    """`--estimate`: what the run would send, per role (the plan, each role's settings and a
    title for `trajectory2task.estimate.print_estimate`); no model is called."""
    from trajectory2task.programs.lm.accounting import role_of
    from trajectory2task.programs.lm.estimate import adapter_for
    from trajectory2task.programs.lm.tokens import litellm_tokenizer, litellm_tool_tokenizer
    from trajectory2task.programs.loop.agent import LMAgent
    from trajectory2task.programs.loop.estimate import estimate_rollouts
    from trajectory2task.programs.loop.user_sim import LMUser

    env, task_list, config = prepared.environment, prepared.tasks, prepared.config
    lm_agents = [a for a in prepared.agents if isinstance(a, LMAgent)]
    lm_user = prepared.user if isinstance(prepared.user, LMUser) else None
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
    return plan, settings, (f"estimate: bench, {len(task_list)} task(s) x {config.trials} trial(s), prompts "
                            f"rendered on the oracle's conversations of {plan.sampled} task(s)")


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


def _load_tasks(ts: Any, config: Any, resume: bool, warn: Warn) -> list[Any]:
    from trajectory2task.programs.loop.bench import tasks_by_id
    from trajectory2task.store.files import load_tasks

    if config.tasks_source == "file":
        tasks, problems = load_tasks(Path(config.tasks), domain=config.domain)
        if problems and not tasks:  # nothing usable: one line, the first reason
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise UserError(f"{config.tasks}: no usable task: {problems[0].line()}{more}")
        for problem in problems:
            warn(f"t2t: skipped {problem.line()}")
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


def _build_agents(config: Any, env: Any, lm_config_path: str | None, ts: Any, session: Any,
                  knobs: dict[str, str] | None, warn: Warn) -> tuple[list[Any], Any]:
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
            agents.append(_lm_agent(settings, env, session, compiled.deepcopy() if compiled is not None else None,
                                    warn))
    if config.user == SCRIPTED_USER_NAME:
        user: Any = ScriptedUser(env.domain.tools)
    else:
        from trajectory2task.programs.lm.build import build_lm

        user_settings = _settings("user", config.user, config, lm_config_path, knobs)
        user_lm = session.build("user", user_settings) if session is not None else build_lm(user_settings)
        user = LMUser(user_lm,
                      program=_compiled_user(ts, config.user_program) if config.user_program else None,
                      name=config.user)
    return agents, user


def _compiled_user(ts: Any, name: str) -> Any:
    """A UserSimulator with the compiled state saved under ``name`` by `t2t optimize --program user`."""
    from trajectory2task.programs.loop.user_sim import UserSimulator

    return _compiled(ts, name, "user", "--user-program", "a user simulator", UserSimulator())


def _compiled_agent(ts: Any, name: str) -> Any:
    """A ToolCallingAgent with the compiled state saved under ``name`` by `t2t optimize --program agent`."""
    from trajectory2task.programs.loop.agent import ToolCallingAgent

    return _compiled(ts, name, "agent", "--agent-program", "an agent", ToolCallingAgent())


def _compiled(ts: Any, name: str, kind: str, flag: str, what: str, program: Any) -> Any:
    """``program`` with the state the store keeps under ``name``, which must be a ``kind`` program."""
    record = ts.latest_program(name)
    if record is None:
        raise UserError(f"{flag}: no program named '{name}' in the store")
    if record["program"] != kind:
        raise UserError(f"{flag}: '{name}' holds a '{record['program']}' program, not {what}")
    try:
        program.load_state(record["state"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{flag}: the state in '{name}' does not fit the {what.split(' ', 1)[1]}: {exc}") from None
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


def _lm_agent(settings: Any, env: Any, session: Any, program: Any, warn: Warn) -> Any:
    from trajectory2task.programs.loop.agent import LMAgent
    from trajectory2task.programs.lm.build import build_lm

    try:
        lm = session.build("agent", settings) if session is not None else build_lm(settings)
    except RuntimeError as exc:
        raise UserError(str(exc)) from None
    native = bool(lm.supports_function_calling) if settings.function_calling is None else settings.function_calling
    if not native:
        note = ("--no-function-calling" if settings.function_calling is False else
                f"{settings.model} is not known to support function calling (pass --function-calling to send "
                "native tools anyway)")
        warn(f"t2t bench: {settings.model}: tools described in the prompt text ({note})")
    return LMAgent(lm, env, program=program, native_function_calling=native, name=settings.model)
