"""Tool environments. A domain is a package exposing ``DOMAIN``; register it here by name."""

from __future__ import annotations

import importlib

from domains.runtime import Domain, Environment, Episode, PolicyContext, ToolResult, ToolSpec

BUILTIN_DOMAINS = {"retail": "domains.retail", "airline": "domains.airline"}


class UnknownDomainError(LookupError):
    pass


def list_domains() -> list[str]:
    return sorted(BUILTIN_DOMAINS)


def get_domain(name: str) -> Domain:
    """The domain registered under ``name``, or a module path 'package.module' exposing DOMAIN."""
    module_path = BUILTIN_DOMAINS.get(name, name if "." in name else None)
    if module_path is None:
        raise UnknownDomainError(f"unknown domain '{name}' (known: {', '.join(list_domains())})")
    try:
        module = importlib.import_module(module_path)
    except ModuleNotFoundError as exc:
        raise UnknownDomainError(f"unknown domain '{name}': {exc}") from None
    domain = getattr(module, "DOMAIN", None)
    if not isinstance(domain, Domain):
        raise UnknownDomainError(f"module {module_path} has no DOMAIN")
    return domain


__all__ = ["Domain", "Environment", "Episode", "PolicyContext", "ToolResult", "ToolSpec", "get_domain",
           "list_domains", "UnknownDomainError"]
