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
    from t2t import cmd_audit, cmd_bench, cmd_domain, cmd_generate, cmd_optimize, cmd_store, cmd_tasks

    for module in (cmd_domain, cmd_tasks, cmd_store, cmd_generate, cmd_bench, cmd_optimize, cmd_audit):
        module.register(app)


_register()

# Errors whose message is meant for the user, by (module, class). The modules load only in
# the commands that raise them, so they are looked up lazily to keep `t2t` quick to start.
_USER_FACING = (("store.errors", "StoreError"), ("domains", "UnknownDomainError"), ("domains.kit", "KitError"), ("programs.lm.config", "LMConfigError"))


def _is_user_facing(exc: BaseException) -> bool:
    for module, name in _USER_FACING:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(exc, cls):
            return True
    return False


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
    except Exception as exc:
        if _is_user_facing(exc):
            _fail(str(exc))
        raise


if __name__ == "__main__":
    main()
