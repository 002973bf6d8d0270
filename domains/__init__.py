"""Tool environments. A domain is a package exposing ``DOMAIN``; register it here by name."""

from __future__ import annotations

import importlib

from trajectory2task.domains.runtime import Domain, Environment, Episode, PolicyContext, ToolResult, ToolSpec

BUILTIN_DOMAINS = {"retail": "trajectory2task.domains.retail", "airline": "trajectory2task.domains.airline"}
# A domain is named by a built-in name, or by an importable package or module exposing DOMAIN.


class UnknownDomainError(LookupError):
    pass


def list_domains() -> list[str]:
    return sorted(BUILTIN_DOMAINS)


def domain_module(name: str) -> str:
    """The module path a domain name loads: a built-in's package, or the name itself."""
    return BUILTIN_DOMAINS.get(name, name)


def get_domain(name: str) -> Domain:
    """The built-in domain ``name``, or the DOMAIN of the package or module ``name``
    ('mypkg' or 'mypkg.module')."""
    module_path = domain_module(name)
    if not all(part.isidentifier() for part in module_path.split(".")):
        raise UnknownDomainError(f"unknown domain '{name}' (built-in: {', '.join(list_domains())}; "
                                 "or a package or module exposing DOMAIN)")
    try:
        module = importlib.import_module(module_path)
    except ModuleNotFoundError as exc:
        if exc.name is not None and not _is_prefix(exc.name, module_path):
            # the module exists but imports something missing: that is its failure, not an unknown name
            raise UnknownDomainError(f"domain module {module_path} failed at import: {_describe(exc)}") from None
        raise UnknownDomainError(f"unknown domain '{name}' (built-in: {', '.join(list_domains())}): {exc}") from None
    except (Exception, SystemExit) as exc:  # a user's module runs at import: any failure there is theirs to fix
        raise UnknownDomainError(f"domain module {module_path} failed at import: {_describe(exc)}") from None
    domain = getattr(module, "DOMAIN", None)
    if not isinstance(domain, Domain):
        raise UnknownDomainError(f"module {module_path} has no DOMAIN")
    return domain


def _is_prefix(missing: str, module_path: str) -> bool:
    """Whether the missing module is ``module_path`` or a package on the way to it."""
    return module_path == missing or module_path.startswith(missing + ".")


def _describe(exc: BaseException) -> str:
    """An import failure in one line: its type, message and, for a syntax error, where."""
    if isinstance(exc, SyntaxError):
        where = f" ({exc.filename}, line {exc.lineno})" if exc.filename else ""
        return f"{type(exc).__name__}: {exc.msg}{where}"
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


__all__ = ["Domain", "Environment", "Episode", "PolicyContext", "ToolResult", "ToolSpec", "domain_module", "get_domain",
           "list_domains", "UnknownDomainError"]
