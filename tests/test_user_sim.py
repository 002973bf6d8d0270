"""The simulated user: the scripted offline baseline plays each condition of a scenario, and
the LM program (UserSimulator) runs through dspy with what it was sent inspectable."""

from __future__ import annotations

import dspy
import pytest
from dspy.utils import DummyLM

from trajectory2task.domains import get_domain
from trajectory2task.programs.loop.user_sim import (
    LMTurnError,
    LMUser,
    ScriptedUser,
    ScriptedUserSettings,
    UserSimulator,
    first_person,
    identity_cues,
)
from trajectory2task.signatures.conversation import STOP_SIGNAL, ConversationTurn
from trajectory2task.signatures.models import UserScenario

RETAIL = get_domain("retail")


def talk(session, *agent_lines: str) -> list[str]:
    """Open, then answer each agent line; returns every user message in order."""
    conversation: list[ConversationTurn] = []
    said = []
    reply = session.reply(conversation)
    said.append(reply.text)
    conversation.append(ConversationTurn(role="user", content=reply.text))
    for line in agent_lines:
        conversation.append(ConversationTurn(role="agent", content=line))
        reply = session.reply(conversation)
        said.append(reply.text)
        conversation.append(ConversationTurn(role="user", content=reply.text))
    return said


AMBIGUOUS = UserScenario(
    reason_for_call="You want to exchange the keyboard you bought.",
    known_info="You are Mia Li, zip code 10001.",
    withheld_info=["The keyboard is in order #W1234567.", "You want the clicky-switch variant."])


def test_first_person_rewrites_scenario_prose():
    assert first_person("You want to return your lamp; you're in a hurry.") == \
        "I want to return my lamp; I'm in a hurry."
    assert first_person("You are Mia Li.") == "I am Mia Li."


def test_scripted_user_opens_with_the_reason_and_withholds_details():
    opening = ScriptedUser(RETAIL.tools).session(AMBIGUOUS).reply([])
    assert opening.text == "I want to exchange the keyboard I bought."
    assert not opening.stop
    assert "#W1234567" not in opening.text and "clicky" not in opening.text


def test_withheld_details_only_come_when_asked_one_per_question():
    said = talk(ScriptedUser(RETAIL.tools).session(AMBIGUOUS),
                "Could you tell me your name and zip code?",
                "Thanks, I found your account.",  # a statement, no question: nothing revealed
                "Which order is the keyboard in?",
                "Which variant would you like?")
    assert said[1] == "I am Mia Li, zip code 10001."
    assert "#W1234567" not in said[2] and "clicky" not in said[2]
    assert said[3] == "The keyboard is in order #W1234567."
    assert said[4] == "I want the clicky-switch variant."


def test_changing_user_revises_at_the_confirmation_point_not_before():
    scenario = UserScenario(reason_for_call="You want to cancel order #W1.", known_info="Your email is a@b.c.",
                            change_trigger="when the agent asks you to confirm the cancellation",
                            revised_request="You changed your mind: cancel order #W2 instead.")
    said = talk(ScriptedUser(RETAIL.tools).session(scenario),
                "What is your email address?",
                "Order #W1 is pending with 2 items.",
                "I will cancel #W1. Do you confirm (yes/no)?",
                "I will cancel #W2. Do you confirm (yes/no)?")
    assert "#W2" not in " ".join(said[:3])
    assert said[3] == "I changed my mind: cancel order #W2 instead."
    assert said[4] == "Yes, please go ahead."


def test_changing_user_with_a_details_trigger_revises_when_details_are_shown():
    scenario = UserScenario(reason_for_call="You want to return the lamp.", known_info="Your email is a@b.c.",
                            change_trigger="after the agent lists the order details",
                            revised_request="You would rather exchange it.")
    said = talk(ScriptedUser(RETAIL.tools).session(scenario), "What is your email?", "Your order has a lamp and a desk.")
    assert said[1] == "My email is a@b.c."
    assert said[2] == "I would rather exchange it."


