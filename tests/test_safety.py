"""The safety net: every red-flag sign of SPEC.md, however a patient writes it, is caught;
ordinary messages are not. Then the same through the real bot: the patient gets the clinic's
contact (and the emergency line), the clinic's staff get the patient's own words."""

from __future__ import annotations

import tomllib
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from bot.offline.harness import Harness
from messages import safety
from messages.render import available_languages, catalog
from scheduler.clock import FakeClock
from scheduler.models import InboxKind, InboxMessage
from tests.e2e import command
from tests.patient_flows import booked_patient, messages_of, with_nurse
from tests.test_checkins import to_checkin

# (what a patient types, the signs it must raise at least). 60 phrasings, every sign of
# SPEC.md several times, with typos, capitals, digits and odd spacing.
RED_FLAGS: list[tuple[str, set[str]]] = [
    ("I have a fever and pus on my scalp", {"fever", "pus"}),
    ("I can't breathe", {"breathing"}),
    ("i cant breath", {"breathing"}),
    ("I have trouble breathing", {"breathing"}),
    ("It's hard to breathe since this morning", {"breathing"}),
    ("short of breath after the injections", {"breathing"}),
    ("shortness of breath", {"breathing"}),
    ("My throat feels like it is closing", {"breathing"}),
    ("my lips are swollen", {"breathing"}),
    ("wheezing a lot", {"breathing"}),
    ("difficulty breathing", {"breathing"}),
    ("Breathing is difficult", {"breathing"}),
    ("I CANNOT BREATHE PROPERLY", {"breathing"}),
    ("I fainted after the shower", {"collapse"}),
    ("chest pain since last night", {"collapse"}),
    ("I think I have a fever", {"fever"}),
    ("feverrr", {"fever"}),
    ("fevre and chills", {"fever"}),
    ("my temperature is 38.5", {"fever"}),
    ("temp 39", {"fever"}),
    ("I have a high temperature", {"fever"}),
    ("38 degrees today", {"fever"}),
    ("my temperature is ۳۹", {"fever"}),  # Persian digits
    ("I'm shivering and feel awful", {"fever"}),
    ("there is pus coming out", {"pus"}),
    ("puss on the injection spots", {"pus"}),
    ("something yellow is oozing from a bump", {"pus"}),
    ("a yellow crust on my scalp", {"pus"}),
    ("I think it's infected", {"pus"}),
    ("discharge from the scalp", {"pus"}),
    ("I have hives", {"hives"}),
    ("itchy bumps all over my neck", {"hives"}),
    ("a rash on my forehead", {"hives"}),
    ("welts on my arms", {"hives"}),
    ("I think I'm having an allergic reaction", {"hives"}),
    ("my scalp feels hot", {"warmth"}),
    ("the area is warm to the touch", {"warmth"}),
    ("my head is burning", {"warmth"}),
    ("hot to the touch", {"warmth"}),
    ("the skin there feels warm", {"warmth"}),
    ("the redness is spreading", {"spreading_redness"}),
    ("Redness   SPREADING down to my forehead", {"spreading_redness"}),
    ("the red patch is getting bigger", {"spreading_redness"}),
    ("red streaks going down my neck", {"spreading_redness"}),
    ("it's redder than yesterday", {"spreading_redness"}),
    ("the pain is getting worse", {"worse_pain"}),
    ("pain worse today than yesterday", {"worse_pain"}),
    ("it hurts more every day", {"worse_pain"}),
    ("severe pain on day 4", {"worse_pain"}),
    ("the ache is increasing", {"worse_pain"}),
    ("unbearable pain", {"worse_pain"}),
    ("my scalp is more painful now", {"worse_pain"}),
    ("the swelling got worse", {"worse_swelling"}),
    ("swelling is getting bigger", {"worse_swelling"}),
    ("my forehead is more swollen today", {"worse_swelling"}),
    ("swelling spreading to my eyes", {"worse_swelling"}),
    ("my face is swollen", {"worse_swelling"}),
    ("The swelling has increased.", {"worse_swelling"}),
    ("pain and swelling worse, and a fever of 38", {"worse_pain", "worse_swelling", "fever"}),
    ("pus + fever!!!", {"pus", "fever"}),
]

