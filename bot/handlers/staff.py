"""Clinic staff in Telegram: patients, upcoming sessions, who is due, alerts, broadcasts,
invites and course plans. Plus the patient's "no more maintenance" button.

Every staff handler first finds the clinics the caller works for (`_staff`); each query
then names that clinic, and each button's target row is re-checked against it, so forged
or stale callback data can never reach another clinic's patients.
Callback data: st:pp:<page> | st:al:<checkin> | st:ba:<broadcast>:<audience> |
st:bs:<broadcast>:<audience> | st:bx:<broadcast> | mnt:stop:<planned message>.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import qrcode
from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import (
    BotCommand,
    BotCommandScopeChat,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import BadRequest
from telegram.ext import BaseHandler, CallbackQueryHandler, CommandHandler, filters

from bot import keyboards
from bot.context import AppContext, Services
from bot.dates import parse_when
from bot.handlers.base import Handler, Turn, answer, edit, reply, transaction, turn
from bot.telegram_sender import markup
from messages.protocol import Protocol
from messages.render import Html, catalog, format_local
from scheduler import broadcast, care, clinics, courses, inbox, invites
from scheduler.models import Broadcast, BroadcastState, Clinic, CoursePlanKind, PlannedMessage
from scheduler.protocols import clinic_protocol

log = logging.getLogger("aftercare.staff")

EN = "en"  # staff texts are English for now


def handlers() -> Sequence[BaseHandler[Any, AppContext, Any]]:
    """The clinic side's handlers; registered before the patient's (a staff invite is a
    /start with a payload, and must not make the staff member a patient)."""
    private = filters.ChatType.PRIVATE
    return [
        CommandHandler("start", join, filters=private & filters.Regex(r"^/start(@\w+)? staff-")),
        CommandHandler("staff", help_command, filters=private),
        CommandHandler("patients", patients_command, filters=private),
        CommandHandler("upcoming", upcoming_command, filters=private),
        CommandHandler("due", due_command, filters=private),
        CommandHandler("alerts", alerts_command, filters=private),
        CommandHandler("broadcast", broadcast_command, filters=private),
        CommandHandler("invite", invite_command, filters=private),
        CommandHandler("course", course_command, filters=private),
        CommandHandler("inbox", inbox_command, filters=private),
        CallbackQueryHandler(patients_button, pattern=r"^st:pp:"),
        CallbackQueryHandler(handled_button, pattern=r"^st:al:"),
        CallbackQueryHandler(broadcast_button, pattern=r"^st:b[asx]:"),
        CallbackQueryHandler(maintenance_stop_button, pattern=r"^mnt:stop:"),
        CallbackQueryHandler(inbox_button, pattern=r"^ib:"),
    ]


@dataclass(frozen=True)
class Staff:
    """The caller, authorised: the clinic their commands act on, and every clinic of theirs."""

    user_id: int
    clinic: Clinic
    clinic_ids: tuple[int, ...]


async def _staff(services: Services, update: Update) -> Staff | None:
    async with transaction(services) as db:
        return await staff_in(db, services, update)


async def staff_in(db: AsyncSession, services: Services, update: Update) -> Staff | None:
    """The caller as staff (in the caller's transaction), or None."""
    user = update.effective_user
    if user is None:
        return None
    now = services.clock.now()
    default = await care.ensure_default_clinic(session=db, info=services.clinic, now=now)
    assert default.id is not None
    ids = await clinics.staff_clinic_ids(
        session=db,
        tg_user_id=user.id,
        configured=services.settings.staff_user_ids,
        default_clinic_id=default.id,
    )
    if not ids:
        return None
    # Someone working for several clinics acts on the first they joined.
    clinic = default if ids[0] == default.id else await db.get(Clinic, ids[0])
    assert clinic is not None
    return Staff(user.id, clinic, tuple(ids))


StaffBody = Callable[[Turn, Staff], Awaitable[None]]


def staff_turn(body: StaffBody) -> Handler:
    """A Turn body for staff only: everyone else is told "this is for the clinic's staff"."""

    async def guarded(t: Turn) -> None:
        staff = await staff_in(t.db, t.services, t.update)
        if staff is None:
            if t.update.callback_query is not None:
                t.toast(catalog(EN).text("staff.not_staff"))
            else:
                t.send(catalog(EN).text("staff.not_staff"))
            return
        await body(t, staff)

    guarded.__doc__ = body.__doc__
    return turn("anyone")(guarded)


async def _staff_or_refuse(update: Update, context: AppContext) -> Staff | None:
    staff = await _staff(context.services, update)
    if staff is None:
        if update.callback_query is not None:
            await answer(update.callback_query, catalog(EN).text("staff.not_staff"))
        else:
            await reply(update, EN, "staff.not_staff")
    return staff


async def _send(update: Update, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    chat = update.effective_chat
    if chat is not None:
        await chat.send_message(text, parse_mode=ParseMode.HTML, reply_markup=markup)


def _ids(data: str | None, parts: int) -> list[str] | None:
    """Callback data split into exactly `parts` fields, or None (forged or stale)."""
    if data is None or len(data) > 64:
        return None
    fields = data.split(":")
    return fields if len(fields) == parts else None


def _button(text: str, data: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(text, callback_data=data)


def _zone(clinic: Clinic) -> ZoneInfo:
    return ZoneInfo(clinic.timezone)


def _short(protocol: Protocol, key: str) -> str:
    """A screening question's few words ("Pregnancy or breastfeeding")."""
    try:
        return catalog(EN).raw(protocol.question(key).short)
    except KeyError:
        return key.replace("_", " ")


def _int(value: str) -> int | None:
    return int(value) if value.isdigit() and len(value) < 12 else None


# -- joining --------------------------------------------------------------------------------


async def join(update: Update, context: AppContext) -> None:
    """/start staff-<code>: become staff of the link's clinic."""
    user, chat = update.effective_user, update.effective_chat
    if user is None or chat is None or not context.args:
        return
    services = context.services
    async with transaction(services) as db:
        clinic = await invites.redeem_staff(
            session=db,
            payload=context.args[0],
            tg_user_id=user.id,
            chat_id=chat.id,
            name=user.first_name,
            now=services.clock.now(),
        )
        name = clinic.name if clinic else ""
    if clinic is None:
        await reply(update, EN, "staff.invite_invalid")
        return
    log.info("staff joined clinic=%s", clinic.id)
    await reply(update, EN, "staff.joined", clinic=name)
    await reply(update, EN, "staff.help", clinic=name)
    await set_staff_menu(context, chat.id)


async def staff_help(t: Turn, staff: Staff) -> None:
    """/staff (and a staff member's /start): the staff commands, and this chat's menu."""
    chat = t.update.effective_chat
    t.send(catalog(EN).text("staff.help", clinic=staff.clinic.name))
    if chat is not None:
        chat_id = chat.id
        t.later(lambda: set_staff_menu(t.context, chat_id))


help_command = staff_turn(staff_help)


STAFF_MENU = (
    "inbox",
    "patients",
    "upcoming",
    "due",
    "alerts",
    "broadcast",
    "invite",
    "course",
    "staff",
)


async def set_staff_menu(context: AppContext, chat_id: int) -> None:
    """The staff commands in this chat's menu (setMyCommands, scoped to the chat)."""
    texts = catalog(EN)
    await context.bot.set_my_commands(
        [BotCommand(name, texts.text(f"staff_menu.{name}")) for name in STAFF_MENU],
        scope=BotCommandScopeChat(chat_id),
    )


# -- /patients ------------------------------------------------------------------------------


async def _patients_text(
    services: Services, staff: Staff, page: int
) -> tuple[str, InlineKeyboardMarkup | None]:
    texts = catalog(EN)
    now = services.clock.now()
    assert staff.clinic.id is not None
    async with transaction(services) as db:
        lines, pages = await clinics.patients_page(
            session=db, clinic_id=staff.clinic.id, page=page, now=now
        )
    if not lines:
        return texts.text("staff.no_patients"), None
    page = min(max(page, 0), pages - 1)
    zone = _zone(staff.clinic)
    body = [
        texts.text("staff.patients_title", clinic=staff.clinic.name, page=page + 1, pages=pages)
    ]
    for line in lines:
        p = line.patient
        if p.blocked_at is not None:
            status = texts.text("staff.status_blocked")
        elif p.consent_at is None:
            status = texts.text("staff.status_no_consent")
        elif p.paused_at is not None:
            status = texts.text("staff.status_paused")
        elif line.next_start is not None:
            when = format_local(line.next_start, zone, EN, "datetime")
            status = texts.text("staff.status_next", when=when)
        else:
            status = texts.text("staff.status_none")
        flag = texts.text("staff.patient_flag") if line.flagged else Html("")
        body.append(
            texts.text(
                "staff.patient_line", id=p.id or 0, name=p.first_name, flag=flag, status=status
            )
        )
    nav = []
    if page > 0:
        nav.append(
            InlineKeyboardButton(texts.text("staff.previous"), callback_data=f"st:pp:{page - 1}")
        )
    if page < pages - 1:
        nav.append(
            InlineKeyboardButton(texts.text("staff.next"), callback_data=f"st:pp:{page + 1}")
        )
    return "\n".join(body), InlineKeyboardMarkup([nav]) if nav else None


async def patients_command(update: Update, context: AppContext) -> None:
    """/patients: the clinic's patients, ten a page."""
    staff = await _staff_or_refuse(update, context)
    if staff is None:
        return
    text, markup = await _patients_text(context.services, staff, 0)
    await _send(update, text, markup)


async def patients_button(update: Update, context: AppContext) -> None:
    """Another page of /patients."""
    query = update.callback_query
    assert query is not None
    staff = await _staff_or_refuse(update, context)
    if staff is None:
        return
    fields = _ids(query.data, 3)
    page = _int(fields[2]) if fields else None
    if page is None:
        await answer(query, catalog(EN).text("staff.stale"))
        return
    text, markup = await _patients_text(context.services, staff, page)
    await answer(query)
    await edit(update, text, markup)


# -- /upcoming, /due ------------------------------------------------------------------------

UPCOMING_DAYS = 14


async def upcoming_command(update: Update, context: AppContext) -> None:
    """/upcoming: sessions in the next days, with the screening flags."""
    staff = await _staff_or_refuse(update, context)
    if staff is None:
        return
    services = context.services
    texts = catalog(EN)
    assert staff.clinic.id is not None
    async with transaction(services) as db:
        rows = await clinics.upcoming_sessions(
            session=db, clinic_id=staff.clinic.id, now=services.clock.now(), days=UPCOMING_DAYS
        )
    if not rows:
        await reply(update, EN, "staff.no_upcoming", days=UPCOMING_DAYS)
        return
    zone = _zone(staff.clinic)
    lines = [texts.text("staff.upcoming_title", days=UPCOMING_DAYS, zone=staff.clinic.timezone)]
    for treatment, patient in rows:
        protocol = clinic_protocol(staff.clinic, services.protocol)
        flagged = [_short(protocol, key) for key, yes in treatment.screening.items() if yes]
        flag = (
            texts.text("staff.upcoming_flag", answers=", ".join(flagged)) if flagged else Html("")
        )
        lines.append(
            texts.text(
                "staff.upcoming_line",
                when=format_local(treatment.start_at, zone, EN, "datetime"),
                id=patient.id or 0,
                name=patient.first_name,
                flag=flag,
            )
        )
    await _send(update, "\n".join(lines))


async def due_command(update: Update, context: AppContext) -> None:
    """/due: due for maintenance, with no session booked."""
    staff = await _staff_or_refuse(update, context)
    if staff is None:
        return
    services = context.services
    texts = catalog(EN)
    assert staff.clinic.id is not None
    async with transaction(services) as db:
        due = await clinics.due_for_maintenance(
            session=db,
            clinic_id=staff.clinic.id,
            protocol=services.protocol,
            now=services.clock.now(),
        )
    if not due:
        await reply(update, EN, "staff.no_due")
        return
    zone = _zone(staff.clinic)
    lines = [texts.text("staff.due_title", count=len(due))]
    lines += [
        texts.text(
            "staff.due_line",
            id=d.patient.id or 0,
            name=d.patient.first_name,
            last=format_local(d.last_end, zone, EN, "date"),
        )
        for d in due[:50]
    ]
    lines.append(texts.text("staff.due_hint"))
    await _send(update, "\n".join(lines))


# -- /alerts --------------------------------------------------------------------------------


def _alert_text(services: Services, staff: Staff, checkin: Any, patient: Any) -> str:
    texts = catalog(EN)
    zone = _zone(staff.clinic)
    try:
        answer = texts.text(services.protocol.checkin_option(checkin.option).label)
    except KeyError:
        answer = checkin.option
    head = texts.text(
        "staff.alert",
        red=texts.text("staff.alert_red") if checkin.red_flag else Html(""),
        id=patient.id or 0,
        name=patient.first_name,
        when=format_local(checkin.answered_at, zone, EN, "datetime"),
        answer=answer,
        note=texts.text("staff.alert_note", note=checkin.note) if checkin.note else Html(""),
    )
    state = (
        texts.text(
            "staff.alert_handled", when=format_local(checkin.handled_at, zone, EN, "datetime")
        )
        if checkin.handled_at is not None
        else texts.text("staff.alert_open")
    )
    return f"{head}\n{state}"


async def alerts_command(update: Update, context: AppContext) -> None:
    """/alerts: side-effect reports, newest first, each with a button to mark it handled."""
    staff = await _staff_or_refuse(update, context)
    if staff is None:
        return
    services = context.services
    assert staff.clinic.id is not None
    async with transaction(services) as db:
        rows = await clinics.alerts(session=db, clinic_id=staff.clinic.id)
    if not rows:
        await reply(update, EN, "staff.no_alerts")
        return
    await reply(update, EN, "staff.alerts_title")
    for checkin, patient in rows:
        markup = (
            None
            if checkin.handled_at is not None
            else keyboards.choice(EN, [[("staff.handle_button", f"st:al:{checkin.id}")]])
        )
        await _send(update, _alert_text(services, staff, checkin, patient), markup)


async def handled_button(update: Update, context: AppContext) -> None:
    """Mark a side-effect report handled (only one of the caller's clinics' reports)."""
    query = update.callback_query
    assert query is not None
    staff = await _staff_or_refuse(update, context)
    if staff is None:
        return
    fields = _ids(query.data, 3)
    checkin_id = _int(fields[2]) if fields else None
    services = context.services
    found = None
    if checkin_id is not None:
        async with transaction(services) as db:
            found = await clinics.mark_handled(
                session=db,
                checkin_id=checkin_id,
                clinic_ids=staff.clinic_ids,
                by=staff.user_id,
                now=services.clock.now(),
            )
            text = _alert_text(services, staff, *found) if found else ""
    if found is None:
        await answer(query, catalog(EN).text("staff.stale"))
        return
    await answer(query, catalog(EN).text("staff.handled_toast"))
    await edit(update, text)


# -- /broadcast -----------------------------------------------------------------------------


def _command_text(update: Update) -> str:
    """What follows the command, newlines kept (context.args would lose them)."""
    message = update.effective_message
    if message is None or message.text is None:
        return ""
    parts = message.text.split(maxsplit=1)
    return parts[1].strip() if len(parts) == 2 else ""


async def broadcast_command(update: Update, context: AppContext) -> None:
    """/broadcast <text>: a draft; then the audience, the preview, and the confirmation."""
    staff = await _staff_or_refuse(update, context)
    if staff is None:
        return
    text = _command_text(update)
    if not text:
        await reply(update, EN, "broadcast.usage")
        return
    services = context.services
    now = services.clock.now()
    assert staff.clinic.id is not None
    texts = catalog(EN)
    async with transaction(services) as db:
        draft = await broadcast.create_draft(
            session=db, clinic_id=staff.clinic.id, created_by=staff.user_id, text=text, now=now
        )
        counts = {
            audience: len(
                await broadcast.audience_ids(
                    session=db,
                    clinic_id=staff.clinic.id,
                    audience=audience,
                    protocol=services.protocol,
                    now=now,
                )
            )
            for audience in broadcast.AUDIENCES
        }
    markup = InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(
                    texts.text(f"broadcast.audience_button.{audience}", count=count),
                    callback_data=f"st:ba:{draft.id}:{audience}",
                )
            ]
            for audience, count in counts.items()
        ]
        + [
            [
                InlineKeyboardButton(
                    texts.text("broadcast.cancel_button"), callback_data=f"st:bx:{draft.id}"
                )
            ]
        ]
    )
    await reply(update, EN, "broadcast.choose_audience", markup)


