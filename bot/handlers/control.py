"""The patient's controls: /settings, /pause, /resume, /privacy, /delete, and the return of
a patient who had blocked the bot.

Callback data: `set:lang`, `set:tz`, `set:quiet` open a choice; `set:lang:<code>`,
`set:tz:<zone>`, `set:tz:type`, `set:q:<HH:MM-HH:MM>`, `set:q:none`, `set:q:type` choose;
`del:yes`, `del:no` answer the erasure question. Only the pressing patient's row changes,
and every change of zone, quiet hours or language goes through `patients.set_preferences`,
which replans.
"""

from __future__ import annotations

from collections.abc import Sequence

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update

from bot import keyboards
from bot.context import AppContext
from bot.handlers.base import Turn, current_patient, transaction, turn
from bot.handlers.patient import set_zone_and_go_on
from bot.zones import find_zone
from messages import texts
from messages.render import catalog
from messages.scripts import local_digits
from scheduler import patients
from scheduler.conversation import TypingQuiet, TypingZone, expect
from scheduler.quiet import NONE as NO_QUIET
from scheduler.quiet import parse_quiet_hours

QUIET_PRESETS = ("22:00-08:00", "21:00-07:00", "23:00-09:00", "20:00-08:00")


def _settings_keyboard(lang: str) -> InlineKeyboardMarkup:
    return keyboards.choice(
        lang,
        [
            [("button.settings.language", "set:lang"), ("button.settings.zone", "set:tz")],
            [("button.settings.quiet", "set:quiet")],
        ],
    )


def _zone_keyboard(lang: str, current: str) -> InlineKeyboardMarkup:
    zones = [z for z in keyboards.COMMON_ZONES if z != current]
    rows = [
        [InlineKeyboardButton(z, callback_data=f"set:tz:{z}") for z in zones[i : i + 2]]
        for i in range(0, len(zones), 2)
    ]
    rows.append(
        [
            InlineKeyboardButton(
                catalog(lang).text("button.settings.type_zone"), callback_data="set:tz:type"
            )
        ]
    )
    return InlineKeyboardMarkup(rows)


def _quiet_keyboard(lang: str) -> InlineKeyboardMarkup:
    texts = catalog(lang)
    rows = [
        [
            InlineKeyboardButton(
                local_digits(p.replace("-", " \N{EN DASH} "), lang), callback_data=f"set:q:{p}"
            )
            for p in QUIET_PRESETS[i : i + 2]
        ]
        for i in range(0, len(QUIET_PRESETS), 2)
    ]
    rows.append(
        [
            InlineKeyboardButton(
                texts.text("button.settings.quiet_none"), callback_data="set:q:none"
            )
        ]
    )
    rows.append(
        [
            InlineKeyboardButton(
                texts.text("button.settings.type_quiet"), callback_data="set:q:type"
            )
        ]
    )
    return InlineKeyboardMarkup(rows)


def _language_keyboard(languages: Sequence[str]) -> InlineKeyboardMarkup:
    """The languages the patient's clinic speaks."""
    return InlineKeyboardMarkup(
        [
            [InlineKeyboardButton(texts.language_name(code), callback_data=f"set:lang:{code}")]
            for code in languages
        ]
    )


@turn()
async def settings_command(t: Turn) -> None:
    """/settings: language, time zone and quiet hours, each with a button to change it."""
    quiet = texts.quiet_hours(t.reader, t.me.quiet_start, t.me.quiet_end)
    t.send(texts.settings_summary(t.reader, t.me.timezone, quiet), _settings_keyboard(t.lang))