HARMLESS = [
    "When can I wash my hair?",
    "Thank you!",
    "Can I go to the gym tomorrow?",
    "What time is my session?",
    "I'd like to move my appointment to Friday",
    "Is it OK to drink coffee?",
    "My scalp feels fine today",
    "Everything is good, thanks",
    "Where is the clinic?",
    "How many sessions will I need?",
    "Can I colour my hair next week?",
    "ok",
    "Hello",
    "see you on Thursday",
    "Can I take paracetamol for a headache?",
    "My hair looks great",
    "I forgot to ask about the price",
    "Do I need to bring anything?",
    "Is parking available near the clinic?",
    "Can my sister come with me?",
    "a little itchy but fine",
    "👍",
]


def test_the_red_flag_table_has_every_sign_and_enough_phrasings() -> None:
    assert len(RED_FLAGS) >= 40 and len(HARMLESS) >= 20
    covered = set().union(*(signs for _, signs in RED_FLAGS))
    assert covered == set(safety.SIGNS)


@pytest.mark.parametrize(("text", "signs"), RED_FLAGS)
def test_every_red_flag_phrasing_is_caught(text: str, signs: set[str]) -> None:
    assert signs <= set(safety.red_flags(text))


@pytest.mark.parametrize("text", HARMLESS)
def test_an_ordinary_message_does_not_alarm(text: str) -> None:
    assert safety.red_flags(text) == []


SIGNS_DIR = Path(__file__).parent / "signs"
PHRASES = {path.stem: tomllib.loads(path.read_text("utf-8")) for path in SIGNS_DIR.glob("*.toml")}


def test_every_other_language_has_a_table_of_phrasings() -> None:
    assert set(PHRASES) == set(available_languages()) - {"en"}
    for lang, table in PHRASES.items():
        covered = set().union(*(set(red["signs"]) for red in table["red"]))
        assert covered == set(safety.SIGNS), lang
        assert len(table["red"]) >= 40 and len(table["harmless"]) >= 20, lang


@pytest.mark.parametrize("lang", sorted(PHRASES))
def test_their_own_words_are_caught_and_ordinary_ones_are_not(lang: str) -> None:
    """As the bot runs: every language's rules on every message."""
    table = PHRASES[lang]
    missed = [
        (red["text"], sorted(set(red["signs"]) - set(safety.red_flags(red["text"]))))
        for red in table["red"]
        if not set(red["signs"]) <= set(safety.red_flags(red["text"]))
    ]
    alarmed = [
        (text, safety.red_flags(text)) for text in table["harmless"] if safety.red_flags(text)
    ]
    assert missed == [] and alarmed == []
    for text in table.get("false_alarms", []):  # accepted, and known: they still alarm
        assert safety.red_flags(text), text


def test_every_language_has_readable_sign_rules() -> None:
    for lang in available_languages():
        texts = catalog(lang)
        for sign in safety.SIGNS:
            rules = safety.rules_of(texts.raw(f"signs.{sign}"))
            assert rules, (lang, sign)


def test_normalising_keeps_words_and_digits_of_every_script() -> None:
    assert safety.normalise("Feverrr,   PUS!! ۳۹") == ["fever", "pus", "39"]
    assert safety.normalise("പനി ഉണ്ട്") == ["പനി", "ഉണ്ട്"]
    assert safety.normalise("\x00\u200b") == []


STAFF = 7001


