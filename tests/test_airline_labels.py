"""Airline labels a careful grader would sign, read from the raw tau2 export and the raw db.json.

`t2t generate --domain airline` offline, then `t2t export --format tau2`; the checks below read
only the exported JSON and the database file, with their own small model of the airline
policy (not the generator's code), for each class of wrong label found by an independent audit:

a. an ambiguous opening's readings each fit the words (passenger named, bag counts, flight,
   cabin, reason to cancel) and the policy, are pairwise different writes, two at least;
b. a refused compensation never where the policy grants a certificate for the user's trips;
c. a flight named by route, date and time fits one flight; a revised request reads unlike the first;
d. nobody booked twice on one flight, no reservation written twice; one question per amount;
e. no seams: "bag(s)", relatives sharing a birth date, a fee for removing bags, a price
   question naming a changing task's revised goal, an amount to tell already in the user's words.

The last test plants each fault into an exported task and checks that the checkers see it.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from trajectory2task.cli import app
from tests.airline_ref import AIRLINE_DIR

NOW = datetime(2024, 5, 15, 15, 0, 0)
FREE_BAGS = {"regular": {"basic_economy": 0, "economy": 1, "business": 2},
             "silver": {"basic_economy": 1, "economy": 2, "business": 3},
             "gold": {"basic_economy": 2, "economy": 3, "business": 4}}
CABINS = {"basic economy": "basic_economy", "economy": "economy", "business": "business"}
RESERVATION_WRITES = ("cancel_reservation", "update_reservation_baggages", "update_reservation_flights",
                      "update_reservation_passengers")
PERSON = re.compile(r"([A-Z][\w'-]+) ([A-Z][\w'-]+) \(born (\d{4}-\d\d-\d\d)\)")
FLIGHT = re.compile(r"the (\w{3})-(\w{3}) flight on (\d{4}-\d\d-\d\d) departing at (\d\d:\d\d)(?: \(flight (\w+)\))?"
                    r"(?: for the one departing at (\d\d:\d\d)(?: \(flight (\w+)\))?(?: the same day| on (\d{4}-\d\d-\d\d)))?")
N_ITEMS = "20"


def _run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={k: None for k in os.environ if k.startswith("T2T_")})
    assert result.exit_code == 0, result.output
    return result.output


def _export(tmp: Path, db: Path) -> list[dict[str, Any]]:
    store, out = tmp / "t2t.duckdb", tmp / "tasks.json"
    _run("generate", "--domain", "airline", "--n", N_ITEMS, "--seed", "17", "--db", str(db), "--store", str(store),
         "--json")
    _run("export", "--format", "tau2", "--store", str(store), "--out", str(out))
    return json.loads(out.read_text())


@pytest.fixture(scope="module", params=["tau2", "fresh"])
def exported(request, tmp_path_factory) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(exported tasks, raw database) for tau2's db.json, and for a database `t2t domain generate-db` wrote."""
    tmp = tmp_path_factory.mktemp(f"airline_labels_{request.param}")
    if request.param == "tau2":
        db = AIRLINE_DIR / "db.json"
        if not db.is_file():
            pytest.skip(f"tau2 airline reference data not found at {AIRLINE_DIR} (the shared/ folder beside the repo)")
    else:
        db = tmp / "db.json"
        _run("domain", "generate-db", "airline", "--seed", "17", "--users", "300", "--out", str(db))
    return _export(tmp, db), json.loads(db.read_text())


# ---------------------------------------------------------------- a small model of the data


def _instructions(task: dict[str, Any]) -> dict[str, Any]:
    return task["user_scenario"]["instructions"]


def _user_text(task: dict[str, Any]) -> str:
    ins = _instructions(task)
    return "\n".join(ins.get(k) or "" for k in ("reason_for_call", "known_info", "unknown_info", "task_instructions"))


def _user_id(task: dict[str, Any]) -> str:
    found = re.search(r"Your user id is (\w+)", _instructions(task).get("known_info") or "")
    assert found, task["id"]
    return found.group(1)


def _writes(task: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in task["evaluation_criteria"]["actions"] or []
            if a["name"] in (*RESERVATION_WRITES, "book_reservation", "send_certificate")]


def _status(db: dict[str, Any], number: str, date: str) -> str | None:
    entry = db["flights"].get(number, {}).get("dates", {}).get(date)
    return entry["status"] if entry else None