async def _broadcast_button(t: Turn, staff: Staff) -> None:
    """Audience chosen (preview), Send, or Cancel; only on a draft of the caller's clinic."""
    data = t.data
    fields = _ids(data, 4) if data.startswith(("st:ba:", "st:bs:")) else _ids(data, 3)
    broadcast_id = _int(fields[2]) if fields else None
    audience = fields[3] if fields and len(fields) == 4 else None
    draft = await t.db.get(Broadcast, broadcast_id) if broadcast_id else None
    if (
        fields is None
        or draft is None
        or draft.clinic_id not in staff.clinic_ids
        or draft.state != BroadcastState.DRAFT
        or (audience is not None and audience not in broadcast.AUDIENCES)
    ):
        t.toast(catalog(EN).text("staff.stale"))
        return
    if fields[1] == "bx":
        draft.state = BroadcastState.CANCELLED
        t.db.add(draft)
        t.edit(catalog(EN).text("broadcast.cancelled"))
    elif fields[1] == "ba" and audience is not None:
        await _preview(t, draft, audience)
    elif audience is not None:  # "bs"
        await _start(t, draft, audience)


async def _preview(t: Turn, draft: Broadcast, audience: str) -> None:
    """The broadcast as patients will read it, to how many, with Send and Cancel."""
    texts = catalog(EN)
    ids = await broadcast.audience_ids(
        session=t.db,
        clinic_id=draft.clinic_id,
        audience=audience,
        protocol=t.services.protocol,
        now=t.now,
    )
    cancel = ("broadcast.cancel_button", f"st:bx:{draft.id}")
    if not ids:
        t.edit(texts.text("broadcast.nobody"), keyboards.choice(EN, [[cancel]]))
        return
    clinic = await t.db.get(Clinic, draft.clinic_id)
    assert clinic is not None
    text = texts.text(
        "broadcast.preview",
        preview=broadcast.patient_text(clinic.name, draft.text, EN),
        count=len(ids),
        audience=texts.text(f"broadcast.audience.{audience}"),
    )
    send = _button(
        texts.text("broadcast.send_button", count=len(ids)), f"st:bs:{draft.id}:{audience}"
    )
    t.edit(text, InlineKeyboardMarkup([[send, _button(texts.text(cancel[0]), cancel[1])]]))


