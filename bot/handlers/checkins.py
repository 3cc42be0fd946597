"""Side-effect check-ins: the answer buttons on the after-24h and after-3d messages.

Callback data `ci:<planned message id>:<option key>` (made by scheduler.compose). The message
must be the pressing patient's check-in; one answer per message, after which the buttons are
replaced by the answer. A red flag alerts the clinic's staff at once (delivery rows, so
nothing is lost if Telegram or the process is down), and tells the patient how to reach the
clinic, and emergency services.
"""

from __future__ import annotations

from bot.handlers.base import Turn, callback_int, turn
from bot.handlers.chat import red_flag_answer
from scheduler import patients


def _parse(data: str) -> tuple[int, str] | None:
    parts = data.split(":")
    message_id = callback_int(parts[1]) if len(parts) == 3 else None
    if message_id is None or not parts[2]:
        return None
    return message_id, parts[2]


@turn()
async def checkin_button(t: Turn) -> None:
    """Record the answer, reply with the protocol's guidance, alert staff on a red flag."""
    parsed = _parse(t.data)
    if parsed is None:
        t.stale()
        return
    try:
        recorded = await patients.record_checkin(
            session=t.db,
            patient=t.me,
            message_id=parsed[0],
            option_key=parsed[1],
            protocol=t.services.protocol,
            staff=t.staff_ids,
            now=t.now,
        )
    except patients.CheckinError as exc:
        t.toast(t.t("checkin_flow.already" if exc.reason == "answered" else "chat.stale_button"))
        return
    label = t.t(recorded.option.label)
    t.edit(t.pressed_with(t.t("checkin_flow.answered", answer=label)))
    t.say(recorded.option.guidance)
    if recorded.checkin.red_flag:
        await red_flag_answer(t, emergency=False)
        t.poke()