def test_infeasible_user_insists_within_its_limit_then_stops():
    scenario = UserScenario(reason_for_call="You want to cancel a delivered order.")
    session = ScriptedUser(RETAIL.tools, ScriptedUserSettings(max_insist=2)).session(scenario)
    said = talk(session, "Sorry, I cannot cancel a delivered order.", "I'm afraid that is not possible.",
                "Unfortunately our policy does not allow it.")
    assert STOP_SIGNAL not in said[1] and STOP_SIGNAL not in said[2]
    assert said[1] == said[2] == "I really need this done. Is there no way at all?"
    assert said[3].endswith(STOP_SIGNAL)


@pytest.mark.parametrize("agent_line", ["Your order has been cancelled.", "Is there anything else I can do?",
                                        "I am transferring you to a human agent."])
def test_the_user_ends_with_the_stop_signal(agent_line):
    session = ScriptedUser(RETAIL.tools).session(UserScenario(reason_for_call="You want to cancel order #W1."))
    session.reply([])
    reply = session.reply([ConversationTurn(role="user", content="x"), ConversationTurn(role="agent",
                                                                                        content=agent_line)])
    assert reply.stop and STOP_SIGNAL in reply.text


def test_an_unproductive_conversation_stops_after_max_idle_turns():
    session = ScriptedUser(RETAIL.tools, ScriptedUserSettings(max_idle=2)).session(UserScenario(reason_for_call="Help."))
    said = talk(session, "Hmm.", "Let me see.")
    assert not said[1].endswith(STOP_SIGNAL)
    assert said[2].endswith(STOP_SIGNAL)


# ============================================================================ LM program


def test_user_simulator_sends_scenario_and_spoken_turns_and_detects_stop():
    lm = DummyLM([{"message": "Hi, I want to exchange my keyboard."}, {"message": f"Thanks! {STOP_SIGNAL}"}])
    user = LMUser(lm, name="dummy")
    session = user.session(AMBIGUOUS)
    first = session.reply([])
    assert first.text == "Hi, I want to exchange my keyboard." and not first.stop
    last = session.reply([ConversationTurn(role="user", content=first.text),
                          ConversationTurn(role="agent", content="Done, anything else?")])
    assert last.stop
    sent = [m["content"] for entry in session.lm.history for m in entry["messages"]]
    assert any("#W1234567" in text for text in sent)  # the scenario (its withheld details too) is the user's
    assert any("Done, anything else?" in text for text in sent)
    assert lm.history == []  # each session calls its own copy of the LM


def test_user_simulator_lm_failure_is_an_lm_turn_error():
    from trajectory2task.programs.lm.build import build_lm
    from trajectory2task.programs.lm.config import LMSettings
    from tests.llm_server import Fault, ScriptedLLMServer

    with ScriptedLLMServer(replies=[Fault(400)]) as server:
        lm = build_lm(LMSettings(model="openai/gpt-4o-mini", api_base=server.base_url, num_retries=0))
        session = LMUser(lm).session(AMBIGUOUS)
        with pytest.raises(LMTurnError, match="user simulator"):
            session.reply([])


def test_user_simulator_is_a_dspy_program_with_a_tunable_instruction():
    program = UserSimulator()
    assert [name for name, _ in program.named_predictors()] == ["respond"]
    program.respond.signature = program.respond.signature.with_instructions("Be terse.")
    lm = DummyLM([{"message": "Hello."}])
    with dspy.context(lm=lm):
        program(scenario=AMBIGUOUS, conversation=[])
    assert "Be terse." in lm.history[-1]["messages"][0]["content"]


def test_identity_cues_come_from_the_domains_authenticating_tools():
    retail = identity_cues(RETAIL.tools)
    assert {"email", "first name", "last name", "zip", "your name"} <= set(retail)
    airline = identity_cues(get_domain("airline").tools)
    assert "user id" in airline and "email" not in airline and "zip" not in airline
    # a domain with no authenticating tool is asked who the user is in general words only
    assert "email" not in identity_cues(t for t in RETAIL.tools if t.authenticates is None)


def test_the_scripted_user_answers_an_identity_question_in_its_domains_words():
    scenario = UserScenario(reason_for_call="You want to change a flight.", known_info="Your user id is mia_li_1.")
    airline = ScriptedUser(get_domain("airline").tools)
    assert talk(airline.session(scenario), "What is your user id?")[1] == "My user id is mia_li_1."
    # the retail words are not airline's: asked for an email, this user has no identity to give
    said = talk(airline.session(scenario), "What is your email?")[1]
    assert "mia_li_1" not in said