async def _start(t: Turn, draft: Broadcast, audience: str) -> None:
    """Send: one delivery row per recipient; this message shows the progress."""
    assert draft.id is not None
    query = t.update.callback_query
    message = query.message if query is not None else None
    started = await broadcast.start(
        session=t.db,
        broadcast_id=draft.id,
        clinic_id=draft.clinic_id,
        audience=audience,
        protocol=t.services.protocol,
        now=t.now,
        progress_chat_id=message.chat.id if message else None,
        progress_message_id=message.message_id if message else None,
    )
    if started is None:  # pressed twice: the first press started it
        t.toast(catalog(EN).text("staff.stale"))
        return
    counts = await broadcast.progress(session=t.db, broadcast_id=draft.id)
    params = broadcast.report_params(counts)
    t.edit(catalog(EN).text("broadcast.progress", id=draft.id, **params))
    log.info(
        "broadcast started id=%s clinic=%s recipients=%s", draft.id, draft.clinic_id, counts.total
    )
    t.poke()


broadcast_button = staff_turn(_broadcast_button)


# -- /invite --------------------------------------------------------------------------------


def qr_png(link: str) -> bytes:
    """The link as a QR code image (PNG)."""
    image = qrcode.make(link)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def invite_command(update: Update, context: AppContext) -> None:
    """/invite: the clinic's patient link and QR code; /invite <date time>: a per-booking one."""
    staff = await _staff_or_refuse(update, context)
    if staff is None:
        return
    services = context.services
    now = services.clock.now()
    zone = _zone(staff.clinic)
    typed = _command_text(update)
    start_at: datetime | None = None
    if typed:
        parsed = parse_when(typed, tz=zone, now=now, language=EN)
        if parsed is None or parsed.at is None:
            await reply(update, EN, "staff.invite_bad_date")
            return
        start_at = datetime.combine(parsed.day, parsed.at, tzinfo=zone)
    assert staff.clinic.id is not None
    async with transaction(services) as db:
        if start_at is None:
            invite = await invites.clinic_invite(session=db, clinic_id=staff.clinic.id, now=now)
        else:
            invite = await invites.booking_invite(
                session=db, clinic_id=staff.clinic.id, start_at=start_at, now=now
            )
    username = context.bot.username
    link = invites.deep_link(username, invite)
    texts = catalog(EN)
    if start_at is None:
        caption = texts.text("staff.invite_clinic", clinic=staff.clinic.name, link=link)
    else:
        caption = texts.text(
            "staff.invite_booking",
            clinic=staff.clinic.name,
            when=format_local(start_at, zone, EN, "datetime"),
            link=link,
        )
    chat = update.effective_chat
    assert chat is not None
    await chat.send_photo(photo=qr_png(link), caption=caption, parse_mode=ParseMode.HTML)


