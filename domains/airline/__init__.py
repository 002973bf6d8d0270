"""The airline domain: tau2-bench's airline tool API over its db.json format."""

from __future__ import annotations

from importlib.resources import files

from trajectory2task.domains.airline.audit import AUDIT_CHECKS
from trajectory2task.domains.airline.models import AirlineDB
from trajectory2task.domains.airline.rules import POLICY_RULES, record_owner
from trajectory2task.domains.airline.tools import ALL_TOOLS
from trajectory2task.domains.runtime import Deferred, Domain, tool_spec

DOMAIN: Domain[AirlineDB] = Domain(
    name="airline",
    summary="An airline: flights by date, users and reservations; book, change, cancel, compensate.",
    db_model=AirlineDB,
    tools=tuple(tool_spec(f) for f in ALL_TOOLS),
    policy=files(__name__).joinpath("policy.md").read_text(encoding="utf-8"),
    policy_rules=POLICY_RULES,
    generate_db=Deferred(f"{__name__}.generate", "generate_airline_db"),
    check_db=Deferred(f"{__name__}.consistency", "check_airline_db"),
    owner_of=record_owner,
    kit=Deferred(f"{__name__}.kit", "KIT"),
    audit_checks=AUDIT_CHECKS,
)
