"""The retail domain: tau2-bench's retail tool API over its db.json format."""

from __future__ import annotations

from importlib.resources import files

from trajectory2task.domains.retail.audit import AUDIT_CHECKS
from trajectory2task.domains.runtime import Deferred, Domain, tool_spec
from trajectory2task.domains.retail.models import RetailDB
from trajectory2task.domains.retail.rules import POLICY_RULES, record_owner
from trajectory2task.domains.retail.tools import ALL_TOOLS

DOMAIN: Domain[RetailDB] = Domain(
    name="retail",
    summary="An online store: users, orders and products; cancel, modify, return and exchange orders.",
    db_model=RetailDB,
    tools=tuple(tool_spec(f) for f in ALL_TOOLS),
    policy=files(__name__).joinpath("policy.md").read_text(encoding="utf-8"),
    policy_rules=POLICY_RULES,
    generate_db=Deferred(f"{__name__}.generate", "generate_retail_db"),
    check_db=Deferred(f"{__name__}.consistency", "check_retail_db"),
    owner_of=record_owner,
    kit=Deferred(f"{__name__}.kit", "KIT"),
    audit_checks=AUDIT_CHECKS,
)