# -- /course --------------------------------------------------------------------------------


async def course_command(update: Update, context: AppContext) -> None:
    """/course <patient> <mild|noticeable|maintenance> [sessions]: a new course plan."""
    staff = await _staff_or_refuse(update, context)
    if staff is None:
        return
    services = context.services
    protocol = services.protocol
    args = context.args or []
    ranges = {p.key: p.sessions for p in protocol.course.plans}
    usage = {k: f"{lo} to {hi}" for k, (lo, hi) in ranges.items()}
    patient_id = _int(args[0].lstrip("#")) if args else None
    plan = args[1].lower() if len(args) > 1 else ""
    if patient_id is None or plan not in {*ranges, CoursePlanKind.MAINTENANCE}:
        await reply(
            update,
            EN,
            "staff.course_usage",
            mild=usage.get("mild", ""),
            noticeable=usage.get("noticeable", ""),
        )
        return
    lo, hi = courses.plan_range(protocol, plan)
    sessions = _int(args[2]) if len(args) > 2 else lo
    if sessions is None or not lo <= sessions <= hi:
        await reply(update, EN, "staff.course_bad_sessions", min=lo, max=hi)
        return
    assert staff.clinic.id is not None
    async with transaction(services) as db:
        patient = await clinics.clinic_patient(
            session=db, clinic_id=staff.clinic.id, patient_id=patient_id
        )
        if patient is not None:
            await courses.set_plan(
                session=db,
                patient_id=patient_id,
                plan=plan,
                sessions=sessions,
                now=services.clock.now(),
            )
    if patient is None:
        await reply(update, EN, "staff.course_unknown_patient", id=patient_id)
        return
    await reply(update, EN, "staff.course_set", id=patient_id, plan=plan, sessions=sessions)


