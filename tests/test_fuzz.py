"""Thousands of random updates through the real Application and the sandbox.

Random and huge texts (emoji, right-to-left, control characters, up to 4096 characters),
symptom-like texts (the red-flag phrasings of tests/test_safety.py, in random company),
random commands with random arguments, real button presses, stale and forged callback data
(including data naming another patient's session, message or inbox entry), edited messages,
messages in groups and channels, and updates of kinds the bot never asked for. Afterwards:
no handler raised, every private message got an answer (an edit only when the conversation
waits for typed text, or names a red flag; groups are ignored), every callback query was
answered, every red-flag phrasing of a consenting patient reached the clinic's nurse with
the patient's own words, and no row of another patient changed.

The seed is random unless AFTERCARE_FUZZ_SEED is set; a failure prints it. The number of
updates is AFTERCARE_FUZZ_UPDATES (default 1000 on each database, about 20-30 s each: the
suite keeps to its ten minutes on a slow day; set it higher for a longer hunt).
"""

from __future__ import annotations

import logging
import os
import random
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import SQLModel, select

from bot.handlers.chat import EDITABLE
from bot.offline.harness import Harness
from bot.offline.sandbox import SandboxUser
from messages import safety
from scheduler.clock import FakeClock
from scheduler.conversation import state_of
from scheduler.models import CheckIn, Patient, PlannedMessage, TreatmentSession
from tests.e2e import onboard, press, run_timeline, say
from tests.patient_flows import booked_patient, bot, forge_press
from tests.test_safety import RED_FLAGS

COMMANDS = (
    "start", "help", "book", "prep", "reminders", "sessions", "aftercare", "settings", "pause",
    "resume", "privacy", "delete", "alerts", "patients", "broadcast", "foo", "Start", "b",
    "start@aftercare_sandbox_bot", "help@other_bot",
)  # fmt: skip
WORDS = (
    "3 Dec 14:30", "tomorrow 10am", "today at 11", "I had it yesterday at 9", "2026-12-03 14:30",
    "31 Dec 9999 23:30", "0001-01-01 00:00", "2026-02-30 10:00", "25:99", "noon", "Europe/Paris",
    "Asia/Tehran", "../../etc/passwd", "Etc/GMT+5", "UTC", "America/Argentina/Buenos_Aires",
    "22:00-08:00", "23-6", "25-99", "-", "1-2-3", "yes", "no", "/", "@", "<b>bold</b>", "&amp;",
    "<script>", "{name}", "{0}", "%s%s%s", "\\", "' OR 1=1 --", "NaN", "-1", "99999999999999999",
)  # fmt: skip
ALPHABETS = (
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,:;-/!?",
    "سلام خوبی؟ ۱۲۳۴ مرحبا",  # Persian / Arabic
    "שלום עולם",  # Hebrew
    "\u200f\u200e\u202e\u202d\u2066\u2069",  # direction marks and overrides
    "😀💉🧴👩🏽‍⚕️🇬🇧🏳️‍🌈",  # emoji, ZWJ sequences, flags
    "\x00\x01\x02\x07\x08\x0b\x0c\x1b\x7f\u0085\u2028\u2029\ufeff\u200b",  # controls
    "മലയാളം ക്ഷ് ത്ര",  # Malayalam
    "e\u0301\u0308\u0338Z\u0336",  # combining marks
    "\U0001d54f\U00010348\U0001f9ea",  # astral plane
)  # fmt: skip
NAMES = ("Anna", "Ђорђе", "محمد", "<b>Eve</b>", "😀", "Zoë & co", "א", "O'Brien")
CALLBACK_PREFIXES = (
    "consent:yes", "consent:no", "consent:maybe", "tz:keep", "tz:set:Europe/Paris",
    "tz:set:Bad/Zone", "tz:type", "scr:pregnant_or_breastfeeding:yes", "scr:tumour_history:na",
    "scr:confirm:keep", "scr:confirm:maybe", "scr:-1:y", "scr:99:n", "scr:x", "scr:a:b:c",
    "scr:menstruating_on_session_date:maybe", "msg:write", "msg:book", "msg:aftercare",
    "msg:help", "msg:zz", "msg:send:x", "msg:send:", "ib:r:1", "ib:h:1", "ib:x", "ib:r:x",
    "cal:2026-13", "cal:bad", "cal:9999-12", "cal:0001-01", "day:2026-02-30",
    "day:2026-12-03", "day:9999-12-31", "at:2026-12-03T14:30", "at:9999-12-31T23:30",
    "at:garbage", "ok:2026-12-04T11:00", "ok:2026-11-24T10:00", "ok:9999-12-31T23:30",
    "ok:bad", "chg", "noop", "rem:past", "rem:all", "set:lang", "set:lang:en", "set:lang:fa",
    "set:lang:../../x", "set:tz", "set:tz:type", "set:tz:Asia/Dubai", "set:tz:Mars/Base",
    "set:quiet", "set:q:none", "set:q:22:00-08:00", "set:q:type", "set:q:99:00-00:00",
    "del:no", "del:maybe", "", ":", "::::", "ci:", "ses:", "set:",
)  # fmt: skip


