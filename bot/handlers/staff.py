"""Clinic staff in Telegram: the inbox, patients, upcoming sessions, who is due, alerts,
broadcasts, invites and course plans. Plus the patient's "no more maintenance" button.

Every staff handler is a Turn body behind `staff_turn`: it first finds the clinics the caller
works for; each query then names that clinic, and each button's target row is re-checked
against it, so forged or stale callback data can never reach another clinic's patients.
Staff read the bot in their own Telegram language (the catalogs), on their clinic's clock.
Callback data: st:pp:<o|n><patient> (the /patients page older or newer than that patient) |
st:al:<checkin> | st:ba:<broadcast>:<audience> | st:bs:<broadcast>:<audience> |
st:bx:<broadcast> | ib:r:<message> | ib:h:<message> | ib:x | mnt:stop:<planned message>.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from telegram import (
    BotCommand,
    BotCommandScopeChat,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    MenuButtonWebApp,
    WebAppInfo,
)
from telegram.error import TelegramError
from telegram.ext import BaseHandler, CallbackQueryHandler, CommandHandler, filters

from bot import keyboards
from bot.context import AppContext
from bot.dashboard.auth import Keys
from bot.dates import parse_when
from bot.handlers.base import (
    Handler,
    Turn,
    callback_int,
    private_commands,
    transaction,
    turn,
)
from bot.telegram_sender import markup
from messages import texts
from messages.protocol import Protocol
from messages.texts import Reader
from scheduler import broadcast, care, clinics, courses, dashboard, inbox, invites
from scheduler.models import Broadcast, BroadcastState, Clinic, CoursePlanKind, PlannedMessage
from scheduler.protocols import clinic_protocol

log = logging.getLogger("aftercare.staff")

UPCOMING_DAYS = 14
STAFF_MENU = (
    "inbox",
    "patients",
    "upcoming",
    "due",
    "alerts",
    "broadcast",
    "invite",
    "course",
    "dashboard",
    "staff",
)


def handlers() -> Sequence[BaseHandler[Any, AppContext, Any]]:
    """The clinic side's handlers; registered before the patient's (a staff invite is a
    /start with a payload, and must not make the staff member a patient)."""
    private = filters.ChatType.PRIVATE
    return [
        CommandHandler("start", join, filters=private & filters.Regex(r"^/start(@\w+)? staff-")),
        *private_commands(
            {
                "staff": help_command,
                "patients": patients_command,
                "upcoming": upcoming_command,
                "due": due_command,
                "alerts": alerts_command,
                "broadcast": broadcast_command,
                "invite": invite_command,
                "course": course_command,
                "inbox": inbox_command,
                "dashboard": dashboard_command,
            }
        ),
        CallbackQueryHandler(patients_button, pattern=r"^st:pp:"),
        CallbackQueryHandler(handled_button, pattern=r"^st:al:"),
        CallbackQueryHandler(broadcast_button, pattern=r"^st:b[asx]:"),
        CallbackQueryHandler(maintenance_stop_button, pattern=r"^mnt:stop:"),
        CallbackQueryHandler(inbox_button, pattern=r"^ib:"),
    ]


class Staff(msgspec.Struct, frozen=True):
    """The caller, authorised: the clinic their commands act on, every clinic of theirs, and
    how they read (their language, the clinic's clock)."""

    user_id: int
    clinic: Clinic
    clinic_ids: tuple[int, ...]
    reader: Reader

    @property
    def clinic_id(self) -> int:
        assert self.clinic.id is not None
        return self.clinic.id

    def protocol(self, default: Protocol) -> Protocol:
        return clinic_protocol(self.clinic, default)


async def staff_in(t: Turn) -> Staff | None:
    """The caller as staff (in the turn's transaction), or None."""
    user = t.update.effective_user
    if user is None:
        return None
    services = t.services
    default = await care.ensure_default_clinic(session=t.db, info=services.clinic, now=t.now)
    assert default.id is not None
    ids = await clinics.staff_clinic_ids(
        session=t.db,
        tg_user_id=user.id,
        configured=services.settings.staff_user_ids,
        default_clinic_id=default.id,
    )
    if not ids:
        return None
    await clinics.note_staff_language(
        session=t.db,
        tg_user_id=user.id,
        name=user.first_name,
        language=t.lang,
        configured=services.settings.staff_user_ids,
        default_clinic_id=default.id,
        now=t.now,
    )
    # Someone working for several clinics acts on the first they joined.
    clinic = default if ids[0] == default.id else await t.db.get(Clinic, ids[0])
    assert clinic is not None
    reader = Reader.of(
        t.lang, ZoneInfo(clinic.timezone), clinic_protocol(clinic, services.protocol)
    )
    return Staff(user.id, clinic, tuple(ids), reader)


StaffBody = Callable[[Turn, Staff], Awaitable[None]]


def staff_turn(body: StaffBody) -> Handler:
    """A Turn body for staff only: everyone else is told "this is for the clinic's staff"."""

    async def guarded(t: Turn) -> None:
        staff = await staff_in(t)
        if staff is None:
            if t.update.callback_query is not None:
                t.toast(t.t("staff.not_staff"))
            else:
                t.say("staff.not_staff")
            return
        await offer_mini_app(t, staff)
        await body(t, staff)

    guarded.__doc__ = body.__doc__
    return turn("anyone", short=False)(guarded)


def _fields(t: Turn, parts: int) -> list[str] | None:
    """The pressed button's data split into exactly `parts` fields (None: forged, stale)."""
    data = t.data
    fields = data.split(":") if len(data) <= 64 else []
    return fields if len(fields) == parts else None


def _button(text: str, data: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(text, callback_data=data)


def _command_text(t: Turn) -> str:
    """What follows the command, newlines kept (context.args would lose them)."""
    parts = t.text.split(maxsplit=1)
    return parts[1].strip() if len(parts) == 2 else ""


# -- joining, /staff ------------------------------------------------------------------------


@turn("anyone")
async def join(t: Turn) -> None:
    """/start staff-<code>: become staff of the link's clinic."""
    user, chat = t.update.effective_user, t.update.effective_chat
    if user is None or chat is None or not t.context.args:
        return
    clinic = await invites.redeem_staff(
        session=t.db,
        payload=t.context.args[0],
        tg_user_id=user.id,
        chat_id=chat.id,
        name=user.first_name,
        language=t.lang,
        now=t.now,
    )
    if clinic is None:
        t.say("staff.invite_invalid")
        return
    log.info("staff joined clinic=%s", clinic.id)
    t.say("staff.joined", clinic=clinic.name)
    staff = await staff_in(t)
    assert staff is not None
    await offer_mini_app(t, staff)
    await staff_help(t, staff)


async def staff_help(t: Turn, staff: Staff) -> None:
    """/staff (and a staff member's /start): the staff commands, and this chat's menu."""
    chat = t.update.effective_chat
    t.send(staff.reader.t("staff.help", clinic=staff.clinic.name))
    if chat is not None:
        chat_id, reader = chat.id, staff.reader
        t.later(lambda: set_staff_menu(t.context, chat_id, reader))


help_command = staff_turn(staff_help)


async def set_staff_menu(context: AppContext, chat_id: int, reader: Reader) -> None:
    """The staff commands in this chat's menu (setMyCommands, scoped to the chat)."""
    await context.bot.set_my_commands(
        [BotCommand(name, reader.t(f"staff_menu.{name}")) for name in STAFF_MENU],
        scope=BotCommandScopeChat(chat_id),
    )


async def offer_mini_app(t: Turn, staff: Staff) -> None:
    """At a staff member's first staff command (or /dashboard) in their private chat, when
    the dashboard is served over HTTPS (Telegram opens Mini Apps only there): the Mini App
    as the chat's menu button, set after the commit. Only staff get here; a patient's chat
    keeps the bot's default menu."""
    base = t.services.settings.dashboard_base
    chat = t.update.effective_chat
    if base is None or not base.startswith("https://") or chat is None or chat.type != "private":
        return
    url = f"{base}/dashboard/app"
    if not await clinics.menu_button_missing(session=t.db, tg_user_id=staff.user_id, url=url):
        return
    chat_id, user_id, text = chat.id, staff.user_id, str(staff.reader.t("staff.dashboard_app"))
    t.later(lambda: set_mini_app_button(t.context, chat_id, user_id, url, text))


async def set_mini_app_button(
    context: AppContext, chat_id: int, user_id: int, url: str, text: str
) -> None:
    """setChatMenuButton with a MenuButtonWebApp for this chat; remembered once Telegram took
    it (a refusal or a network failure: tried again at the next staff command)."""
    try:
        await context.bot.set_chat_menu_button(
            chat_id=chat_id, menu_button=MenuButtonWebApp(text, WebAppInfo(url))
        )
    except TelegramError as exc:
        log.warning("Mini App menu button not set: %s", type(exc).__name__)
        return
    async with transaction(context.services) as db:
        await clinics.note_menu_button(session=db, tg_user_id=user_id, url=url)


# -- /patients, /upcoming, /due -------------------------------------------------------------


async def _patients_page(
    t: Turn, staff: Staff, older_than: int | None = None, newer_than: int | None = None
) -> tuple[str, InlineKeyboardMarkup | None]:
    found = await clinics.patients_page(
        session=t.db,
        clinic_id=staff.clinic_id,
        now=t.now,
        older_than=older_than,
        newer_than=newer_than,
    )
    rows = []
    for line in found.lines:
        status = clinics.patient_status(line.patient)
        if status == "status_next" and line.next_start is None:
            status = "status_none"
        ahead = line.next_start if status == "status_next" else None
        rows.append(
            texts.PatientRow(
                line.patient.id or 0, line.patient.first_name, line.flagged, status, ahead
            )
        )
    nav = []
    if found.newer is not None:
        nav.append(_button(staff.reader.t("staff.previous"), f"st:pp:n{found.newer}"))
    if found.older is not None:
        nav.append(_button(staff.reader.t("staff.next"), f"st:pp:o{found.older}"))
    text = texts.patients_page(staff.reader, staff.clinic.name, found.page, found.pages, rows)
    return text, InlineKeyboardMarkup([nav]) if nav and rows else None


async def _patients(t: Turn, staff: Staff) -> None:
    """/patients: the clinic's patients, ten a page."""
    t.send(*await _patients_page(t, staff))


patients_command = staff_turn(_patients)


async def _patients_button(t: Turn, staff: Staff) -> None:
    """Another page of /patients: the one older or newer than the patient the button names."""
    fields = _fields(t, 3)
    key = fields[2] if fields else ""
    patient_id = callback_int(key[1:]) if key[:1] in ("o", "n") else None
    if patient_id is None:
        t.toast(staff.reader.t("staff.stale"))
        return
    if key[0] == "o":
        t.edit(*await _patients_page(t, staff, older_than=patient_id))
    else:
        t.edit(*await _patients_page(t, staff, newer_than=patient_id))


patients_button = staff_turn(_patients_button)


async def _upcoming(t: Turn, staff: Staff) -> None:
    """/upcoming: sessions in the next days, with the screening flags."""
    found = await clinics.upcoming_sessions(
        session=t.db, clinic_id=staff.clinic_id, now=t.now, days=UPCOMING_DAYS
    )
    shorts = {q.key: q.short for q in staff.protocol(t.services.protocol).screening}
    rows = [
        texts.Upcoming(
            treatment.start_at,
            patient.id or 0,
            patient.first_name,
            [shorts[key] for key, yes in treatment.screening.items() if yes and key in shorts],
        )
        for treatment, patient in found
    ]
    t.send(texts.upcoming(staff.reader, UPCOMING_DAYS, staff.clinic.timezone, rows))


upcoming_command = staff_turn(_upcoming)


async def _due(t: Turn, staff: Staff) -> None:
    """/due: due for maintenance, with no session booked."""
    found = await clinics.due_for_maintenance(
        session=t.db, clinic_id=staff.clinic_id, protocol=t.services.protocol, now=t.now
    )
    rows = [texts.DueRow(d.patient.id or 0, d.patient.first_name, d.last_end) for d in found.shown]
    t.send(texts.due(staff.reader, rows, found.total))


due_command = staff_turn(_due)


# -- /alerts --------------------------------------------------------------------------------


async def _alerts(t: Turn, staff: Staff) -> None:
    """/alerts: side-effect reports, newest first, each with a button to mark it handled."""
    found = await clinics.alerts(session=t.db, clinic_id=staff.clinic_id)
    if not found:
        t.send(staff.reader.t("staff.no_alerts"))
        return
    protocol = staff.protocol(t.services.protocol)
    t.send(staff.reader.t("staff.alerts_title"))
    for report in found:
        checkin = report[0]
        handle = _button(staff.reader.t("staff.handle_button"), f"st:al:{checkin.id}")
        buttons = None if checkin.handled_at is not None else InlineKeyboardMarkup([[handle]])
        t.send(texts.alert(staff.reader, clinics.alert_values(protocol, report)), buttons)


alerts_command = staff_turn(_alerts)


async def _handled_button(t: Turn, staff: Staff) -> None:
    """Mark a side-effect report handled (only one of the caller's clinics' reports)."""
    fields = _fields(t, 3)
    checkin_id = callback_int(fields[2]) if fields else None
    found = (
        await clinics.mark_handled(
            session=t.db,
            checkin_id=checkin_id,
            clinic_ids=staff.clinic_ids,
            by=staff.user_id,
            now=t.now,
        )
        if checkin_id is not None
        else None
    )
    if found is None:
        t.toast(staff.reader.t("staff.stale"))
        return
    t.toast(staff.reader.t("staff.handled_toast"))
    t.edit(
        texts.alert(staff.reader, clinics.alert_values(staff.protocol(t.services.protocol), found))
    )


handled_button = staff_turn(_handled_button)


# -- /broadcast -----------------------------------------------------------------------------


async def _broadcast(t: Turn, staff: Staff) -> None:
    """/broadcast <text>: a draft; then the audience, the preview, and the confirmation."""
    text = _command_text(t)
    if not text:
        t.send(staff.reader.t("broadcast.usage"))
        return
    draft = await broadcast.create_draft(
        session=t.db, clinic_id=staff.clinic_id, created_by=staff.user_id, text=text, now=t.now
    )
    rows = []
    for audience in broadcast.AUDIENCES:
        size = await _audience_size(t, staff.clinic_id, audience)
        label = staff.reader.t(f"broadcast.audience_button.{audience}", count=size)
        rows.append([_button(label, f"st:ba:{draft.id}:{audience}")])
    rows.append([_button(staff.reader.t("broadcast.cancel_button"), f"st:bx:{draft.id}")])
    t.send(staff.reader.t("broadcast.choose_audience"), InlineKeyboardMarkup(rows))


broadcast_command = staff_turn(_broadcast)


async def _audience_size(t: Turn, clinic_id: int, audience: str) -> int:
    """How many patients of the clinic the audience reaches now."""
    return await broadcast.audience_size(
        session=t.db,
        clinic_id=clinic_id,
        audience=audience,
        protocol=t.services.protocol,
        now=t.now,
    )


async def _broadcast_button(t: Turn, staff: Staff) -> None:
    """Audience chosen (preview), Send, or Cancel; only on a draft of the caller's clinic."""
    data = t.data
    fields = _fields(t, 4) if data.startswith(("st:ba:", "st:bs:")) else _fields(t, 3)
    broadcast_id = callback_int(fields[2]) if fields else None
    audience = fields[3] if fields and len(fields) == 4 else None
    draft = await t.db.get(Broadcast, broadcast_id) if broadcast_id else None
    if (
        fields is None
        or draft is None
        or draft.clinic_id not in staff.clinic_ids
        or draft.state != BroadcastState.DRAFT
        or (audience is not None and audience not in broadcast.AUDIENCES)
    ):
        t.toast(staff.reader.t("staff.stale"))
        return
    if fields[1] == "bx":
        await broadcast.cancel_draft(session=t.db, draft=draft)
        t.edit(staff.reader.t("broadcast.cancelled"))
    elif fields[1] == "ba" and audience is not None:
        await _preview(t, staff, draft, audience)
    elif audience is not None:  # "bs"
        await _start(t, staff, draft, audience)


broadcast_button = staff_turn(_broadcast_button)


async def _preview(t: Turn, staff: Staff, draft: Broadcast, audience: str) -> None:
    """The broadcast as patients will read it, to how many, with Send and Cancel."""
    reader = staff.reader
    size = await _audience_size(t, draft.clinic_id, audience)
    cancel = _button(reader.t("broadcast.cancel_button"), f"st:bx:{draft.id}")
    if not size:
        t.edit(reader.t("broadcast.nobody"), InlineKeyboardMarkup([[cancel]]))
        return
    clinic = await t.db.get(Clinic, draft.clinic_id)
    assert clinic is not None
    text = reader.t(
        "broadcast.preview",
        preview=texts.broadcast(reader.lang, clinic.name, draft.text),
        count=size,
        audience=reader.t(f"broadcast.audience.{audience}"),
    )
    send = _button(reader.t("broadcast.send_button", count=size), f"st:bs:{draft.id}:{audience}")
    t.edit(text, InlineKeyboardMarkup([[send, cancel]]))


async def _start(t: Turn, staff: Staff, draft: Broadcast, audience: str) -> None:
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
        t.toast(staff.reader.t("staff.stale"))
        return
    counts = await broadcast.progress(session=t.db, broadcast_id=draft.id)
    params = broadcast.report_params(counts)
    t.edit(staff.reader.t("broadcast.progress", id=draft.id, **params))
    log.info(
        "broadcast started id=%s clinic=%s recipients=%s", draft.id, draft.clinic_id, counts.total
    )
    t.poke()


# -- /invite --------------------------------------------------------------------------------


def qr_png(link: str) -> bytes:
    """The link as a QR code image (PNG)."""
    # Imported on the first /invite, not at start-up: qrcode brings Pillow (memory).
    import qrcode

    image = qrcode.make(link)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def _invite(t: Turn, staff: Staff) -> None:
    """/invite: the clinic's patient link and QR code; /invite <date time>: a per-booking one."""
    zone = ZoneInfo(staff.clinic.timezone)
    typed = _command_text(t)
    start_at: datetime | None = None
    if typed:
        parsed = parse_when(typed, tz=zone, now=t.now, language=staff.reader.lang)
        if parsed is None or parsed.at is None:
            t.send(staff.reader.t("staff.invite_bad_date"))
            return
        start_at = datetime.combine(parsed.day, parsed.at, tzinfo=zone)
    if start_at is None:
        link_to = await invites.clinic_invite(session=t.db, clinic_id=staff.clinic_id, now=t.now)
    else:
        link_to = await invites.booking_invite(
            session=t.db, clinic_id=staff.clinic_id, start_at=start_at, now=t.now
        )
    link = invites.deep_link(t.context.bot.username, link_to)
    t.photo(qr_png(link), texts.invite(staff.reader, staff.clinic.name, link, start_at))


invite_command = staff_turn(_invite)


# -- /course --------------------------------------------------------------------------------


async def _course(t: Turn, staff: Staff) -> None:
    """/course <patient> <mild|noticeable|maintenance> [sessions]: a new course plan."""
    reader, protocol = staff.reader, t.services.protocol
    args = t.context.args or []
    ranges = {p.key: p.sessions for p in protocol.course.plans}
    patient_id = callback_int(args[0].lstrip("#")) if args else None
    plan = args[1].lower() if len(args) > 1 else ""
    if patient_id is None or plan not in {*ranges, CoursePlanKind.MAINTENANCE}:
        (mild_min, mild_max), (noticeable_min, noticeable_max) = (
            ranges.get("mild", (0, 0)),
            ranges.get("noticeable", (0, 0)),
        )
        t.send(
            reader.t(
                "staff.course_usage",
                mild_min=mild_min,
                mild_max=mild_max,
                noticeable_min=noticeable_min,
                noticeable_max=noticeable_max,
            )
        )
        return
    lo, hi = courses.plan_range(protocol, plan)
    sessions = callback_int(args[2]) if len(args) > 2 else lo
    if sessions is None or not lo <= sessions <= hi:
        t.send(reader.t("staff.course_bad_sessions", min=lo, max=hi))
        return
    patient = await clinics.clinic_patient(
        session=t.db, clinic_id=staff.clinic_id, patient_id=patient_id
    )
    if patient is None:
        t.send(reader.t("staff.course_unknown_patient", id=patient_id))
        return
    await courses.set_plan(
        session=t.db, patient_id=patient_id, plan=plan, sessions=sessions, now=t.now
    )
    t.send(reader.t("staff.course_set", id=patient_id, plan=plan, sessions=sessions))


course_command = staff_turn(_course)


# -- /dashboard -------------------------------------------------------------------------------


async def _dashboard(t: Turn, staff: Staff) -> None:
    """/dashboard: a one-time login link to the clinic dashboard (valid 10 minutes), and the
    Mini App's button when the dashboard is served over HTTPS (Telegram's requirement)."""
    base = t.services.settings.dashboard_base
    if base is None:
        t.send(staff.reader.t("staff.dashboard_off"))
        return
    # The token itself is only in this message; the database keeps its hash.
    token = Keys(t.context.bot.token).new_login_token()
    await dashboard.issue_login(
        session=t.db, token=token, tg_user_id=staff.user_id, language=staff.reader.lang, now=t.now
    )
    buttons = None
    if base.startswith("https://"):
        app = WebAppInfo(f"{base}/dashboard/app")
        buttons = InlineKeyboardMarkup(
            [[InlineKeyboardButton(staff.reader.t("staff.dashboard_app"), web_app=app)]]
        )
    t.send(
        staff.reader.t("staff.dashboard_link", link=f"{base}/dashboard/login?token={token}"),
        buttons,
    )


dashboard_command = staff_turn(_dashboard)


# -- the patient's side of maintenance --------------------------------------------------------


@turn()
async def maintenance_stop_button(t: Turn) -> None:
    """Under a maintenance reminder: stop recurring maintenance (the caller's own only)."""
    fields = _fields(t, 3)
    message_id = callback_int(fields[2]) if fields else None
    row = await t.db.get(PlannedMessage, message_id) if message_id is not None else None
    if row is None or row.patient_id != t.me.id:
        t.stale()
        return
    assert t.me.id is not None
    await courses.stop_maintenance(session=t.db, patient_id=t.me.id, now=t.now)
    if t.pressed_html:  # the reminder stays, without its buttons
        t.edit(t.pressed_html)
    t.say("maint.stopped")


# -- /inbox: what patients wrote, and the answers ---------------------------------------------


async def _notice(
    t: Turn, staff: Staff, entry: inbox.Entry
) -> tuple[str, InlineKeyboardMarkup | None]:
    clinic = await t.db.get(Clinic, entry.message.clinic_id)
    protocol = clinic_protocol(clinic, t.services.protocol)
    text = texts.notice(staff.reader, inbox.notice_of(entry, protocol))
    return text, markup(inbox.staff_buttons(entry, staff.reader))


async def _inbox(t: Turn, staff: Staff) -> None:
    """/inbox: the newest messages from patients (red flags, notes, screening flags too),
    each with Reply and Mark handled."""
    found, open_count = await inbox.entries(session=t.db, clinic_ids=staff.clinic_ids)
    if not found:
        t.send(staff.reader.t("inbox.empty"))
        return
    t.send(staff.reader.t("inbox.title", open=open_count, shown=len(found)))
    for entry in found:
        t.send(*await _notice(t, staff, entry))


inbox_command = staff_turn(_inbox)


async def _inbox_button(t: Turn, staff: Staff) -> None:
    """Reply (the next text answers), Mark handled, or stop replying."""
    reader = staff.reader
    fields = t.data.split(":")
    action = fields[1] if len(fields) >= 2 else ""
    if action == "x" and len(fields) == 2:
        await inbox.drop_reply_draft(session=t.db, staff_user_id=staff.user_id)
        t.edit(reader.t("inbox.reply_dropped"))
        return
    message_id = callback_int(fields[2]) if len(fields) == 3 else None
    if message_id is None or action not in ("r", "h"):
        t.toast(reader.t("staff.stale"))
        return
    if action == "h":
        found = await inbox.mark_handled(
            session=t.db,
            message_id=message_id,
            clinic_ids=staff.clinic_ids,
            by=staff.user_id,
            now=t.now,
        )
        if found is None:
            t.toast(reader.t("staff.stale"))
            return
        t.toast(reader.t("staff.handled_toast"))
        t.edit(*await _notice(t, staff, found))
        return
    found = await inbox.start_reply(
        session=t.db,
        staff_user_id=staff.user_id,
        message_id=message_id,
        clinic_ids=staff.clinic_ids,
        now=t.now,
    )
    if found is None:
        t.toast(reader.t("staff.stale"))
        return
    t.send(
        reader.t("inbox.write_reply", name=found.patient.first_name, id=found.patient.id or 0),
        keyboards.choice(reader.lang, [[("inbox.stop_button", "ib:x")]]),
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
    staff = await staff_in(t)
    if staff is None:  # no longer staff: the draft goes
        await inbox.drop_reply_draft(session=t.db, staff_user_id=user.id)
        return False
    if not t.text.strip():
        return True
    done = await inbox.reply(
        session=t.db,
        staff_user_id=staff.user_id,
        text=t.text,
        clinic_ids=staff.clinic_ids,
        now=t.now,
    )
    reader = staff.reader
    if done is None:
        t.send(reader.t("staff.stale"))
        return True
    name, patient_id = done.patient.first_name, done.patient.id or 0
    if done.due_at <= t.now:
        t.send(reader.t("inbox.reply_sent", name=name, id=patient_id))
    else:
        when = reader.at(done.due_at)
        t.send(reader.t("inbox.reply_later", name=name, id=patient_id, when=when))
    t.poke()
    return True