def _flown(db: dict[str, Any], booking: dict[str, Any]) -> bool:
    return any(_status(db, s["flight_number"], s["date"]) in ("landed", "flying") for s in booking["flights"])


def _airline_cancelled(db: dict[str, Any], booking: dict[str, Any]) -> bool:
    return any(_status(db, s["flight_number"], s["date"]) == "cancelled" for s in booking["flights"])


def _recent(booking: dict[str, Any]) -> bool:
    return timedelta(0) <= NOW - datetime.fromisoformat(booking["created_at"]) <= timedelta(hours=24)


def _apply(db: dict[str, Any], action: dict[str, Any]) -> None:
    """The fields these checks read, after one write (tau2's semantics)."""
    name, args = action["name"], action["arguments"]
    booking = db["reservations"].get(args.get("reservation_id", ""))
    legs = lambda flights: [dict(f, origin=db["flights"][f["flight_number"]]["origin"],  # noqa: E731
                                 destination=db["flights"][f["flight_number"]]["destination"]) for f in flights]
    if name == "cancel_reservation" and booking:
        booking["status"] = "cancelled"
    elif name == "update_reservation_baggages" and booking:
        booking["total_baggages"], booking["nonfree_baggages"] = args["total_baggages"], args["nonfree_baggages"]
    elif name == "update_reservation_passengers" and booking:
        booking["passengers"] = args["passengers"]
    elif name == "update_reservation_flights" and booking:
        booking["cabin"], booking["flights"] = args["cabin"], legs(args["flights"])
    elif name == "book_reservation":
        rid = next(i for i in ("HATHAT", "HATHAU", "HATHAV") if i not in db["reservations"])
        db["reservations"][rid] = dict(args, reservation_id=rid, status=None, created_at=NOW.isoformat(),
                                       flights=legs(args["flights"]))
        db["users"][args["user_id"]]["reservations"].append(rid)


def _fitting(db: dict[str, Any], origin: str, destination: str, date: str, departure: str) -> list[str]:
    return sorted(k for k, f in db["flights"].items() if (f["origin"], f["destination"]) == (origin, destination)
                  and date in f["dates"] and f["scheduled_departure_time_est"][:5] == departure)


def _questions(task: dict[str, Any]) -> list[str]:
    ins = _instructions(task)
    return re.findall(r"[^.?]*\bask the agent\b[^.?]*[.?]", f"{ins['reason_for_call']} {ins['task_instructions']}")


# ---------------------------------------------------------------- the checks, one per class