# -- the patient's side of maintenance --------------------------------------------------------


async def maintenance_stop_button(update: Update, context: AppContext) -> None:
    """Under a maintenance reminder: stop recurring maintenance (the caller's own only)."""
    query = update.callback_query
    user = update.effective_user
    assert query is not None
    fields = _ids(query.data, 3)
    message_id = _int(fields[2]) if fields else None
    services = context.services
    lang = EN
    done = False
    if message_id is not None and user is not None:
        async with transaction(services) as db:
            patient = await care.find_patient(session=db, tg_user_id=user.id)
            row = await db.get(PlannedMessage, message_id)
            if patient is not None and row is not None and row.patient_id == patient.id:
                lang = patient.language
                await courses.stop_maintenance(
                    session=db, patient_id=patient.id, now=services.clock.now()
                )
                done = True
    if not done:
        await answer(query, catalog(lang).text("staff.stale"))
        return
    await answer(query)
    if query.message is not None:
        with contextlib.suppress(BadRequest):  # too old to edit: the reply says it all
            await query.edit_message_reply_markup(reply_markup=None)
    await reply(update, lang, "maint.stopped")


# -- /inbox: what patients wrote, and the answers ---------------------------------------------


async def _inbox(t: Turn, staff: Staff) -> None:
    """/inbox: the newest messages from patients (red flags, notes, screening flags too),
    each with Reply and Mark handled."""
    texts = catalog(EN)
    found, open_count = await inbox.entries(session=t.db, clinic_ids=staff.clinic_ids)
    if not found:
        t.send(texts.text("inbox.empty"))
        return
    t.send(texts.text("inbox.title", open=open_count, shown=len(found)))
    zone = _zone(staff.clinic)
    for entry in found:
        protocol = clinic_protocol(
            await t.db.get(Clinic, entry.message.clinic_id), t.services.protocol
        )
        t.send(inbox.staff_headline(entry, zone, protocol), markup(inbox.staff_buttons(entry)))