# (action, weight): what a random update does.
ACTIONS = (
    ("text", 18), ("symptom", 6), ("command", 22), ("press", 24), ("forge", 14),
    ("orphan", 4), ("edit", 4), ("group", 4), ("channel", 2), ("odd", 4), ("time", 2),
)  # fmt: skip
NURSE = 1999  # the clinic's staff chat, configured in the settings


@dataclass
class Fuzzer:
    h: Harness
    rng: random.Random
    users: list[SandboxUser]
    foreign_ids: list[int]  # ids of the bystander's sessions and messages
    nurse: SandboxUser
    my_messages: dict[int, list[int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    red_flags: int = 0

    async def patient(self, user: SandboxUser) -> Patient | None:
        assert self.h.services is not None
        async with self.h.services.sessions() as db:
            return (
                await db.exec(select(Patient).where(Patient.tg_user_id == user.user_id))
            ).first()

    async def consented(self, user: SandboxUser) -> bool:
        patient = await self.patient(user)
        return patient is not None and patient.consent_at is not None

    async def awaits_text(self, user: SandboxUser) -> bool:
        patient = await self.patient(user)
        if patient is None or patient.consent_at is None:
            return False
        state = state_of(patient)
        return isinstance(state, EDITABLE) and not state.lapsed(self.h.clock.now())

    def text(self) -> str:
        rng = self.rng
        kind = rng.random()
        if kind < 0.3:
            return rng.choice(WORDS)
        length = rng.choice((1, 2, 5, 20, 100, 500, 4096))
        alphabet = rng.choice(ALPHABETS) + (rng.choice(ALPHABETS) if rng.random() < 0.5 else "")
        text = "".join(rng.choice(alphabet) for _ in range(length))[:4096]
        return text if text.strip() else "x" + text[:4095]

    def callback_data(self) -> str:
        rng = self.rng
        ids = [*self.foreign_ids, rng.randint(-5, 50), rng.randint(0, 10**20)]
        kind = rng.random()
        if kind < 0.35:
            return rng.choice(CALLBACK_PREFIXES)
        if kind < 0.55:
            action = rng.choice(("mv", "cx", "cy", "cn", "zz", ""))
            return f"ses:{action}:{rng.choice(ids)}"
        if kind < 0.7:
            option = rng.choice(("all_good", "pain", "urgent", "other", "nope", ""))
            return f"ci:{rng.choice(ids)}:{option}"
        if kind < 0.8:
            return rng.choice(("msg:send:", "ib:r:", "ib:h:")) + str(rng.choice(ids))
        raw = "".join(rng.choice(rng.choice(ALPHABETS)) for _ in range(rng.randint(1, 40)))
        return raw.encode()[:64].decode(errors="ignore") or "x"

    async def step(self, index: int) -> None:
        rng, h = self.rng, self.h
        user = rng.choice(self.users)
        action = rng.choices(
            [name for name, _ in ACTIONS], weights=[weight for _, weight in ACTIONS]
        )[0]
        self.counts[action] = self.counts.get(action, 0) + 1
        before_sent = user.sent_count
        before_answers = len(user.answers)
        expect_reply = expect_answer = False
        if action == "text":
            self.my_messages.setdefault(user.user_id, []).append(user.send(self.text()))
            expect_reply = True
        elif action == "symptom":
            phrase, _ = rng.choice(RED_FLAGS)
            noise = self.text()[:40] if rng.random() < 0.3 else ""
            text = f"{phrase} {noise}".strip()
            consented = await self.consented(user)
            nurse_before = self.nurse.sent_count
            self.my_messages.setdefault(user.user_id, []).append(user.send(text))
            await h.settle()
            answer = user.last().text if user.sent_count > before_sent else ""
            # In any language the patient chose: the emergency number is in the answer.
            if h.settings.emergency_phone not in answer:
                self.failures.append(f"update {index}: a red flag got no way to help: {text!r}")
            told = [m.text for m in self.nurse.inbox[nurse_before:]]
            words = " ".join(phrase.split())  # as stored: runs of spaces as one
            if consented and not any(words in t for t in told):
                self.failures.append(f"update {index}: {text!r} did not reach the nurse")
            self.red_flags += 1
            return
        elif action == "command":
            command = "/" + rng.choice(COMMANDS)
            if rng.random() < 0.5:
                command += " " + self.text()[: rng.choice((5, 64, 300))]
            self.my_messages.setdefault(user.user_id, []).append(user.send(command[:4096]))
            expect_reply = True
        elif action == "press":
            buttons = [
                (m.message_id, data)
                for m in user.inbox[-6:]
                for row in m.buttons
                for _, data in row
                if data and not data.startswith("http")
            ]
            if not buttons:
                return
            message_id, data = rng.choice(buttons)
            user.press(message_id, data)
            expect_answer = True
        elif action == "forge":
            if not user.inbox:
                return
            forge_press(h, user, self.callback_data(), rng.choice(user.inbox))
            expect_answer = True
        elif action == "orphan":  # a query Telegram never issued, or without a message
            payload: dict[str, Any] = {
                "id": str(rng.randint(1, 10**12)),
                "from": user.user,
                "chat_instance": "1",
            }
            if rng.random() < 0.5:
                payload["data"] = self.callback_data()
            if rng.random() < 0.5:
                payload["inline_message_id"] = "AAAA"
            elif user.inbox:
                payload["message"] = h.api.message_json(rng.choice(user.inbox))
            h.api.enqueue("callback_query", payload)
        elif action == "edit":
            mine = self.my_messages.get(user.user_id)
            if not mine:
                return
            new_text = self.text()
            # An edit is answered only when typed text is awaited, or it names a red flag.
            expect_reply = bool(safety.red_flags(new_text)) or await self.awaits_text(user)
            user.edit(rng.choice(mine), new_text)
            await h.settle()
            if not expect_reply and user.sent_count != before_sent:
                self.failures.append(f"update {index} (edit): answered what must be ignored")
            return
        elif action == "group":
            group = h.api.group(-1000 - rng.randint(0, 2), "Clinic fans")
            text = self.text() if rng.random() < 0.6 else "/" + rng.choice(COMMANDS)
            before_group = group.sent_count
            group.send(user, text)
            await h.settle()
            if not text.startswith("/") and group.sent_count != before_group:
                self.failures.append(f"update {index}: the bot wrote into a group")
            return
        elif action == "time":  # the clock moves: reminders and check-ins arrive
            await h.advance(timedelta(minutes=rng.choice((5, 90, 600, 1500, 4000))))
            return
        elif action == "channel":
            h.api.channel_post(-100_200_300, self.text())
        else:  # a message without text, and other updates nobody scripted
            odd = rng.choice(("location", "contact", "member_group", "channel_edit"))
            if odd in ("location", "contact"):
                content: dict[str, Any] = (
                    {"location": {"latitude": 51.5, "longitude": -0.12}}
                    if odd == "location"
                    else {"contact": {"phone_number": "+1", "first_name": "X"}}
                )
                user.started = True  # writing opens the chat, as user.send does
                h.api.enqueue(
                    "message",
                    {
                        "message_id": 10**6 + index,
                        "date": 0,
                        "chat": user.info,
                        "from": user.user,
                        **content,
                    },
                )
                expect_reply = True
            elif odd == "member_group":
                h.api.enqueue(
                    "my_chat_member",
                    {
                        "chat": {"id": -1009, "type": "group", "title": "G"},
                        "from": user.user,
                        "date": 0,
                        "old_chat_member": {"status": "member", "user": h.api.bot_user},
                        "new_chat_member": {"status": "left", "user": h.api.bot_user},
                    },
                )
            else:
                h.api.enqueue(
                    "edited_channel_post",
                    {
                        "message_id": 1,
                        "date": 0,
                        "edit_date": 0,
                        "chat": {"id": -100_200_300, "type": "channel", "title": "C"},
                        "text": self.text(),
                    },
                )
        await h.settle()
        if expect_reply and user.sent_count == before_sent:
            self.failures.append(f"update {index} ({action}): a private message got no answer")
        if not expect_reply and action == "channel" and user.sent_count != before_sent:
            self.failures.append(f"update {index} ({action}): answered what must be ignored")
        if expect_answer and len(user.answers) != before_answers + 1:
            self.failures.append(f"update {index} ({action}): the button press was not answered")


async def rows_of(h: Harness, patient_id: int) -> dict[str, list[Any]]:
    """Every row that refers to the patient, as plain dicts."""
    assert h.services is not None
    async with h.services.sessions() as db:
        patient = await db.get(Patient, patient_id)
        assert patient is not None
        sessions = await db.exec(
            select(TreatmentSession).where(TreatmentSession.patient_id == patient_id)
        )
        messages = await db.exec(
            select(PlannedMessage).where(PlannedMessage.patient_id == patient_id)
        )
        return {
            "patient": [patient.model_dump()],
            "sessions": sorted((r.model_dump() for r in sessions), key=repr),
            "messages": sorted((r.model_dump() for r in messages), key=repr),
        }


async def cross_patient_rows(h: Harness) -> list[str]:
    """Rows whose references lead to another patient (a message of someone else's session, a
    check-in of someone else's message)."""
    assert h.services is not None
    async with h.services.sessions() as db:
        owner = {s.id: s.patient_id for s in (await db.exec(select(TreatmentSession))).all()}
        messages = (await db.exec(select(PlannedMessage))).all()
        checkins = (await db.exec(select(CheckIn))).all()
    by_message = {m.id: m.patient_id for m in messages}
    crossed = [
        f"message {m.id}" for m in messages if m.session_id and owner[m.session_id] != m.patient_id
    ]
    crossed += [
        f"check-in {c.id}"
        for c in checkins
        if (c.message_id and by_message[c.message_id] != c.patient_id)
        or (c.session_id and owner[c.session_id] != c.patient_id)
    ]
    return crossed


@pytest.mark.slow
async def test_random_updates_break_nothing(
    db_url: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    seed = int(os.environ.get("AFTERCARE_FUZZ_SEED") or secrets.randbits(32))
    total = int(os.environ.get("AFTERCARE_FUZZ_UPDATES") or 1000)
    rng = random.Random(seed)
    errors: list[str] = []
    caplog.set_level(logging.ERROR)
    limits = {
        "rate_overall_per_second": 100_000,
        "rate_chat_per_second": 100_000,
        "staff_user_ids": str(NURSE),
    }
    async with bot(db_url, clock, **limits) as h:
        assert h.application is not None

        async def record(update: object, context: Any) -> None:  # noqa: ARG001
            errors.append(f"{type(context.error).__name__}: {context.error}")

        h.application.add_error_handler(record)
        # A bystander with a session and a sent check-in: the forged data names their rows.
        await booked_patient(h, 990, "Zed", "26 Nov 10:00", "2026-11-26T10:00")
        await run_timeline(h)  # Zed's whole timeline: nothing of theirs is left to send
        assert h.services is not None
        async with h.services.sessions() as db:
            zed_patient = (await db.exec(select(Patient).where(Patient.tg_user_id == 990))).one()
            assert zed_patient.id is not None
            foreign = [
                *(s.id for s in (await db.exec(select(TreatmentSession))).all()),
                *(m.id for m in (await db.exec(select(PlannedMessage))).all()),
            ]
        zed_before = await rows_of(h, zed_patient.id)
        nurse = h.patient(NURSE, "Nurse")
        await say(h, nurse, "/start")
        users = [h.patient(1001 + i, NAMES[i % len(NAMES)]) for i in range(4)]
        await onboard(h, users[0])  # one starts mid-flow, the others from nothing
        await press(h, users[0], "day:2026-12-10")
        fuzzer = Fuzzer(h, rng, users, [i for i in foreign if i is not None], nurse)
        for index in range(total):
            await fuzzer.step(index)
            if errors or fuzzer.failures:
                break
        zed_after = await rows_of(h, zed_patient.id)
        crossed = await cross_patient_rows(h)
        tables = len(SQLModel.metadata.sorted_tables)

    logged = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    context = f"seed={seed} (rerun: AFTERCARE_FUZZ_SEED={seed}) actions={fuzzer.counts}"
    assert errors == [], f"handler errors {errors[:3]}; {context}"
    assert logged == [], f"errors logged {logged[:3]}; {context}"
    assert fuzzer.failures == [], f"{fuzzer.failures[:3]}; {context}"
    assert zed_after == zed_before, f"another patient's rows changed; {context}"
    assert crossed == [], f"rows that mix two patients: {crossed[:3]}; {context}"
    assert tables >= 4
    assert fuzzer.red_flags > 0 or total < 200, context