def _reading_faults(db: dict[str, Any], user_id: str, clause: str, reading: dict[str, Any]) -> list[str]:
    """Why one reading's write does not fit the open clause of the words or the policy."""
    name, args = reading["action"]["name"], reading["action"]["arguments"]
    user = db["users"][user_id]
    method = user["payment_methods"].get(args.get("payment_id", ""), {"source": "none"}) \
        if "payment_id" in args else None
    if method is not None and method["source"] not in ("credit_card", "gift_card"):
        return [f"{args['payment_id']} cannot pay a change"]
    booking = db["reservations"].get(args.get("reservation_id", ""))
    if booking is None or booking["user_id"] != user_id:
        return ["not a reservation of the user"]
    if booking.get("status") == "cancelled" or _flown(db, booking):
        return [f"{booking['reservation_id']} is cancelled or already flown"]
    if name == "cancel_reservation":
        grounds = {"airline cancelled": _airline_cancelled(db, booking), "few hours ago": _recent(booking),
                   " ill ": booking["insurance"] == "yes"}
        said = next((k for k in grounds if k in clause), None)
        ok = grounds[said] if said else (booking["cabin"] == "business" or _recent(booking)
                                         or _airline_cancelled(db, booking))
        return [] if ok else ["no ground to cancel that the words give"]
    if name == "update_reservation_baggages":
        free = FREE_BAGS[db["users"][booking["user_id"]]["membership"]][booking["cabin"]] * len(booking["passengers"])
        found = re.search(r"add (\d+) checked bags? to one of your reservations, (\d+) checked bags? in all", clause)
        faults = [] if args["nonfree_baggages"] == max(0, args["total_baggages"] - free) else ["paid bags"]
        if found and (booking["total_baggages"] != int(found[2]) - int(found[1])
                      or args["total_baggages"] != int(found[2])):
            faults.append(f"holds {booking['total_baggages']} bags, the words add {found[1]} to make {found[2]}")
        return faults
    if name == "update_reservation_passengers":
        expected = [dict(p) for p in booking["passengers"]]
        for old, first, last, dob in re.findall(r"([A-Z][\w'-]+ [A-Z][\w'-]+) replaced by ([A-Z][\w'-]+) "
                                                r"([A-Z][\w'-]+) \(born (\d{4}-\d\d-\d\d)\)", clause):
            at = [i for i, p in enumerate(expected) if f"{p['first_name']} {p['last_name']}" == old]
            if len(at) != 1:
                return [f"{old} is not on it once"]
            expected[at[0]] = {"first_name": first, "last_name": last, "dob": dob}
        key = lambda ps: [(p["first_name"], p["last_name"], p["dob"]) for p in ps]  # noqa: E731
        return [] if key(expected) == key(args["passengers"]) else ["not its passengers with the named one replaced"]
    if name == "update_reservation_flights":
        mine = [(s["flight_number"], s["date"]) for s in booking["flights"]]
        new = [(f["flight_number"], f["date"]) for f in args["flights"]]
        same = re.search(r"to (basic economy|economy|business) on the same flights", clause)
        if same:
            ok = new == mine and args["cabin"] == CABINS[same[1]] != booking["cabin"]
            return [] if ok else ["not its own flights in the named cabin"]
        faults = ["basic economy flights cannot change"] if booking["cabin"] == "basic_economy" else []
        for origin, destination, date, departure, number, *_ in FLIGHT.findall(clause):
            held = [n for n in _fitting(db, origin, destination, date, departure) if (n, date) in mine
                    and (not number or n == number)]
            faults += [] if held else [f"does not hold the {origin}-{destination} flight at {departure}"]
        route = lambda legs: [(db["flights"][n]["origin"], db["flights"][n]["destination"]) for n, _ in legs]  # noqa: E731
        return faults + ([] if route(new) == route(mine) else ["another route"])
    return []


def ambiguity_findings(tasks: list[dict[str, Any]], db: dict[str, Any]) -> tuple[list[str], int]:
    """(findings, readings checked) of class a."""
    out, checked = [], 0
    for task in (t for t in tasks if t["t2t"]["condition"] == "ambiguous"):
        readings = task["t2t"].get("readings") or []
        if len(readings) < 2 or sum(r["target"] for r in readings) != 1:
            out.append(f"{task['id']}: {len(readings)} reading(s)")
            continue
        if len({json.dumps(r["action"]["arguments"], sort_keys=True) for r in readings}) != len(readings):
            out.append(f"{task['id']}: two readings make the same write")
        clauses = [c for c in re.split(r"; then |\. Then, you want to |^You want to ",
                                       _instructions(task)["reason_for_call"]) if "one of your" in c]
        if len(clauses) != 1:
            out.append(f"{task['id']}: {len(clauses)} clauses leave something open")
            continue
        state = copy.deepcopy(db)
        for action in task["evaluation_criteria"]["actions"][:readings[0]["action_index"]]:
            _apply(state, action)
        for reading in readings:
            checked += 1
            out += [f"{task['id']} reading {reading['candidate']}: {f}"
                    for f in _reading_faults(state, _user_id(task), clauses[0], reading)]
    return out, checked


def compensation_findings(tasks: list[dict[str, Any]], db: dict[str, Any]) -> tuple[list[str], int]:
    """(findings, refused compensations checked) of class b: refused where a certificate is due."""
    out, checked = [], 0
    for task in (t for t in tasks if t["t2t"]["condition"] == "infeasible"):
        if "travel certificate" not in _instructions(task)["reason_for_call"]:
            continue
        checked += 1
        user = db["users"][_user_id(task)]
        for rid in user["reservations"]:
            booking = db["reservations"][rid]
            eligible = user["membership"] in ("silver", "gold") or booking["insurance"] == "yes" \
                or booking["cabin"] == "business"
            if eligible and _airline_cancelled(db, booking):
                out.append(f"{task['id']}: {rid} is due {100 * len(booking['passengers'])}, yet all is refused")
    return out, checked


