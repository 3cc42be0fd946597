"""The patient who came through a per-booking invite: their session is booked already, so
the screening answers go to it and no date is asked (issue 5)."""

from __future__ import annotations

from telegram import Update

from bot.context import AppContext
from bot.handlers.base import reply, transaction
from messages.render import format_local
from scheduler import care, invites


async def screened_invited_session(update: Update, context: AppContext, lang: str) -> bool:
    """True if the screening just answered belonged to an invited session (then answered)."""
    user = update.effective_user
    if user is None:
        return False
    services = context.services
    async with transaction(services) as db:
        patient = await care.find_patient(session=db, tg_user_id=user.id)
        if patient is None:
            return False
        treatment = await invites.screen_invited_session(
            session=db, patient=patient, now=services.clock.now()
        )
        zone = care.zone_of(patient)
    if treatment is None:
        return False
    when = format_local(treatment.start_at, zone, lang, "datetime")
    await reply(update, lang, "invited.screened", when=when)
    return True