inbox_command = staff_turn(_inbox)


async def _inbox_button(t: Turn, staff: Staff) -> None:
    """Reply (the next text answers), Mark handled, or stop replying."""
    texts = catalog(EN)
    fields = t.data.split(":")
    action = fields[1] if len(fields) >= 2 else ""
    if action == "x" and len(fields) == 2:
        await inbox.drop_reply_draft(session=t.db, staff_user_id=staff.user_id)
        t.edit(texts.text("inbox.reply_dropped"))
        return
    message_id = _int(fields[2]) if len(fields) == 3 else None
    if message_id is None or action not in ("r", "h"):
        t.toast(texts.text("staff.stale"))
        return
    zone = _zone(staff.clinic)
    if action == "h":
        found = await inbox.mark_handled(
            session=t.db,
            message_id=message_id,
            clinic_ids=staff.clinic_ids,
            by=staff.user_id,
            now=t.now,
        )
        if found is None:
            t.toast(texts.text("staff.stale"))
            return
        protocol = clinic_protocol(
            await t.db.get(Clinic, found.message.clinic_id), t.services.protocol
        )
        t.toast(texts.text("staff.handled_toast"))
        t.edit(inbox.staff_headline(found, zone, protocol), markup(inbox.staff_buttons(found)))
        return
    found = await inbox.start_reply(
        session=t.db,
        staff_user_id=staff.user_id,
        message_id=message_id,
        clinic_ids=staff.clinic_ids,
        now=t.now,
    )
    if found is None:
        t.toast(texts.text("staff.stale"))
        return
    t.send(
        texts.text("inbox.write_reply", name=found.patient.first_name, id=found.patient.id or 0),
        keyboards.choice(EN, [[("inbox.stop_button", "ib:x")]]),
    )


