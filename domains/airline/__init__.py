"""The airline domain: tau2-bench's airline tool API over its db.json format."""

from __future__ import annotations

from importlib.resources import files

from trajectory2task.domains.airline.audit import AUDIT_CHECKS
from trajectory2task.domains.airline.consistency import check_airline_db
from trajectory2task.domains.airline.generate import generate_airline_db
from trajectory2task.domains.airline.kit import KIT
from trajectory2task.domains.airline.models import AirlineDB
from trajectory2task.domains.airline.rules import POLICY_RULES, record_owner
from trajectory2task.domains.airline.tools import ALL_TOOLS
from trajectory2task.domains.runtime import Domain, tool_spec

DOMAIN: Domain[AirlineDB] = Domain(
    name="airline",
    summary="An airline: flights by date, users and reservations; book, change, cancel, compensate.",
    db_model=AirlineDB,
    tools=tuple(tool_spec(f) for f in ALL_TOOLS),
    policy=files(__name__).joinpath("policy.md").read_text(encoding="utf-8"),
    policy_rules=POLICY_RULES,
    generate_db=generate_airline_db,
    check_db=check_airline_db,
    owner_of=record_owner,
    kit=KIT,
    audit_checks=AUDIT_CHECKS,
)
