"""The patient's controls: /settings, /pause, /resume, /privacy, /delete, and the return of
a patient who had blocked the bot.

Callback data: `set:lang`, `set:tz`, `set:quiet` open a choice; `set:lang:<code>`,
`set:tz:<zone>`, `set:tz:type`, `set:q:<HH:MM-HH:MM>`, `set:q:none`, `set:q:type` choose;
`del:yes`, `del:no` answer the erasure question. Only the pressing patient's row changes.
"""

from __future__ import annotations

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update

from bot import keyboards
from bot.context import AppContext
from bot.handlers.base import (
    answer,
    consented_patient,
    current_patient,
    edit,
    reply,
    reply_in_their_language,
    send,
    transaction,
    valid_zone,
)
from messages.render import available_languages, catalog
from scheduler import patients, views

# What a typed text answers while the patient is changing a setting (patient.awaiting).
TYPED_SETTINGS = ("s_zone", "s_quiet")
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
            InlineKeyboardButton(p.replace("-", " \N{EN DASH} "), callback_data=f"set:q:{p}")
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


def _language_keyboard() -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [InlineKeyboardButton(views.language_name(code), callback_data=f"set:lang:{code}")]
            for code in available_languages()
        ]
    )


async def settings_command(update: Update, context: AppContext) -> None:
    """/settings: language, time zone and quiet hours, each with a button to change it."""
    async with transaction(context.services) as db:
        patient = await consented_patient(db, update)
    if patient is not None:
        await send(update, views.settings_summary(patient), _settings_keyboard(patient.language))


async def settings_button(update: Update, context: AppContext) -> None:
    """Open a setting, or choose a value."""
    query = update.callback_query
    assert query is not None and query.data is not None
    services = context.services
    now = services.clock.now()
    _, _, rest = query.data.partition(":")
    kind, _, value = rest.partition(":")
    async with transaction(services) as db:
        patient = await consented_patient(db, update)
        if patient is None:
            return
        lang = patient.language
        texts = catalog(lang)
        text, markup = None, None
        if kind == "lang" and not value:
            text, markup = texts.text("settings.pick_language"), _language_keyboard()
        elif kind == "lang" and value in available_languages():
            patient.language = value
            db.add(patient)
            lang = value
            text = catalog(lang).text("settings.language_set", language=views.language_name(lang))
        elif kind == "tz" and not value:
            text = texts.text("settings.pick_zone", zone=patient.timezone)
            markup = _zone_keyboard(lang, patient.timezone)
        elif kind == "tz" and value == "type":
            patient.awaiting = "s_zone"
            db.add(patient)
            text = texts.text("settings.type_zone")
        elif kind == "tz" and value in keyboards.COMMON_ZONES:
            await patients.set_preferences(
                session=db, patient=patient, protocol=services.protocol, now=now, timezone=value
            )
            text = texts.text("settings.zone_set", zone=value)
        elif kind == "quiet" and not value:
            text = texts.text("settings.pick_quiet", quiet=views.quiet_hours(patient))
            markup = _quiet_keyboard(lang)
        elif kind == "q" and value == "type":
            patient.awaiting = "s_quiet"
            db.add(patient)
            text = texts.text("settings.pick_quiet", quiet=views.quiet_hours(patient))
        elif kind == "q" and (value == "none" or value in QUIET_PRESETS):
            quiet = ("00:00", "00:00") if value == "none" else patients.parse_quiet_hours(value)
            assert quiet is not None
            await patients.set_preferences(
                session=db, patient=patient, protocol=services.protocol, now=now, quiet=quiet
            )
            text = texts.text("settings.quiet_set", quiet=views.quiet_hours(patient))
        if text is None:
            await answer(query, texts.text("chat.stale_button"))
            return
    await answer(query)
    await edit(update, text, markup)
    services.poke()


