"""Airline's audit checks (``trajectory2task.domains.audit_checks``), read from its policy rules.

- compensation: a certificate is the policy's remedy (``rules.compensation_due``: 100 per
  passenger for a cancelled flight, 50 for a delayed one once the reservation is changed or
  cancelled, for silver and gold members, insured or business reservations); a task may grant
  no other amount, and may not forbid a certificate to a user the policy sets one for unless its
  gold grants it (an agent that offers the policy's amount would change the database and fail);
- hand-off: the policy transfers a cancellation of a reservation with a flown segment; any other
  refused write is denied;
- same variant: a change that asks for what the reservation already holds (its flights in its
  cabin, its passengers, its bags) changes nothing, whatever the words say.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trajectory2task.domains.airline.rules import any_flown, compensation_due, flight_refs, reservation, user
from trajectory2task.domains.audit_checks import AuditCheck, handoff_findings, writes_with_state
from trajectory2task.domains.runtime import Environment, Episode

if TYPE_CHECKING:
    from trajectory2task.signatures.models import Action, Task

CERTIFICATE = "send_certificate"


def _amount(action: Action) -> float | None:
    value = action.arguments.get("amount")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _compensation_off_policy(task: Task, environment: Environment[Any]) -> list[str]:
    # the users the gold compensates: a forbidden larger certificate beside the due one is fair
    granted = {a.arguments.get("user_id") for a in task.gold_actions if a.name == CERTIFICATE}
    out = []
    for where, before, action in writes_with_state(environment, task):
        owner = user(before, action.arguments.get("user_id")) if action.name == CERTIFICATE else None
        if owner is None:
            continue  # not a certificate, or one the tool refuses (failing gold, another row)
        due = compensation_due(before, owner)
        if where == "forbidden":
            if due and owner.user_id not in granted:
                rid, value, why = due[0]
                out.append(f"forbids {owner.user_id} a certificate, yet the policy sets {value} for {rid} ({why}): "
                           "an agent that offers it fails the task")
            continue
        amount = _amount(action)
        if amount is None or not any(abs(amount - value) < 1e-9 for _, value, _ in due):
            allowed = ", ".join(f"{value} for {rid} ({why})" for rid, value, why in due) or "none"
            said = "no amount" if amount is None else f"{amount:g}"
            out.append(f"the {where} grants {owner.user_id} a certificate of {said}; the policy sets {allowed}")
    return list(dict.fromkeys(out))


def _transfer_required(state: Episode[Any], write: Action) -> bool:
    booking = reservation(state, write.arguments.get("reservation_id"))
    return write.name == "cancel_reservation" and booking is not None and any_flown(state, booking)


def _handoff_not_required(task: Task, environment: Environment[Any]) -> list[str]:
    return handoff_findings(environment, task, _transfer_required)


def _people(value: Any) -> list[tuple[Any, Any, Any]] | None:
    if not isinstance(value, list) or not all(isinstance(p, dict) for p in value):
        return None
    return [(p.get("first_name"), p.get("last_name"), p.get("dob")) for p in value]


def _holds_already(state: Episode[Any], action: Action) -> str | None:
    """What of the reservation the write asks for unchanged, or None when it changes something."""
    booking = reservation(state, action.arguments.get("reservation_id"))
    a = action.arguments
    if booking is None:
        return None
    if action.name == "update_reservation_flights" and a.get("cabin") == booking.cabin and \
            flight_refs(a.get("flights")) == [(s.flight_number, s.date) for s in booking.flights]:
        return "its own flights in its own cabin"
    if action.name == "update_reservation_passengers" and \
            _people(a.get("passengers")) == [(p.first_name, p.last_name, p.dob) for p in booking.passengers]:
        return "its own passengers"
    if action.name == "update_reservation_baggages" and \
            (a.get("total_baggages"), a.get("nonfree_baggages")) == (booking.total_baggages, booking.nonfree_baggages):
        return "the bags it already has"
    return None


def _same_variant_request(task: Task, environment: Environment[Any]) -> list[str]:
    out = []
    for where, before, action in writes_with_state(environment, task):
        held = _holds_already(before, action)
        if held is not None:
            out.append(f"the {where} {action.name} on {action.arguments.get('reservation_id')} asks for {held}")
    return list(dict.fromkeys(out))


AUDIT_CHECKS = (
    AuditCheck("compensation_off_policy",
               "A certificate only at the policy's amount, and never refused where the policy sets one.",
               _compensation_off_policy),
    AuditCheck("handoff_not_required", "Only a cancellation with a flown segment is handed off; other refusals "
               "are denied.", _handoff_not_required),
    AuditCheck("same_variant_request", "A change asks for something the reservation does not already hold.",
               _same_variant_request),
)
