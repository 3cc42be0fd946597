"""The clinic part of `aftercare demo`: a staff member sees /due and sends a maintenance
broadcast to a few scripted patients, with its live progress and the final report.

The patients' past courses are scripted data (as an import from a booking system would
leave them); everything the staff member does goes through the real bot and the sandbox.
"""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select

from bot.offline.harness import Harness
from bot.offline.script import Script
from bot.offline.transcript import Chat, Transcript
from scheduler import courses, invites
from scheduler.care import ensure_default_clinic
from scheduler.conversation import Idle, set_state
from scheduler.models import (
    CoursePlanKind,
    MessageState,
    Patient,
    PlannedMessage,
    TreatmentSession,
)

# Two patients near the clinic, two abroad (still night there when the broadcast starts:
# their copies wait for their morning, so the progress message moves in steps).
DUE_PATIENTS = ((701, None), (702, None), (703, "America/New_York"), (704, "America/Los_Angeles"))


async def _scripted_patient(
    h: Harness, user_id: int, name: str, zone: str | None, lang: str
) -> None:
    """A consenting patient whose mild course (one session) ended four months ago."""
    assert h.services is not None
    user = h.patient(user_id, name, lang)
    user.start()
    await h.settle()
    user.press(user.last().message_id, "consent:yes")
    await h.settle()
    now = h.clock.now()
    start = now - timedelta(days=122)
    async with h.services.sessions() as db, db.begin():
        patient = await db.get(Patient, (await _patient_id(h, user_id)))
        assert patient is not None and patient.id is not None
        if zone is not None:
            patient.timezone = zone
        set_state(patient, Idle())  # the booking questions are not theirs to answer
        db.add(patient)
        await courses.set_plan(
            session=db, patient_id=patient.id, plan=CoursePlanKind.MILD, sessions=1, now=start
        )
        treatment = TreatmentSession(
            patient_id=patient.id,
            clinic_id=patient.clinic_id,
            start_at=start,
            end_at=start + timedelta(minutes=45),
            created_at=start,
        )
        db.add(treatment)
        await db.flush()
        await courses.attach_to_course(session=db, treatment=treatment, now=start)


async def _patient_id(h: Harness, user_id: int) -> int:
    assert h.services is not None
    async with h.services.sessions() as db:
        found = (await db.exec(select(Patient.id).where(Patient.tg_user_id == user_id))).one()
    assert found is not None
    return found


async def clinic_demo(h: Harness, t: Transcript, script: Script) -> int:
    """/due, then a maintenance broadcast with its progress and report; 0 when all arrived."""
    assert h.services is not None
    t.scene("The clinic side: four patients finished their course four months ago")
    # The next morning in London, 09:00: still night in New York and Los Angeles.
    now = h.clock.now()
    morning = (now + timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
    await h.advance_to(morning)
    for (user_id, zone), name in zip(DUE_PATIENTS, script.due, strict=True):
        await _scripted_patient(h, user_id, name, zone, script.lang)

    async with h.services.sessions() as db, db.begin():
        clinic = await ensure_default_clinic(session=db, info=h.services.clinic, now=h.clock.now())
        assert clinic.id is not None
        invite = await invites.staff_invite(session=db, clinic_id=clinic.id, now=h.clock.now())
    staff = h.patient(700, script.staff, script.lang)
    chat = Chat(t, staff, "staff")
    link = invites.deep_link("aftercare_sandbox_bot", invite)
    t.say(f"    (the operator ran `aftercare staff invite`: {link})")
    staff.start(invites.payload_of(invite))
    await chat.did(h, "opens the staff invite link")

    staff.send("/due")
    await chat.did(h, "/due")
    staff.send(f"/broadcast {script.broadcast}")
    await chat.did(h, f"/broadcast {script.broadcast[:30]}…")
    menu = staff.last()
    due_button = next(data for row in menu.buttons for _, data in row if data.endswith(":due"))
    staff.press(menu.message_id, due_button)
    await chat.did(h, "presses [Due for maintenance]")
    send_button = staff.last().buttons[0][0][1]
    staff.press(staff.last().message_id, send_button)
    await chat.did(h, "presses [Send]")

    # The clock moves on: New York's morning, then Los Angeles'.
    for hour in (13, 16):
        await h.advance_to(morning.replace(hour=hour))
        t.say(f"    (the clock moves on to {t.stamp(h.clock.now())})")
        chat.show()
    t.scene("What a patient received")
    first = h.patient(701, script.due[0], script.lang)
    t.say(f"    {script.due[0]}: " + first.last().text.replace("\n\n", " — "))

    async with h.services.sessions() as db:
        rows = (
            await db.exec(select(PlannedMessage).where(PlannedMessage.step == "broadcast"))
        ).all()
    sent = sum(1 for r in rows if r.state == MessageState.SENT)
    return 0 if sent == len(DUE_PATIENTS) else 1