def flight_word_findings(tasks: list[dict[str, Any]], db: dict[str, Any]) -> tuple[list[str], int]:
    """(findings, flights named) of class c."""
    out, checked = [], 0
    for task in tasks:
        for origin, destination, date, departure, number, later, later_number, later_date in \
                FLIGHT.findall(_user_text(task)):
            for time, num, day in ((departure, number, date), (later, later_number, later_date or date)):
                if not time:
                    continue
                checked += 1
                fits = [n for n in _fitting(db, origin, destination, day, time) if not num or n == num]
                if len(fits) != 1:
                    out.append(f"{task['id']}: the {origin}-{destination} flight on {day} at {time} fits {fits}")
        if task["t2t"]["condition"] == "changing":
            revised = re.search(r"instead, you want to (.*?)(?:\.$|\. [A-Z])", _instructions(task)["task_instructions"])
            if revised and revised[1].strip() in _instructions(task)["reason_for_call"]:
                out.append(f"{task['id']}: the revised request reads like the first")
    return out, checked


def coherence_findings(tasks: list[dict[str, Any]], db: dict[str, Any]) -> tuple[list[str], int]:
    """(findings, amounts checked) of class d."""
    out, checked = [], 0
    for task in tasks:
        state = copy.deepcopy(db)
        for action in task["evaluation_criteria"]["actions"] or []:
            people = action["arguments"].get("passengers")
            if isinstance(people, list):
                names = [(p["first_name"], p["last_name"]) for p in people]
                if len(set(names)) != len(names):
                    out.append(f"{task['id']}: {action['name']} names a passenger twice")
            if action["name"] == "book_reservation":
                # a person is a name and a birth date (two users may each travel with a "Mia Li")
                people = {(p["first_name"], p["last_name"], p["dob"]) for p in action["arguments"]["passengers"]}
                legs = {(f["flight_number"], f["date"]) for f in action["arguments"]["flights"]}
                for booking in state["reservations"].values():
                    if booking.get("status") != "cancelled" and people & {
                            (p["first_name"], p["last_name"], p["dob"]) for p in booking["passengers"]} \
                            and legs & {(s["flight_number"], s["date"]) for s in booking["flights"]}:
                        out.append(f"{task['id']}: books a passenger {booking['reservation_id']} already flies")
            _apply(state, action)
        values = task["evaluation_criteria"].get("communicate_info") or []
        checked += len(values)
        questions = _questions(task)
        if len(questions) != len(values) or len(set(questions)) != len(questions):
            out.append(f"{task['id']}: {len(questions)} question(s) for {len(values)} amount(s)")
        if task["t2t"]["condition"] != "changing":
            written = [a["arguments"]["reservation_id"] for a in _writes(task) if a["name"] in RESERVATION_WRITES]
            if len(set(written)) != len(written):
                out.append(f"{task['id']}: a reservation written twice")
    return out, checked


def seam_findings(tasks: list[dict[str, Any]], db: dict[str, Any]) -> tuple[list[str], int]:
    """(findings, tasks read) of class e."""
    out = []
    for task in tasks:
        text, ins = _user_text(task), _instructions(task)
        if "bag(s)" in text:
            out.append(f"{task['id']}: 'bag(s)'")
        for sentence in re.split(r"(?<=\.) ", text):
            people = sorted(set(PERSON.findall(sentence)))
            if any(n > 1 for n in Counter((last, dob) for _, last, dob in people).values()):
                out.append(f"{task['id']}: relatives share a birth date")
        if re.search(r"in all on [^.]*instead of \d+, paying", text):
            out.append(f"{task['id']}: a fee for removing bags")
        for value in task["evaluation_criteria"].get("communicate_info") or []:
            if re.search(rf"(?<![\w.:-]){re.escape(value)}(?![\w:-]|\.\d)", text):
                out.append(f"{task['id']}: the amount {value} is in the user's own words")
        if task["t2t"]["condition"] == "changing":
            revised = (re.search(r"instead, you want to (.*)", ins["task_instructions"]) or [None, ""])[1]
            ids = set(re.findall(r"\b[A-Z0-9]{6}\b", revised))
            for question in _questions(task):
                named = re.findall(r"\d\d:\d\d|basic economy|business|economy|\d+ checked bag|\b[A-Z0-9]{6}\b", question)
                if [x for x in named if (x in revised or x in ids) and x not in ins["reason_for_call"]]:
                    out.append(f"{task['id']}: a price question names the revised goal")
    return out, len(tasks)


# ---------------------------------------------------------------- tests