async def typed_setting(update: Update, context: AppContext, awaiting: str, typed: str) -> None:
    """A typed time zone or quiet hours, validated; pending reminders are replanned."""
    services = context.services
    now = services.clock.now()
    text = typed.strip()
    async with transaction(services) as db:
        patient = await current_patient(db, update)
        if patient is None:
            return
        lang = patient.language
        texts = catalog(lang)
        if awaiting == "s_zone":
            if not valid_zone(text):
                await reply(update, lang, "chat.zone_unknown")
                return
            await patients.set_preferences(
                session=db, patient=patient, protocol=services.protocol, now=now, timezone=text
            )
            answer_text = texts.text("settings.zone_set", zone=text)
        else:
            quiet = patients.parse_quiet_hours(text)
            if quiet is None:
                await reply(update, lang, "settings.quiet_unknown")
                return
            await patients.set_preferences(
                session=db, patient=patient, protocol=services.protocol, now=now, quiet=quiet
            )
            answer_text = texts.text("settings.quiet_set", quiet=views.quiet_hours(patient))
    await send(update, answer_text)
    services.poke()


async def pause_command(update: Update, context: AppContext) -> None:
    """/pause: send nothing until /resume."""
    services = context.services
    async with transaction(services) as db:
        patient = await consented_patient(db, update)
        if patient is None:
            return
        changed = await patients.pause(session=db, patient=patient, now=services.clock.now())
        lang = patient.language
    await reply(update, lang, "control.paused" if changed else "control.already_paused")


async def resume_command(update: Update, context: AppContext) -> None:
    """/resume: still-valid reminders are sent, the rest are recorded as expired."""
    services = context.services
    async with transaction(services) as db:
        patient = await consented_patient(db, update)
        if patient is None:
            return
        changed = await patients.resume(
            session=db, patient=patient, protocol=services.protocol, now=services.clock.now()
        )
        lang = patient.language
    await reply(update, lang, "control.resumed" if changed else "control.not_paused")
    if changed:
        services.poke()


async def privacy_command(update: Update, context: AppContext) -> None:
    """/privacy: what is stored, why, for how long, and how to erase it."""
    await reply_in_their_language(update, context.services, "control.privacy")


async def delete_command(update: Update, context: AppContext) -> None:
    """/delete: ask before erasing everything."""
    async with transaction(context.services) as db:
        patient = await current_patient(db, update)
    if patient is None:
        await reply(update, "en", "control.nothing_to_delete")
        return
    lang = patient.language
    await reply(
        update,
        lang,
        "control.confirm_delete",
        keyboards.choice(
            lang, [[("button.delete.yes", "del:yes")], [("button.delete.no", "del:no")]]
        ),
    )


async def delete_button(update: Update, context: AppContext) -> None:
    """Erase every row about the pressing patient, or keep them."""
    query = update.callback_query
    assert query is not None and query.data is not None
    async with transaction(context.services) as db:
        patient = await current_patient(db, update)
        if patient is None:
            await answer(query, catalog("en").text("chat.stale_button"))
            return
        lang = patient.language
        if query.data == "del:yes":
            assert patient.id is not None
            await patients.erase_patient(session=db, patient_id=patient.id)
    await answer(query)
    key = "control.deleted" if query.data == "del:yes" else "control.delete_kept"
    await edit(update, catalog(lang).text(key))


async def returning(update: Update, context: AppContext) -> None:
    """Before any handler (group -1): a patient who had blocked the bot writes or presses
    again, so they are back; the reminders cancelled by the block are replanned."""
    chat, user = update.effective_chat, update.effective_user
    if chat is None or user is None or chat.type != "private":
        return
    if update.message is None and update.callback_query is None:
        return
    services = context.services
    async with transaction(services) as db:
        patient = await current_patient(db, update)
        if patient is None or patient.blocked_at is None:
            return
        await patients.welcome_back(
            session=db, patient=patient, protocol=services.protocol, now=services.clock.now()
        )
    services.poke()