async def test_a_red_flag_in_free_text_reaches_staff_with_the_patients_words(
    db_url: str, clock: FakeClock
) -> None:
    async with with_nurse(db_url, clock, STAFF) as (h, nurse):
        before = nurse.sent_count
        anna = await booked_patient(h, 7002, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
        answer = (await command(h, anna, "I have a fever and pus on my scalp")).text
        breathing = (await command(h, anna, "I can't breathe")).text
        notices = [m.text for m in nurse.inbox[before:]]
        assert h.services is not None
        async with h.services.sessions() as db:
            stored = (await db.exec(select(InboxMessage))).all()
        rows = [r for r in await messages_of(h, anna) if r.chat_id == STAFF]

    assert answer.startswith("Please contact the clinic now.")
    assert "Phone: +44 1" in answer and "Address: 1 Test Street" in answer
    assert "emergency services now: 112" in answer
    # Breathing: the emergency line first.
    assert breathing.startswith("If you have difficulty breathing")
    assert "112" in breathing.splitlines()[0] and "Phone: +44 1" in breathing
    assert len(notices) == 2
    assert "red flag" in notices[0] and "fever" in notices[0] and "pus" in notices[0]
    assert "“I have a fever and pus on my scalp”" in notices[0]
    assert "difficulty breathing" in notices[1] and "“I can't breathe”" in notices[1]
    assert [m.kind for m in stored] == [InboxKind.RED_FLAG, InboxKind.RED_FLAG]
    assert [r.state for r in rows] == ["sent", "sent"]


async def test_something_else_with_a_red_flag_alerts_and_points_to_emergency_services(
    db_url: str, clock: FakeClock
) -> None:
    async with with_nurse(db_url, clock, STAFF) as (h, nurse):
        anna = await booked_patient(h, 7003, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
        message, row_id = await to_checkin(h, anna, "after-24h")
        before = nurse.sent_count
        anna.press(message.message_id, f"ci:{row_id}:other")
        await h.settle()
        answer = (await command(h, anna, "I have trouble breathing")).text
        notices = [m.text for m in nurse.inbox[before:]]

    assert answer.startswith("If you have difficulty breathing")
    assert len(notices) == 1 and "“I have trouble breathing”" in notices[0]


async def test_someone_who_never_set_up_still_gets_the_way_to_help(h: Harness) -> None:
    stranger = h.patient(7004, "Sam")
    answer = (await command(h, stranger, "help my face is swollen and I cant breath")).text
    plain = (await command(h, stranger, "hello")).text

    assert answer.startswith("If you have difficulty breathing") and "112" in answer
    assert "Test Clinic" in answer
    assert plain.startswith("Please send /start first")


async def test_a_red_flag_in_a_photos_caption_is_read_as_the_patients_words(
    db_url: str, clock: FakeClock
) -> None:
    """A photo of the scalp captioned "pus and fever": the clinic's contact at once and the
    staff alerted with the words. A caption with no red flag is read as any message, and
    the patient told that the photo itself went nowhere; a photo with no caption is still
    asked to be put in words."""
    async with with_nurse(db_url, clock, STAFF) as (h, nurse):
        anna = await booked_patient(h, 7005, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
        before, notices_before = len(anna.inbox), nurse.sent_count
        anna.send_photo("there is pus and I have a fever")
        await h.settle()
        answers = [m.text for m in anna.inbox[before:]]
        notices = [m.text for m in nurse.inbox[notices_before:]]
        before = len(anna.inbox)
        anna.send_photo("is this normal?")
        await h.settle()
        plain = [m.text for m in anna.inbox[before:]]
        before = len(anna.inbox)
        anna.send_photo()
        await h.settle()
        bare = [m.text for m in anna.inbox[before:]]

    assert len(answers) == 1
    assert answers[0].startswith("Please contact the clinic now.")
    assert "Phone: +44 1" in answers[0]
    assert len(notices) == 1 and "“there is pus and I have a fever”" in notices[0]
    assert len(plain) == 2 and plain[0].startswith("I am the clinic's reminder assistant")
    assert plain[1] == "I read only the words: I cannot pass on photos or files."
    assert bare == [catalog("en").text("chat.not_text")]


async def test_the_answer_to_a_red_flag_survives_a_telegram_error(
    db_url: str, clock: FakeClock
) -> None:
    """Telegram answers 502 to the next two sends: the patient's answer and the clinic's
    notice are rows, retried like any message, and each arrives once."""
    async with with_nurse(db_url, clock, STAFF) as (h, nurse):
        anna = await booked_patient(h, 7006, "Anna", "3 Dec 14:30", "2026-12-03T14:30")
        before, notices_before = len(anna.inbox), nurse.sent_count
        h.api.fail_next("sendMessage", count=2, error_code=502, description="Bad Gateway")
        anna.send("I have a fever and pus on my scalp")
        await h.settle()
        for _ in range(3):
            await h.advance_to(h.clock.now() + timedelta(seconds=30))
        answers = [m.text for m in anna.inbox[before:]]
        notices = [m.text for m in nurse.inbox[notices_before:]]

    assert len(answers) == 1 and answers[0].startswith("Please contact the clinic now.")
    assert len(notices) == 1 and "“I have a fever and pus on my scalp”" in notices[0]