@turn()
async def settings_button(t: Turn) -> None:
    """Open a setting, or choose a value."""
    _, _, rest = t.data.partition(":")
    kind, _, value = rest.partition(":")
    protocol = t.services.protocol
    if kind == "lang" and not value:
        t.edit(t.t("settings.pick_language"), _language_keyboard(t.protocol.enabled_languages))
    elif kind == "lang" and value in t.protocol.enabled_languages:
        await patients.set_preferences(
            session=t.db, patient=t.me, protocol=protocol, now=t.now, language=value
        )
        t.edit(t.t("settings.language_set", language=texts.language_name(value)))
    elif kind == "tz" and not value:
        t.edit(
            t.t("settings.pick_zone", zone=t.me.timezone), _zone_keyboard(t.lang, t.me.timezone)
        )
    elif kind == "tz" and value == "type":
        await expect(session=t.db, patient=t.me, state=TypingZone(), now=t.now)
        t.edit(t.t("settings.type_zone"))
    elif kind == "tz" and value in keyboards.COMMON_ZONES:
        await patients.set_preferences(
            session=t.db, patient=t.me, protocol=protocol, now=t.now, timezone=value
        )
        t.edit(t.t("settings.zone_set", zone=value))
        t.poke()
    elif kind == "quiet" and not value:
        t.edit(
            t.t(
                "settings.pick_quiet",
                quiet=texts.quiet_hours(t.reader, t.me.quiet_start, t.me.quiet_end),
            ),
            _quiet_keyboard(t.lang),
        )
    elif kind == "q" and value == "type":
        await expect(session=t.db, patient=t.me, state=TypingQuiet(), now=t.now)
        t.edit(
            t.t(
                "settings.pick_quiet",
                quiet=texts.quiet_hours(t.reader, t.me.quiet_start, t.me.quiet_end),
            )
        )
    elif kind == "q" and (value == "none" or value in QUIET_PRESETS):
        quiet = NO_QUIET if value == "none" else parse_quiet_hours(value)
        assert quiet is not None
        await patients.set_preferences(
            session=t.db, patient=t.me, protocol=protocol, now=t.now, quiet=quiet
        )
        t.edit(
            t.t(
                "settings.quiet_set",
                quiet=texts.quiet_hours(t.reader, t.me.quiet_start, t.me.quiet_end),
            )
        )
        t.poke()
    else:
        t.stale()


async def typed_zone(t: Turn, typed: str, *, onboarding: bool) -> None:
    """A typed time zone (while setting up, or from /settings): every pending reminder is
    replanned in it."""
    zone = find_zone(typed)
    if zone is None:
        t.say("chat.zone_unknown")
        return
    if onboarding:
        await set_zone_and_go_on(t, zone, edit=False)
        return
    await patients.set_preferences(
        session=t.db, patient=t.me, protocol=t.services.protocol, now=t.now, timezone=zone
    )
    t.say("settings.zone_set", zone=zone)
    t.poke()


async def typed_quiet(t: Turn, typed: str) -> None:
    """Typed quiet hours ("22:00-08:00"); pending reminders are replanned."""
    quiet = parse_quiet_hours(typed)
    if quiet is None:
        t.say("settings.quiet_unknown")
        return
    await patients.set_preferences(
        session=t.db, patient=t.me, protocol=t.services.protocol, now=t.now, quiet=quiet
    )
    t.say(
        "settings.quiet_set", quiet=texts.quiet_hours(t.reader, t.me.quiet_start, t.me.quiet_end)
    )
    t.poke()


@turn()
async def pause_command(t: Turn) -> None:
    """/pause: send nothing until /resume."""
    changed = await patients.pause(session=t.db, patient=t.me, now=t.now)
    t.say("control.paused" if changed else "control.already_paused")


@turn()
async def resume_command(t: Turn) -> None:
    """/resume: still-valid reminders are sent, the rest are recorded as expired."""
    changed = await patients.resume(
        session=t.db, patient=t.me, protocol=t.services.protocol, now=t.now
    )
    t.say("control.resumed" if changed else "control.not_paused")
    if changed:
        t.poke()


@turn("anyone")
async def privacy_command(t: Turn) -> None:
    """/privacy: what is stored, why, for how long, and how to erase it."""
    t.say("control.privacy")


@turn("anyone")
async def delete_command(t: Turn) -> None:
    """/delete: ask before erasing everything."""
    if t.patient is None:
        t.say("control.nothing_to_delete")
        return
    t.say(
        "control.confirm_delete",
        keyboards.choice(
            t.lang, [[("button.delete.yes", "del:yes")], [("button.delete.no", "del:no")]]
        ),
    )


@turn("known")
async def delete_button(t: Turn) -> None:
    """Erase every row about the pressing patient, or keep them."""
    if t.data == "del:yes":
        assert t.me.id is not None
        await patients.erase_patient(session=t.db, patient_id=t.me.id)
        t.edit(t.t("control.deleted"))
    else:
        t.edit(t.t("control.delete_kept"))


async def returning(update: Update, context: AppContext) -> None:
    """Before any handler (group -1): a patient who had blocked the bot writes or presses
    again, so they are back; the reminders cancelled by the block are replanned."""
    chat, user = update.effective_chat, update.effective_user
    if chat is None or user is None or chat.type != "private":
        return
    if update.message is None and update.callback_query is None:
        return
    services = context.services
    async with transaction(services, short=True) as db:
        patient = await current_patient(db, update)
        if patient is None or patient.blocked_at is None:
            return
        await patients.welcome_back(
            session=db, patient=patient, protocol=services.protocol, now=services.clock.now()
        )
    services.poke()
