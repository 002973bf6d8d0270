"""The `t2t` command. Heavy packages (dspy, litellm, duckdb) load inside the commands that need them."""

from __future__ import annotations

import errno
import json
import os
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from trajectory2task.errors import UserError

# The commands that must start fast (no store, LM or training library) are built up front;
# the others' modules are imported only when one of them is asked for (or the full list is
# shown), so `t2t domains` does not pay for importing and building `generate` or `bench`.
_EAGER_MODULES = ("cmd_domain", "cmd_tasks")
_LAZY_MODULES = ("cmd_store", "cmd_generate", "cmd_bench", "cmd_optimize", "cmd_audit", "cmd_finetune")


class _LazyGroup(TyperGroup):
    """The root command group: the commands of `_LAZY_MODULES` join it on first need."""

    _lazy_loaded = False

    def _load_lazy_commands(self) -> None:
        if self._lazy_loaded:
            return
        self._lazy_loaded = True
        import importlib

        staging = typer.Typer(add_completion=False)
        for name in _LAZY_MODULES:
            importlib.import_module(f"trajectory2task.{name}").register(staging)
        built = typer.main.get_command(staging)
        for command_name, command in getattr(built, "commands", {built.name: built}).items():
            self.add_command(command, command_name)

    # Any: the command classes come from click or from the copy of click newer Typers ship
    def get_command(self, ctx: typer.Context, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is None and not self._lazy_loaded:
            self._load_lazy_commands()
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: typer.Context) -> list[str]:
        self._load_lazy_commands()
        names = super().list_commands(ctx)
        # Typer lists a group's commands before its subgroups; the subgroups built up front
        # (`domain`) stay after the lazily added commands, as when all were built at once
        return sorted(names, key=lambda name: isinstance(self.commands[name], TyperGroup))


app = typer.Typer(
    name="t2t",
    help="trajectory2task: explore tool environments, write verifiable tasks, benchmark agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_LazyGroup,
)


def _register() -> None:
    import importlib

    for name in _EAGER_MODULES:
        importlib.import_module(f"trajectory2task.{name}").register(app)


_register()

# Errors whose message is meant for the user, by (module, class). The modules load only in
# the commands that raise them, so they are looked up lazily to keep `t2t` quick to start.
_USER_FACING = (("trajectory2task.store.files", "InputFileError"), ("trajectory2task.store.errors", "StoreError"), ("trajectory2task.domains", "UnknownDomainError"), ("trajectory2task.domains.kit", "KitError"), ("trajectory2task.programs.lm.config", "LMConfigError"))


def _is_user_facing(exc: BaseException) -> bool:
    for module, name in _USER_FACING:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(exc, cls):
            return True
    return False


def _fail(message: str, code: int = 2) -> None:
    from trajectory2task.output import terminal_text

    # one line whatever the message holds: newlines and control characters are escaped
    print(f"t2t: error: {terminal_text(message)}", file=sys.stderr)
    raise SystemExit(code)


def _usage_error(exc: Any) -> None:
    """A click/Typer parameter error as one line, with where to read the usage."""
    message = " ".join(exc.format_message().split())
    command = exc.ctx.command_path if exc.ctx is not None else "t2t"
    _fail(f"{message} (see: {command} --help)", exc.exit_code)


def _output_failed(exc: OSError) -> None:
    """Standard output cannot take more (disk full, closed pipe): say so once, and point
    stdout at /dev/null so the interpreter's last flush does not fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    if exc.errno == errno.EPIPE:  # the reader went away (| head): nothing to tell it
        raise SystemExit(1)
    _fail(f"cannot write to standard output: {exc.strerror or exc}", 1)


def _tolerant_streams() -> None:
    """Unencodable text (an ASCII-only locale, undecodable file names) is escaped instead
    of ending the command."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):
            pass


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 2."""
    # click's exception classes, wherever this Typer takes click from (newer Typers ship
    # their own copy): the module that defines typer.BadParameter defines them all
    clicks = sys.modules[typer.BadParameter.__module__]
    _tolerant_streams()
    code: Any = 0
    try:
        from trajectory2task.ray_options import with_bare_ray_flag

        code = app(args=with_bare_ray_flag(sys.argv[1:]), standalone_mode=False)
        sys.stdout.flush()
    except clicks.NoArgsIsHelpError as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except clicks.UsageError as exc:
        _usage_error(exc)
    except clicks.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except (getattr(clicks, "Abort", typer.Abort), typer.Abort):
        _fail("interrupted", 130)
    except UserError as exc:
        _fail(str(exc))
    except json.JSONDecodeError as exc:
        _fail(f"invalid JSON: {exc.msg} at line {exc.lineno}")
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except OSError as exc:
        if exc.filename is None and exc.errno in _OUTPUT_ERRNOS:
            _output_failed(exc)
        where = f"{exc.filename}: " if exc.filename else ""
        _fail(f"{where}{exc.strerror or exc}")
    except Exception as exc:
        if _is_user_facing(exc):
            _fail(str(exc))
        raise
    raise SystemExit(code if isinstance(code, int) else 0)


# errno values of a failed write to standard output
_OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EPIPE, errno.EIO, errno.EFBIG, errno.EBADF})


if __name__ == "__main__":
    main()
