"""The `t2t` command. Heavy packages (dspy, litellm, duckdb) load inside the commands that need them."""

from __future__ import annotations

import json
import sys

import typer

from t2t.errors import UserError

app = typer.Typer(
    name="t2t",
    help="trajectory2task: explore tool environments, write verifiable tasks, benchmark agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from t2t import cmd_domain, cmd_tasks, cmd_store

    cmd_domain.register(app)
    cmd_tasks.register(app)
    cmd_store.register(app)
    for optional in ("cmd_generate", "cmd_bench", "cmd_optimize"):
        try:
            module = __import__(f"t2t.{optional}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != f"t2t.{optional}":
                raise
            continue
        module.register(app)


_register()


def _fail(message: str, code: int = 2) -> None:
    print(f"t2t: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 2."""
    from store.files import InputFileError

    try:
        app()
    except UserError as exc:
        _fail(str(exc))
    except InputFileError as exc:
        _fail(str(exc))
    except json.JSONDecodeError as exc:
        _fail(f"invalid JSON: {exc.msg} at line {exc.lineno}")
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:  # store errors and the like carry a message meant for the user
        name = type(exc).__name__
        if name in ("StoreError", "UnknownDomainError"):
            _fail(str(exc))
        raise


if __name__ == "__main__":
    main()