def test_ambiguous_readings_fit_the_words_and_the_policy(exported):
    tasks, db = exported
    findings, checked = ambiguity_findings(tasks, db)
    assert checked >= 20, f"too few readings to judge: {checked}"
    assert findings == []


def test_compensation_is_refused_only_where_none_is_due(exported):
    tasks, db = exported
    findings, checked = compensation_findings(tasks, db)
    assert findings == []
    # where refusing is right, compensation tasks are still made (the rule has not been dropped)
    assert checked >= 1


def test_named_flights_fit_one_flight_and_revisions_read_differently(exported):
    tasks, db = exported
    findings, checked = flight_word_findings(tasks, db)
    assert checked >= 10
    assert findings == []


def test_no_double_booking_and_one_question_per_amount(exported):
    tasks, db = exported
    findings, checked = coherence_findings(tasks, db)
    assert checked >= 10
    assert findings == []


def test_no_seams(exported):
    tasks, db = exported
    findings, read = seam_findings(tasks, db)
    assert read >= 60
    assert findings == []


def test_every_condition_is_made(exported):
    tasks, _ = exported
    made = Counter(t["t2t"]["condition"] for t in tasks)
    assert all(made[c] >= 10 for c in ("general", "ambiguous", "changing", "infeasible")), made


def test_the_checkers_see_planted_faults(exported):
    """Each checker flags a fault planted into an exported task: the checks can fail."""
    tasks, db = exported
    planted = copy.deepcopy(tasks)
    ambiguous = next(t for t in planted if t["t2t"]["condition"] == "ambiguous"
                     and t["t2t"]["readings"][0]["action"]["arguments"].get("reservation_id"))
    # the old proof's reading: the gold write with only the reservation id swapped for another of the user's
    target = next(r for r in ambiguous["t2t"]["readings"] if r["target"])
    others = [rid for rid in db["users"][_user_id(ambiguous)]["reservations"]
              if db["reservations"][rid]["user_id"] == _user_id(ambiguous)
              and (db["reservations"][rid].get("status") == "cancelled" or _flown(db, db["reservations"][rid]))]
    if others:
        ambiguous["t2t"]["readings"].append({**target, "target": False, "candidate": others[0], "action": {
            **target["action"], "arguments": {**target["action"]["arguments"], "reservation_id": others[0]}}})
        assert ambiguity_findings([ambiguous], db)[0]
    ambiguous["t2t"]["readings"] = ambiguous["t2t"]["readings"][:1]
    assert ambiguity_findings([ambiguous], db)[0]

    due = next(((uid, u) for uid, u in db["users"].items() for rid in u["reservations"]
                if _airline_cancelled(db, db["reservations"][rid]) and (u["membership"] != "regular"
                                                                       or db["reservations"][rid]["cabin"] == "business")),
               None)
    assert due is not None
    infeasible = copy.deepcopy(next(t for t in planted if t["t2t"]["condition"] == "infeasible"))
    infeasible["user_scenario"]["instructions"].update(
        known_info=f"Your user id is {due[0]}.",
        reason_for_call="You want to be compensated with a travel certificate.")
    assert compensation_findings([infeasible], db)[0]

    pairs = Counter((f["origin"], f["destination"], f["scheduled_departure_time_est"][:5])
                    for f in db["flights"].values())
    twin = next(((o, d, t) for (o, d, t), n in pairs.items() if n > 1), None)
    general = copy.deepcopy(next(t for t in planted if t["t2t"]["condition"] == "general"))
    if twin is not None:
        date = next(iter(next(f for f in db["flights"].values()
                              if (f["origin"], f["destination"], f["scheduled_departure_time_est"][:5]) == twin)
                         ["dates"]))
        general["user_scenario"]["instructions"]["reason_for_call"] += \
            f" Then, you want to fly the {twin[0]}-{twin[1]} flight on {date} departing at {twin[2]}."
        assert flight_word_findings([general], db)[0]
    general["user_scenario"]["instructions"]["reason_for_call"] += " You want 1 checked bag(s)."
    assert seam_findings([general], db)[0]

    told = copy.deepcopy(next(t for t in planted if t["evaluation_criteria"].get("communicate_info")))
    told["user_scenario"]["instructions"]["reason_for_call"] += \
        f" It costs {told['evaluation_criteria']['communicate_info'][0]} dollars."
    assert seam_findings([told], db)[0]
    told["evaluation_criteria"]["communicate_info"].append("12345")
    assert coherence_findings([told], db)[0]
