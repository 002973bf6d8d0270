"""`t2t generate`: explore -> write -> adapt -> verify -> store, with LMs or offline baselines."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from trajectory2task.errors import UserError
from trajectory2task.lm_options import (CacheDirOpt, ContextOpt, MaxConcurrentOpt, MaxTokensOpt, NoCacheOpt, RetriesOpt,
                                        StructuredOpt, TemperatureOpt, TimeoutOpt, add_knobs, configure_cache)
from trajectory2task.ray_options import RayOpt, join_ray, ray_target_of
from trajectory2task.settings import DEFAULT_DB_USERS, DEFAULT_GENERATE_N, MAX_DB_USERS, MAX_WORKERS

if TYPE_CHECKING:
    from trajectory2task.usecases import GenerateRequest

ALL_CONDITIONS = "general,ambiguous,changing,infeasible"
HELP = """Generate verifiable tasks: explore trajectories, write a general task from each, adapt it to the
chosen user conditions, verify every task statically and store everything.

--n is the number of trajectories to EXPLORE (items). Each item that yields a valid trajectory gives one
general task plus one adapted task per other chosen condition (when the adaptation's checks pass), so a
run makes at most n x (number of conditions) tasks. With no LM configured (no --lm, --<role>-lm,
--lm-config or T2T_*_LM variable) the offline baselines run: seeded, deterministic, labelled 'baseline'.

--programs NAME loads compiled program state saved in the store under NAME (t2t optimize): a record whose
program is 'explorer', 'writer' or 'adapter' holds that module's DSPy state; one whose program is
'generation' holds {"explorer": state, "writer": state, "adapter": state} (any subset).
"""


def _conditions(text: str) -> list[str]:
    from trajectory2task.signatures.models import CONDITIONS

    chosen = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in CONDITIONS]
    if unknown or not chosen:
        raise UserError(f"--conditions: unknown condition(s) {', '.join(unknown) or '(none given)'}; "
                        f"choose from {', '.join(CONDITIONS)}")
    return [c for c in CONDITIONS if c in chosen]


def _lm_config(flags: dict[str, Optional[str]], lm_config: Optional[str]) -> Any:
    from trajectory2task.programs.lm.config import LMConfigError, load_lm_config
    from trajectory2task.settings import check_lm_config_file

    check_lm_config_file(lm_config)
    try:
        return load_lm_config(flags=flags, config_path=lm_config)
    except LMConfigError as exc:
        raise UserError(str(exc)) from None


def _programs(lm_config: Any, session: Any = None) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """(programs by role, LMs by role, role -> 'baseline' or model) for the generation roles.
    With an ``LMSession``, each LM records its calls in the session's ledger."""
    from trajectory2task.programs.lm.build import build_lm
    from trajectory2task.programs.generation.pipeline import GENERATION_ROLES

    lms: dict[str, Any] = {}
    roles: dict[str, str] = {}
    for role in GENERATION_ROLES:
        settings = lm_config.for_role(role)
        if settings is not None:
            lms[role] = session.build(role, settings) if session is not None else build_lm(settings)
            roles[role] = settings.model
        else:
            roles[role] = "baseline"
    from trajectory2task.programs.generation.pipeline import generation_programs

    return generation_programs(lms), lms, roles


def generate(
    domain: Annotated[Optional[str], typer.Option("--domain", help="Domain name. \\[default: retail]")] = None,
    n: Annotated[Optional[int], typer.Option("--n", min=1, help="Trajectories to explore (items); each valid one "
                                                                "gives a general task and one task per other "
                                                                "chosen condition. \\[default: 40]")] = None,
    conditions: Annotated[Optional[str], typer.Option(
        "--conditions", help=f"Comma-separated conditions to make tasks in. \\[default: {ALL_CONDITIONS}]")] = None,
    lm: Annotated[Optional[str], typer.Option("--lm", help="LiteLLM model for every role, e.g. "
                                                           "openai/gpt-4o-mini.")] = None,
    api_base: Annotated[Optional[str], typer.Option("--api-base", help="Base URL of an OpenAI-compatible "
                                                                       "server (vLLM, Ollama, ...).")] = None,
    explorer_lm: Annotated[Optional[str], typer.Option("--explorer-lm", help="Model for the explorer.")] = None,
    writer_lm: Annotated[Optional[str], typer.Option("--writer-lm", help="Model for the task writer.")] = None,
    adapter_lm: Annotated[Optional[str], typer.Option("--adapter-lm", help="Model for the intent adaptation (role 'adapter').")] = None,
    lm_config: Annotated[Optional[str], typer.Option("--lm-config", help="LM config file (TOML or JSON) with "
                                                                         "\\[lm.<role>] tables.")] = None,
    db: Annotated[Optional[str], typer.Option("--db", help="Database JSON (default: a fresh one from the seeded "
                                                           "generator).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the generated database and of every "
                                                               "item. \\[default: 0]")] = None,
    users: Annotated[Optional[int], typer.Option("--users", min=1, max=MAX_DB_USERS,
                                                 help="Users in the generated database. \\[default: 500]")] = None,
    store: Annotated[Optional[str], typer.Option("--store", help="Store file (default ./t2t.duckdb).")] = None,
    resume: Annotated[Optional[str], typer.Option("--resume", help="Continue run RUN_ID: its recorded settings "
                                                                   "are used (a flag that would change them is "
                                                                   "refused); finished items are skipped.")] = None,
    programs: Annotated[Optional[str], typer.Option("--programs", help="Load compiled program state saved in "
                                                                       "the store under this name.")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, max=MAX_WORKERS,
                                                   help="Items in flight at once (default 1 "
                                                                            "offline, 8 with an LM).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
    guided: Annotated[bool, typer.Option("--guided", help="Coverage-guided: each batch of items aims at the "
                                                          "tool x condition cells with the fewest verified tasks "
                                                          "in the store.")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="With --resume: also redo the items that "
                                                                      "failed on the LM (lm_error).")] = False,
    timeout: TimeoutOpt = None,
    retries: RetriesOpt = None,
    max_tokens: MaxTokensOpt = None,
    temperature: TemperatureOpt = None,
    structured: StructuredOpt = None,
    context_window: ContextOpt = None,
    max_concurrent: MaxConcurrentOpt = None,
    no_cache: NoCacheOpt = False,
    cache_dir: CacheDirOpt = None,
    estimate: Annotated[bool, typer.Option("--estimate", help="Print the LM calls, tokens and cost the run would "
                                                              "make, counted on the real prompts (rendered on "
                                                              "offline explorations of its first items), and "
                                                              "exit without calling a model.")] = False,
    ray: RayOpt = None,
) -> None:
    """Explore trajectories, write and adapt tasks, verify them and store everything."""
    from trajectory2task.programs.lm.prices import ensure_local_cost_map

    ensure_local_cost_map()
    from trajectory2task.programs.generation.pipeline import GENERATION_ROLES
    from trajectory2task.settings import load_environment, store_path
    from trajectory2task.store import TaskStore
    from trajectory2task.usecases import GenerateRequest, new_run_environment

    request = GenerateRequest(domain=domain, n=n, conditions=tuple(_conditions(conditions)) if conditions is not None
                              else None, seed=seed, users=users, db=db, programs=programs, guided=guided,
                              resume=resume, retry_failed=retry_failed)
    flags = {"lm": lm, "api_base": api_base, "explorer_lm": explorer_lm, "writer_lm": writer_lm,
             "adapter_lm": adapter_lm}
    add_knobs(flags, GENERATION_ROLES, timeout=timeout, retries=retries, max_tokens=max_tokens,
              temperature=temperature, structured=structured, context_window=context_window,
              max_concurrent=max_concurrent)
    request.check()
    target = ray_target_of(ray)
    lms_config = _lm_config(flags, lm_config)
    if estimate:
        if resume is not None:
            raise UserError("--estimate plans a new run; it does not go with --resume")
        _print_estimate(load_environment(domain or "retail", db, seed=seed or 0, users=users or DEFAULT_DB_USERS),
                        n or DEFAULT_GENERATE_N, seed or 0, list(request.conditions or ALL_CONDITIONS.split(",")),
                        lms_config, json_out)
        return
    path = store_path(store)
    if resume is not None and not path.exists():
        raise UserError(f"--resume: no generate run '{resume}': no store at {path} (pass the --store the run "
                        "was made in)")
    session = None  # an offline run (no role has a model) imports no DSPy and no LiteLLM
    if any(lms_config.for_role(role) is not None for role in GENERATION_ROLES):
        from trajectory2task.programs.lm.session import LMSession

        session = LMSession(cache=configure_cache(no_cache, cache_dir))
    modules, lms, roles = _programs(lms_config, session)
    # a new run's domain and database are refused before the store is opened: no store file is left
    env = new_run_environment(request, roles) if resume is None else None
    if session is not None:
        from trajectory2task.programs.lm.session import EndpointError

        session.install_adapter()
        try:
            session.preflight()
        except EndpointError as exc:
            raise UserError(str(exc)) from None
    ray_module = join_ray(target) if target is not None else None  # before the store, as above

    created = not path.exists()
    started: list[str] = []
    try:
        with TaskStore(path) as task_store:
            summary, config, run_id = _run(task_store, path, request, roles, modules, lms, session, workers, env,
                                           started, ray_module, target is not None and target.local)
    except BaseException:
        if created and not started:  # nothing of this run is in it: leave no new file behind
            for file in (path, path.with_name(path.name + ".wal")):
                file.unlink(missing_ok=True)
        raise
    _report(summary, config, session, run_id, json_out, ray_module is not None)


def _run(task_store: Any, path: Any, request: GenerateRequest, roles: dict[str, str], modules: dict[str, Any],
         lms: dict[str, Any], session: Any, workers: Optional[int], env: Any, started: list[str],
         ray_module: Any, ray_local: bool) -> tuple[Any, Any, str]:
    """Open the run (resumed or new) and make its items under a progress bar: (summary,
    config, run id); the run's id goes into ``started`` once it is recorded."""
    from trajectory2task.domains.kit import KitError
    from trajectory2task.output import err_console, progress
    from trajectory2task.usecases import done_items, generation_pipeline, open_generation_run

    config, run_id, env = open_generation_run(task_store, path, request, roles, env)
    pipeline = generation_pipeline(task_store, config, run_id, env, modules, lms, session=session, workers=workers,
                                   retry_failed=request.retry_failed, ray=ray_module, ray_local=ray_local)
    started.append(run_id)
    label = f"generate {config.domain} ({config.source})"
    try:
        with progress("generating", total=config.n) as bar:
            task = bar.add_task(label, total=config.n, completed=done_items(pipeline, run_id))
            if session is not None:  # the live line: calls, tokens, cost and errors by kind, as each LM call ends
                session.ledger.on_call(lambda line: bar.update(task, description=f"{label} | {line}"))
            summary = pipeline.run(run_id, progress=lambda item: bar.update(task, advance=1))
    except KeyboardInterrupt:
        err_console.print(f"interrupted: finished items are stored; continue with --resume {run_id}")
        raise
    except KitError as exc:  # e.g. a database whose tables are empty: nothing to explore
        task_store.finish_run(run_id, "failed")
        raise UserError(f"cannot explore this database: {exc}") from None
    except RuntimeError as exc:
        from trajectory2task.programs.distributed.generate_ray import WorkerLost

        if not isinstance(exc, WorkerLost):
            raise
        task_store.finish_run(run_id, "interrupted")
        raise UserError(f"{exc}; continue with --resume {run_id}") from None
    return summary, config, run_id


def _report(summary: Any, config: Any, session: Any, run_id: str, json_out: bool,
            on_ray: bool = False) -> None:
    from trajectory2task.output import console, err_console, print_json_line, print_table

    if session is not None:
        err_console.print(session.ledger.progress_line(), markup=False, highlight=False)
    if summary.retried:
        err_console.print(f"ray: {summary.retried} item(s) run again after their worker was lost", markup=False,
                          highlight=False)
    _fail_on_lm(summary, session, run_id)
    if json_out:
        print_json_line({"run_id": summary.run_id, "source": config.source, "items": summary.items,
                         "failed": summary.failed, "rejected": summary.rejected,
                         "conditions": [dict(c.model_dump(), rate=round(c.rate, 4)) for c in summary.conditions],
                         **({"retried": summary.retried} if on_ray else {})})
        return
    print_table(f"generate {config.domain}: {config.source}, seed {config.seed}, n {config.n}",
                ["condition", "explored", "valid", "tasks", "verified", "rate"],
                [(c.condition, c.explored, c.valid, c.tasks, c.verified, f"{c.rate:.0%}") for c in summary.conditions])
    if summary.failed:
        console.print("failed items: " + ", ".join(f"{reason} {k}" for reason, k in sorted(summary.failed.items())))
    for condition, reasons in summary.rejected.items():
        console.print(f"{condition} not adapted: " + ", ".join(f"{r} {k}" for r, k in sorted(reasons.items())))
    console.print(f"run {run_id}")


def _print_estimate(env: Any, n: int, seed: int, conditions: list[str], lms_config: Any, json_out: bool) -> None:
    """`--estimate`: what the run would send, per role and in all; no model is called."""
    from trajectory2task.domains.kit import KitError
    from trajectory2task.programs.generation.estimate import estimate_run
    from trajectory2task.programs.generation.pipeline import GENERATION_ROLES
    from trajectory2task.programs.lm.tokens import litellm_tokenizer
    from trajectory2task.estimate import print_estimate

    settings = {role: lms_config.for_role(role) for role in GENERATION_ROLES}
    models = {role: s.model for role, s in settings.items() if s is not None}
    try:
        plan = estimate_run(env, items=n, run_seed=seed, conditions=conditions,
                            tokenizer=lambda role: litellm_tokenizer(models.get(role, "")),
                            structured={role: s.structured for role, s in settings.items() if s is not None},
                            models=models)
    except KitError as exc:
        raise UserError(f"--estimate renders prompts on offline explorations of the run's items: {exc}") from None
    print_estimate(plan, settings, json_out, unit="item",
                   title=f"estimate: generate {env.domain.name}, --n {n}, prompts rendered on {plan.sampled} "
                         "offline item(s)")


def _fail_on_lm(summary: Any, session: Any, run_id: str) -> None:
    """Nothing produced and the LM is why: the first reasons, one line each, and exit 1."""
    produced = sum(c.tasks for c in summary.conditions)
    lm_failed = summary.failed.get("lm_error", 0)
    if produced or session is None or not (lm_failed or session.ledger.errors):
        return
    reasons = session.ledger.reasons() or [f"{lm_failed} item(s) failed on the LM's output (lm_error); see "
                                           f"run_events of run {run_id}"]
    for line in reasons:
        print(f"t2t: error: {line}", file=sys.stderr)
    print(f"t2t: error: no task produced: {lm_failed} of {summary.items} item(s) failed on the LM; fix the above "
          f"and redo them with --resume {run_id} --retry-failed", file=sys.stderr)
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("generate", help=HELP)(generate)
