"""Commands about domains: list, show, generate and check databases."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from trajectory2task.errors import UserError
from trajectory2task.output import print_rule, print_table, print_text
from trajectory2task.settings import MAX_DB_USERS, load_environment, read_text_file, resolve_domain

domain_app = typer.Typer(help="Inspect a domain, generate or check its databases.", no_args_is_help=True)


def domains() -> None:
    """List the domains."""
    from trajectory2task.domains import list_domains

    rows = []
    for name in list_domains():
        domain = resolve_domain(name)
        writes = sum(1 for t in domain.tools if t.kind == "write")
        rows.append((name, len(domain.tools), writes, domain.summary))
    print_table("domains", ["name", "tools", "writes", "summary"], rows)


@domain_app.command("show")
def show(name: Annotated[str, typer.Argument(help="Domain name, e.g. retail.")],
         policy: Annotated[Optional[str], typer.Option(help="Show this policy file instead of the built-in one.")] = None,
         ) -> None:
    """Print a domain's tools with their parameters, then its policy."""
    domain = resolve_domain(name)
    text = domain.policy if policy is None else read_text_file(policy, "--policy")  # refused before any output
    rows = []
    for spec in domain.tools:
        props = spec.parameters.get("properties", {})
        required = set(spec.parameters.get("required", []))
        params = ", ".join(f"{p}: {_type_name(s)}{'' if p in required else '?'}" for p, s in props.items())
        rows.append((spec.name, spec.kind, params, spec.description.splitlines()[0]))
    print_table(f"{domain.name} tools", ["tool", "kind", "parameters", "description"], rows)
    # every domain has at least the ownership rule (from its owner_of)
    print_table("policy rules checked by code", ["rule", "description"],
                [(r.rule_id, r.description) for r in domain.enforced_rules])
    print_rule("policy")
    print_text(text, keep_newlines=True)


def _type_name(schema: dict) -> str:
    if schema.get("type") == "array":
        return f"list[{_type_name(schema.get('items', {}))}]"
    return str(schema.get("type", "any"))


@domain_app.command("generate-db")
def generate_db(name: Annotated[str, typer.Argument(help="Domain name, e.g. retail.")],
                out: Annotated[Path, typer.Option("--out", help="Where to write the database JSON.")],
                seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same bytes.")] = 0,
                users: Annotated[int, typer.Option(help="Number of users.", min=1, max=MAX_DB_USERS)] = 500,
                force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
                ) -> None:
    """Generate a fresh database of the domain's schema (seeded, byte-for-byte reproducible)."""
    from trajectory2task.store.outfile import check_output_path, output_file

    domain = resolve_domain(name)
    if domain.generate_db is None:
        raise UserError(f"domain {name} has no database generator")
    check_output_path(out, replace=force)  # before the minutes a large database takes
    db = domain.generate_db(seed, users)
    problems = domain.check_db(db)
    if problems:
        raise UserError(f"generated database is inconsistent: {problems[0]}")
    with output_file(out, replace=force) as fh:
        fh.write(db.model_dump_json(indent=2) + "\n")
    counts = ", ".join(f"{len(getattr(db, t))} {t}" for t in type(db).model_fields)
    print_text(f"wrote {out}: {counts}")


@domain_app.command("check")
def check(name: Annotated[str, typer.Argument(help="Domain name, e.g. retail.")],
          db: Annotated[Path, typer.Option("--db", help="Database JSON to check.")]) -> None:
    """Check a database's consistency; exits 1 when a problem is found."""
    env = load_environment(name, str(db))
    problems = env.domain.check_db(env.base.db)
    for problem in problems:
        print_text(problem)
    print_text(f"{len(problems)} problem(s) in {db}")
    if problems:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("domains")(domains)
    app.add_typer(domain_app, name="domain")