inbox_button = staff_turn(_inbox_button)


async def typed_reply(t: Turn) -> bool:
    """A staff member's text while a reply is open: delivered to the patient by the bot.
    False when the writer has no reply open (the text is then a patient's)."""
    user = t.update.effective_user
    if user is None:
        return False
    draft = await inbox.reply_draft(session=t.db, staff_user_id=user.id)
    if draft is None:
        return False
    staff = await staff_in(t.db, t.services, t.update)
    if staff is None:  # no longer staff: the draft goes
        await inbox.drop_reply_draft(session=t.db, staff_user_id=user.id)
        return False
    texts = catalog(EN)
    if not t.text.strip():
        return True
    done = await inbox.reply(
        session=t.db,
        staff_user_id=staff.user_id,
        text=t.text,
        clinic_ids=staff.clinic_ids,
        now=t.now,
    )
    if done is None:
        t.send(texts.text("staff.stale"))
        return True
    zone = _zone(staff.clinic)
    name, patient_id = done.patient.first_name, done.patient.id or 0
    if done.due_at <= t.now:
        t.send(texts.text("inbox.reply_sent", name=name, id=patient_id))
    else:
        when = format_local(done.due_at, zone, EN, "datetime")
        t.send(texts.text("inbox.reply_later", name=name, id=patient_id, when=when))
    t.poke()
    return True
