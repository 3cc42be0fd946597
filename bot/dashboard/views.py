"""The dashboard's routes and views: each parses the request, calls the data functions that
the staff chat commands call (scheduler/clinics.py, inbox.py) or scheduler/dashboard.py, and
renders a template with texts from the catalogs, in the staff member's language.

Every page of a clinic lives under `/dashboard/c/<clinic id>/`; `clinic_view` checks that the
session's user is staff of that clinic before anything else, and answers 404 otherwise, so a
clinic's pages, actions and ids look the same as ids that do not exist to everyone else.
Each row an action names is found through the clinic's own query (an inbox message, a
check-in or a patient of another clinic is not found), never by id alone.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import jinja2
import msgspec
from aiohttp import web
from markupsafe import Markup

from bot.context import Services
from bot.dashboard import auth
from bot.handlers.base import language_for
from bot.handlers.patient import MAX_AHEAD
from messages import texts
from messages.protocol import Protocol, local_to_utc
from messages.render import Html, available_languages, catalog
from messages.texts import Reader
from scheduler import broadcast, clinics, courses, dashboard, failures, importer, inbox, patients
from scheduler.care import DEFAULT_CLINIC_SLUG, BookingError, ensure_default_clinic
from scheduler.models import (
    Broadcast,
    BroadcastState,
    Clinic,
    CoursePlanKind,
    DashboardSession,
    MessageState,
    Patient,
)
from scheduler.protocols import clinic_protocol

log = logging.getLogger("aftercare.dashboard")

T = TypeVar("T")

HERE = Path(__file__).parent
PREFIX = "/dashboard"
COOKIE = "aftercare_dashboard"
TELEGRAM_WEB_APP_JS = "https://telegram.org/js/telegram-web-app.js"
INBOX_SHOWN = 50
ALERTS_SHOWN = 30
MAX_FORM = 64_000

# Pages say where they may be framed (Telegram Web shows a Mini App in a frame), and never
# send their address on (a login link's token is in it) or let anything be cached.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' https://telegram.org; style-src 'self'; "
        "img-src 'self' data:; frame-ancestors 'self' https://web.telegram.org"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


class Config(msgspec.Struct, frozen=True):
    """What the dashboard needs besides the services: the bot token (its keys), the public
    address, and where the Mini App page loads Telegram's script from."""

    bot_token: str
    base_url: str
    telegram_js: str = TELEGRAM_WEB_APP_JS

    @property
    def secure(self) -> bool:
        return self.base_url.startswith("https://")


SERVICES = web.AppKey("services", Services)
CONFIG = web.AppKey("config", Config)
KEYS = web.AppKey("keys", auth.Keys)
TEMPLATES = web.AppKey("templates", jinja2.Environment)
FORM = web.RequestKey("form", dict[str, str])


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


# -- who is asking ---------------------------------------------------------------------------


class Visitor(msgspec.Struct, frozen=True):
    """A logged-in staff member on one of their clinic's pages."""

    session: DashboardSession
    token: str
    clinic: Clinic
    clinic_ids: tuple[int, ...]
    reader: Reader
    protocol: Protocol
    csrf: str

    @property
    def clinic_id(self) -> int:
        assert self.clinic.id is not None
        return self.clinic.id


async def _clinic_ids(services: Services, db: Any, tg_user_id: int) -> list[int]:
    """The clinics this user is staff of (read only: the default clinic by its slug)."""
    default = await clinics.clinic_by_slug(session=db, slug=DEFAULT_CLINIC_SLUG)
    return await clinics.staff_clinic_ids(
        session=db,
        tg_user_id=tg_user_id,
        configured=services.settings.staff_user_ids if default is not None else [],
        default_clinic_id=default.id if default is not None and default.id else 0,
    )


def _page(
    request: web.Request, template: str, reader: Reader, status: int = 200, **values: Any
) -> web.Response:
    """A rendered template, in the reader's language and direction."""

    def t(key: str, /, **params: object) -> Markup:
        return Markup(reader.t(key, **params))  # catalog texts are escaped HTML already

    body = (
        request.app[TEMPLATES]
        .get_template(template)
        .render(
            t=t,
            reader=reader,
            lang=reader.lang,
            rtl=catalog(reader.lang).rtl,
            prefix=PREFIX,
            num=lambda n: reader.digits(str(n)),
            **values,
        )
    )
    return web.Response(text=body, status=status, content_type="text/html", headers=HEADERS)


def _plain_reader(request: web.Request, lang: str | None = None) -> Reader:
    """A reader for pages outside a clinic (login, refusals): the language the browser or
    Telegram asked for, on the deployment's clock."""
    services = request.app[SERVICES]
    if lang is None:
        lang = language_for(request.headers.get("Accept-Language", "en")[:2])
    return Reader.of(language_for(lang), services.settings.zone, services.protocol)


def _message(request: web.Request, key: str, status: int, lang: str | None = None) -> web.Response:
    return _page(request, "message.html", _plain_reader(request, lang), status, key=key)


async def _session(request: web.Request, db: Any) -> tuple[DashboardSession, str] | None:
    token = request.cookies.get(COOKIE, "")
    if not token or len(token) > 100:
        return None
    found = await dashboard.session_of(
        session=db, token=token, now=request.app[SERVICES].clock.now()
    )
    return (found, token) if found is not None else None


View = Callable[[web.Request, Visitor, Any], Awaitable[web.StreamResponse]]


def clinic_view(
    *, changes: bool = False
) -> Callable[[View], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """A page or action of one clinic: a live session, its user staff of that clinic (404
    otherwise), and for an action (`changes`) a POST with the session's CSRF token, run in
    one transaction; the dispatcher is poked after the commit."""

    def wrap(view: View) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        @functools.wraps(view)
        async def handler(request: web.Request) -> web.StreamResponse:
            services = request.app[SERVICES]
            form: dict[str, str] = {}
            if changes:
                posted = await request.post()
                form = {k: v for k, v in posted.items() if isinstance(v, str)}
            async with services.sessions() as db, db.begin():
                found = await _session(request, db)
                if found is None:
                    return _message(request, "dashboard.need_login", 401)
                opened, token = found
                clinic_id = _int(request.match_info.get("clinic", ""))
                ids = await _clinic_ids(services, db, opened.tg_user_id)
                clinic = await db.get(Clinic, clinic_id) if clinic_id in ids else None
                if clinic is None:
                    return _message(request, "dashboard.not_found", 404, opened.language)
                protocol = clinic_protocol(clinic, services.protocol)
                reader = Reader.of(opened.language, ZoneInfo(clinic.timezone), protocol)
                keys = request.app[KEYS]
                visitor = Visitor(
                    opened, token, clinic, tuple(ids), reader, protocol, keys.csrf(token)
                )
                if changes and not keys.csrf_ok(token, form.get("csrf", "")):
                    return _page(
                        request, "message.html", reader, 403, key="dashboard.form_expired"
                    )
                request[FORM] = form
                response = await view(request, visitor, db)
            if changes:
                services.poke()
            return response

        return handler

    return wrap


def _int(value: str) -> int | None:
    return int(value) if value.isdigit() and len(value) <= 12 else None


def _path_id(request: web.Request, part: str) -> dict[str, int] | None:
    """The id in the path's `part` (`{patient}`, `{message}`, ...) as the keyword the data
    functions take it by (`patient_id=`, `message_id=`, ...); None if it is not an id."""
    row_id = _int(request.match_info[part])
    return {f"{part}_id": row_id} if row_id is not None else None


async def _clinic_row(
    request: web.Request,
    visitor: Visitor,
    db: Any,
    find: Callable[..., Awaitable[T | None]],
    part: str,
) -> T | None:
    """The row the path's `part` names, found by `find` among this clinic's rows only; None
    if the part is not an id or names no row of this clinic."""
    named = _path_id(request, part)
    if named is None:
        return None
    return await find(session=db, clinic_id=visitor.clinic_id, **named)


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={**HEADERS, "Location": location})


def _cookie(response: web.StreamResponse, config: Config, token: str, *, framed: bool) -> None:
    """The session cookie: HttpOnly, for the dashboard's paths, expiring with the session.
    SameSite=Lax in a browser; a Mini App inside Telegram Web is a frame of another site,
    whose cookies only SameSite=None (with Secure, so over HTTPS only) lets through."""
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(dashboard.SESSION_LIFE.total_seconds()),
        path=PREFIX,
        httponly=True,
        secure=config.secure,
        samesite="None" if framed and config.secure else "Lax",
    )


# -- getting in ------------------------------------------------------------------------------


async def login_page(request: web.Request) -> web.Response:
    """GET of a login link: a button that posts it. A link preview or a mail scanner that
    fetches the address uses nothing up."""
    token = request.query.get("token", "")
    reader = _plain_reader(request)
    return _page(request, "login.html", reader, token=token)


async def login(request: web.Request) -> web.StreamResponse:
    """POST of a login link: signed by us, unused, unexpired, its user staff: a session."""
    services, config, keys = request.app[SERVICES], request.app[CONFIG], request.app[KEYS]
    posted = await request.post()
    token = str(posted.get("token", ""))
    if not keys.login_token_signed(token):
        log.warning("dashboard login refused: a link the bot did not sign")
        return _message(request, "dashboard.login_refused", 403)
    now = services.clock.now()
    async with services.sessions() as db, db.begin():
        used = await dashboard.redeem_login(session=db, token=token, now=now)
        if used is None:
            log.warning("dashboard login refused: a used or expired link")
            return _message(request, "dashboard.login_refused", 403)
        if not await _clinic_ids(services, db, used.tg_user_id):
            return _message(request, "dashboard.not_staff", 403, used.language)
        session_token = auth.new_session_token()
        await dashboard.open_session(
            session=db,
            token=session_token,
            tg_user_id=used.tg_user_id,
            language=used.language,
            now=now,
        )
    log.info("dashboard login: staff user by login link")
    response = _see_other(f"{PREFIX}/")
    _cookie(response, config, session_token, framed=False)
    return response


async def mini_app(request: web.Request) -> web.Response:
    """The Mini App's page: Telegram's script hands it initData, which it posts to us."""
    config, services = request.app[CONFIG], request.app[SERVICES]
    async with services.sessions() as db:
        if await _session(request, db) is not None:
            # Reopened or reloaded inside Telegram: its initData was used up, the session
            # it opened goes on.
            return _see_other(f"{PREFIX}/")
    return _page(request, "miniapp.html", _plain_reader(request), telegram_js=config.telegram_js)


async def mini_app_login(request: web.Request) -> web.StreamResponse:
    """POST of the Mini App's initData: checked as Telegram says, its user staff: a session."""
    services, config = request.app[SERVICES], request.app[CONFIG]
    posted = await request.post()
    now = services.clock.now()
    user = auth.check_init_data(
        str(posted.get("init_data", "")), bot_token=config.bot_token, now=now
    )
    if user is None:
        log.warning("dashboard Mini App refused: initData not signed by Telegram, or stale")
        return web.json_response({"ok": False}, status=403, headers=HEADERS)
    lang = language_for(user.language_code)
    async with services.sessions() as db, db.begin():
        if not await _clinic_ids(services, db, user.id):
            return web.json_response({"ok": False}, status=403, headers=HEADERS)
        fresh = await dashboard.use_once(
            session=db,
            token=f"initdata:{user.hash}",
            tg_user_id=user.id,
            expires_at=user.signed_at + auth.INIT_DATA_LIFE,
            now=now,
        )
        if not fresh:
            log.warning("dashboard Mini App refused: initData used before")
            return web.json_response({"ok": False}, status=403, headers=HEADERS)
        session_token = auth.new_session_token()
        await dashboard.open_session(
            session=db, token=session_token, tg_user_id=user.id, language=lang, now=now
        )
    response = web.json_response({"ok": True, "next": f"{PREFIX}/"}, headers=HEADERS)
    _cookie(response, config, session_token, framed=True)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    """End the session (POST with its CSRF token); the cookie goes too."""
    services, keys = request.app[SERVICES], request.app[KEYS]
    posted = await request.post()
    async with services.sessions() as db, db.begin():
        found = await _session(request, db)
        if found is not None:
            opened, token = found
            if not keys.csrf_ok(token, str(posted.get("csrf", ""))):
                return _message(request, "dashboard.form_expired", 403, opened.language)
            await dashboard.close_session(session=db, token=token)
    response = _message(request, "dashboard.logged_out", 200)
    response.del_cookie(COOKIE, path=PREFIX)
    return response


async def home(request: web.Request) -> web.StreamResponse:
    """The first clinic of the user's, or why not."""
    services = request.app[SERVICES]
    async with services.sessions() as db:
        found = await _session(request, db)
        if found is None:
            return _message(request, "dashboard.need_login", 401)
        ids = await _clinic_ids(services, db, found[0].tg_user_id)
    if not ids:
        return _message(request, "dashboard.not_staff", 403, found[0].language)
    return _see_other(f"{PREFIX}/c/{ids[0]}/")


# -- pages -----------------------------------------------------------------------------------


def _base(visitor: Visitor, section: str) -> dict[str, Any]:
    return {
        "clinic": visitor.clinic,
        "clinic_url": f"{PREFIX}/c/{visitor.clinic_id}",
        "csrf": visitor.csrf,
        "section": section,
    }


class Bar(msgspec.Struct, frozen=True):
    """One day of the chart, in pixels of its height."""

    label: str
    title: str
    x: int
    sent: int
    expired: int
    failed: int


CHART_HEIGHT = 120
BAR_STEP = 12


def _bars(reader: Reader, days: Sequence[dashboard.DayCount]) -> list[Bar]:
    top = max((d.total for d in days), default=0) or 1
    scale = CHART_HEIGHT / top
    bars = []
    for i, d in enumerate(days):
        label = reader.calendar_day(d.day)
        title = reader.t(
            "dashboard.chart_day", day=label, sent=d.sent, expired=d.expired, failed=d.failed
        )
        bars.append(
            Bar(
                label,
                str(title),
                i * BAR_STEP,
                round(d.sent * scale),
                round(d.expired * scale),
                round(d.failed * scale),
            )
        )
    return bars


@clinic_view()
async def today_page(request: web.Request, visitor: Visitor, db: Any) -> web.StreamResponse:
    """Today: the last day's deliveries, what waits for staff, sessions ahead, the chart."""
    now = request.app[SERVICES].clock.now()
    figures = await dashboard.today(
        session=db, clinic_id=visitor.clinic_id, protocol=request.app[SERVICES].protocol, now=now
    )
    days = await dashboard.deliveries_per_day(
        session=db, clinic_id=visitor.clinic_id, zone=visitor.reader.tz, now=now
    )
    shorts = {q.key: q.short for q in visitor.protocol.screening}
    upcoming = [
        (treatment, patient, [shorts[k] for k in dashboard.flagged_keys(treatment) if k in shorts])
        for treatment, patient in figures.upcoming
    ]
    return _page(
        request,
        "today.html",
        visitor.reader,
        **_base(visitor, "today"),
        figures=figures,
        upcoming=upcoming,
        upcoming_days=dashboard.UPCOMING_DAYS,
        chart_days=dashboard.CHART_DAYS,
        bars=_bars(visitor.reader, days),
        chart_height=CHART_HEIGHT,
        chart_width=BAR_STEP * len(days),
    )


@clinic_view()
async def patients_page(request: web.Request, visitor: Visitor, db: Any) -> web.StreamResponse:
    """Patients: search by name, phone or #id; keyset pages ("More")."""
    query = request.query.get("q", "")[:100]
    after = request.query.get("after") or None
    found = await dashboard.find_patients(
        session=db, clinic_id=visitor.clinic_id, query=query, after=after
    )
    ahead = await dashboard.next_sessions(
        session=db,
        patient_ids=[p.id for p in found.patients if p.id is not None],
        now=request.app[SERVICES].clock.now(),
    )
    values = {
        **_base(visitor, "patients"),
        "query": query,
        "found": found,
        "statuses": {
            p.id: _status(visitor.reader, p, ahead.get(p.id or 0)) for p in found.patients
        },
    }
    if request.headers.get("HX-Request") == "true":
        return _page(request, "patients_rows.html", visitor.reader, **values)
    return _page(request, "patients.html", visitor.reader, **values)


@clinic_view()
async def patient_page(request: web.Request, visitor: Visitor, db: Any) -> web.StreamResponse:
    """A patient's file: sessions, screening, check-ins, the timeline, the messages."""
    found = await _clinic_row(request, visitor, db, dashboard.patient_file, "patient")
    if found is None:
        return _page(request, "message.html", visitor.reader, 404, key="dashboard.not_found")
    shorts = {q.key: q.short for q in visitor.protocol.screening}
    labels = {}
    for checkin in found.checkins:
        try:
            labels[checkin.option] = visitor.protocol.checkin_option(checkin.option).label
        except KeyError:
            labels[checkin.option] = ""
    yes = [shorts[k] for k, v in found.patient.conditions.items() if v == "yes" and k in shorts]
    reader = visitor.reader
    lasting = (
        Markup(reader.t("dashboard.lasting", answers=Html(", ".join(reader.t(s) for s in yes))))
        if yes
        else None
    )
    notice = _notice(request, reader, found)
    plans = [p.key for p in visitor.protocol.course.plans] + [CoursePlanKind.MAINTENANCE.value]
    now = request.app[SERVICES].clock.now()
    ahead = [s.start_at for s in found.sessions if s.state == "booked" and s.start_at > now]
    return _page(
        request,
        "patient.html",
        visitor.reader,
        **_base(visitor, "patients"),
        notice=notice,
        plans=plans,
        file=found,
        shorts=shorts,
        flagged=dashboard.flagged_keys,
        labels=labels,
        lasting=lasting,
        patient_status=_status(visitor.reader, found.patient, min(ahead, default=None)),
        movable={s.id for s in found.sessions if s.state == "booked" and s.end_at > now},
        field_time=lambda when: when.astimezone(visitor.reader.tz).strftime("%Y-%m-%dT%H:%M"),
        at=lambda when: visitor.reader.at(when) if when is not None else "",
    )


def _notice(request: web.Request, reader: Reader, found: dashboard.PatientFile) -> Markup | None:
    """What the action that led here did (its name in the query), said from the rows."""
    saved = request.query.get("saved")
    name = found.patient.first_name
    if saved == "course" and found.course is not None:
        return Markup(
            reader.t(
                "staff.course_set",
                id=found.patient.id or 0,
                plan=found.course.plan,
                sessions=found.course.sessions,
            )
        )
    if saved in ("moved", "cancelled"):
        session_id = _int(request.query.get("session", ""))
        treatment = next((s for s in found.sessions if s.id == session_id), None)
        if treatment is None:
            return None
        key = "dashboard.session_moved" if saved == "moved" else "dashboard.session_cancelled"
        return Markup(reader.t(key, when=reader.at(treatment.start_at)))
    if saved in ("paused", "already_paused", "resumed", "not_paused"):
        return Markup(reader.t(f"dashboard.{saved}", name=name))
    return None


def _status(reader: Reader, patient: Patient, next_start: datetime | None) -> Markup:
    """What the patient's reminders do now: blocked, paused, no consent, or their next session
    (the /patients line's words)."""
    status = clinics.patient_status(patient)
    if status != "status_next":
        return Markup(reader.t(f"staff.{status}"))
    if next_start is None:
        return Markup(reader.t("staff.status_none"))
    return Markup(reader.t("staff.status_next", when=reader.at(next_start)))


@clinic_view(changes=True)
async def patient_course(request: web.Request, visitor: Visitor, db: Any) -> web.StreamResponse:
    """A new course plan for the patient, as /course sets it (plan, and its sessions)."""
    form = request[FORM]
    plan, sessions = form.get("plan", ""), _int(form.get("sessions", "").strip())
    patient = await _patient_of(request, visitor, db)
    if patient is None:
        return _page(request, "message.html", visitor.reader, 404, key="dashboard.not_found")
    try:
        low, high = courses.plan_range(visitor.protocol, plan)
    except KeyError:
        return _page(request, "message.html", visitor.reader, 400, key="dashboard.bad_plan")
    if sessions is None or not low <= sessions <= high:
        text = visitor.reader.t("staff.course_bad_sessions", min=low, max=high)
        return _page(request, "message.html", visitor.reader, 400, key=None, text=Markup(text))
    await courses.set_plan(
        session=db,
        patient_id=patient.id or 0,
        plan=plan,
        sessions=sessions,
        now=request.app[SERVICES].clock.now(),
    )
    log.info("dashboard: course plan set for patient=%s", patient.id)
    return _see_other(f"{PREFIX}/c/{visitor.clinic_id}/patients/{patient.id}?saved=course")


async def _patient_of(request: web.Request, visitor: Visitor, db: Any) -> Patient | None:
    """The patient the path names, only if they are this clinic's."""
    return await _clinic_row(request, visitor, db, clinics.clinic_patient, "patient")


def _back_to(visitor: Visitor, patient: Patient, **query: str | int) -> web.Response:
    """303 to the patient's page, with what was done in its query (the page says it)."""
    url = f"{PREFIX}/c/{visitor.clinic_id}/patients/{patient.id}"
    return _see_other(f"{url}?{urlencode(query)}" if query else url)


def _local_time(value: str, zone: ZoneInfo) -> datetime | None:
    """A date and time typed on the clinic's clock ("2026-12-05T14:30", as a datetime-local
    field sends it, or with a space) as an aware UTC instant; None if it is not one."""
    value = value.strip().replace(" ", "T", 1)
    if not 16 <= len(value) <= 19:
        return None
    try:
        local = datetime.fromisoformat(value)
    except ValueError:
        return None
    if local.tzinfo is not None:
        return None
    return local_to_utc(local.date(), local.time().replace(second=0, microsecond=0), zone)


@clinic_view(changes=True)
async def session_move(request: web.Request, visitor: Visitor, db: Any) -> web.StreamResponse:
    """Move one of the patient's upcoming sessions, as /sessions' Move does (the same
    function: its pending reminders replanned), to a time on the clinic's clock; a time that
    has passed, lies on another session or is years ahead is refused, as the chat refuses
    it."""
    patient = await _patient_of(request, visitor, db)
    session_id = _int(request.match_info["session"])
    treatment = (
        await patients.own_session(session=db, patient_id=patient.id or 0, session_id=session_id)
        if patient is not None and session_id is not None
        else None
    )
    if patient is None or treatment is None:
        return _page(request, "message.html", visitor.reader, 404, key="dashboard.not_found")
    reader, now = visitor.reader, request.app[SERVICES].clock.now()
    start = _local_time(request[FORM].get("when", ""), reader.tz)
    if start is None:
        return _page(request, "message.html", reader, 400, key="dashboard.move_bad_time")
    if start.astimezone(reader.tz).date() > now.astimezone(reader.tz).date() + MAX_AHEAD:
        return _page(request, "message.html", reader, 400, key="dashboard.move_too_far")
    try:
        await patients.reschedule_session(
            session=db,
            patient=patient,
            session_id=session_id or 0,
            start=start,
            protocol=request.app[SERVICES].protocol,
            now=now,
            by_clinic=True,
        )
    except BookingError as exc:
        status, key = (409, "dashboard.stale") if exc.reason == "not_found" else (400, "")
        key = key or f"dashboard.move_{exc.reason}"
        return _page(request, "message.html", reader, status, key=key)
    log.info("dashboard: session=%s of patient=%s moved", session_id, patient.id)
    return _back_to(visitor, patient, saved="moved", session=session_id or 0)


@clinic_view(changes=True)
async def session_cancel(request: web.Request, visitor: Visitor, db: Any) -> web.StreamResponse:
    """Cancel one of the patient's upcoming sessions and its reminders, as /sessions' Cancel
    does (the patient's other sessions replanned)."""
    patient = await _patient_of(request, visitor, db)
    session_id = _int(request.match_info["session"])
    if patient is None or session_id is None:
        return _page(request, "message.html", visitor.reader, 404, key="dashboard.not_found")
    if (
        await patients.own_session(session=db, patient_id=patient.id or 0, session_id=session_id)
        is None
    ):
        return _page(request, "message.html", visitor.reader, 404, key="dashboard.not_found")
    try:
        await patients.cancel_session(
            session=db,
            patient=patient,
            session_id=session_id,
            protocol=request.app[SERVICES].protocol,
            now=request.app[SERVICES].clock.now(),
            by_clinic=True,
        )
    except BookingError:
        return _page(request, "message.html", visitor.reader, 409, key="dashboard.stale")
    log.info("dashboard: session=%s of patient=%s cancelled", session_id, patient.id)
    return _back_to(visitor, patient, saved="cancelled", session=session_id)


@clinic_view(changes=True)
async def patient_pause(request: web.Request, visitor: Visitor, db: Any) -> web.StreamResponse:
    """Pause the patient's reminders, as /pause does."""
    patient = await _patient_of(request, visitor, db)
    if patient is None:
        return _page(request, "message.html", visitor.reader, 404, key="dashboard.not_found")
    changed = await patients.pause(
        session=db, patient=patient, now=request.app[SERVICES].clock.now()
    )
    log.info("dashboard: reminders of patient=%s paused", patient.id)
    return _back_to(visitor, patient, saved="paused" if changed else "already_paused")


@clinic_view(changes=True)
async def patient_resume(request: web.Request, visitor: Visitor, db: Any) -> web.StreamResponse:
    """Resume the patient's reminders, as /resume does: still-valid ones are replanned from
    now, the rest expire."""
    patient = await _patient_of(request, visitor, db)
    if patient is None:
        return _page(request, "message.html", visitor.reader, 404, key="dashboard.not_found")
    changed = await patients.resume(
        session=db,
        patient=patient,
        protocol=request.app[SERVICES].protocol,
        now=request.app[SERVICES].clock.now(),
    )
    log.info("dashboard: reminders of patient=%s resumed", patient.id)
    return _back_to(visitor, patient, saved="resumed" if changed else "not_paused")


class LogFilter(msgspec.Struct, frozen=True):
    """The delivery log's filter, from the query string: a state, and the clinic's days."""

    state: str | None
    first: date
    last: date

    @classmethod
    def parse(cls, request: web.Request, zone: ZoneInfo, now: datetime) -> LogFilter:
        today = now.astimezone(zone).date()
        state = request.query.get("state") or None
        if state not in {str(s) for s in MessageState}:
            state = None
        last = _day(request.query.get("to")) or today
        first = _day(request.query.get("from")) or last - timedelta(days=6)
        return cls(state, min(first, last), max(first, last))

    def rows(self, zone: ZoneInfo) -> dashboard.Deliveries:
        """The rows it chooses: due from midnight of the first day to midnight after the last,
        in the clinic's zone."""
        return dashboard.Deliveries(
            since=local_to_utc(self.first, time(0), zone),
            until=local_to_utc(self.last + timedelta(days=1), time(0), zone),
            state=self.state,
        )

    def query(self) -> str:
        return urlencode({"state": self.state or "", "from": self.first, "to": self.last})


def _day(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value and len(value) == 10 else None
    except ValueError:
        return None


@clinic_view()
async def deliveries_page(request: web.Request, visitor: Visitor, db: Any) -> web.StreamResponse:
    """The delivery log: every message about the clinic's patients in the chosen days, by
    state; keyset pages; the same rows as CSV."""
    zone = visitor.reader.tz
    chosen = LogFilter.parse(request, zone, request.app[SERVICES].clock.now())
    log_page = await dashboard.delivery_log(
        session=db,
        clinic_id=visitor.clinic_id,
        chosen=chosen.rows(zone),
        after=request.query.get("after"),
    )
    return _page(
        request,
        "deliveries.html",
        visitor.reader,
        **_base(visitor, "deliveries"),
        chosen=chosen,
        states=[str(s) for s in MessageState],
        page=log_page,
        at=lambda when: visitor.reader.at(when) if when is not None else "",
    )


@clinic_view()
async def deliveries_csv(request: web.Request, visitor: Visitor, db: Any) -> web.StreamResponse:
    """The delivery log as CSV (the columns of `aftercare export deliveries`), streamed."""
    zone = visitor.reader.tz
    chosen = LogFilter.parse(request, zone, request.app[SERVICES].clock.now())
    name = f"deliveries-{visitor.clinic.slug}-{chosen.first}-{chosen.last}.csv"
    response = web.StreamResponse(
        headers={
            **HEADERS,
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{name}"',
        }
    )
    await response.prepare(request)
    async for chunk, _rows in importer.delivery_csv(
        session=db, chosen=chosen.rows(zone), clinic_id=visitor.clinic_id
    ):
        if chunk:
            await response.write(chunk.encode())
    await response.write_eof()
    return response


# -- opt-outs --------------------------------------------------------------------------------


@clinic_view()
async def opt_outs_page(request: web.Request, visitor: Visitor, db: Any) -> web.StreamResponse:
    """Opt-outs: how many patients paused their reminders, blocked the bot or erased
    themselves (only a count: nothing is left of them), and the latest paused and blocked."""
    return _page(
        request,
        "opt_outs.html",
        visitor.reader,
        **_base(visitor, "opt_outs"),
        opted=await dashboard.opt_outs(session=db, clinic=visitor.clinic),
        shown=dashboard.OPT_OUTS_SHOWN,
    )


# -- broadcasts ------------------------------------------------------------------------------


async def _audiences(request: web.Request, visitor: Visitor, db: Any) -> dict[str, int]:
    services = request.app[SERVICES]
    return {
        audience: await broadcast.audience_size(
            session=db,
            clinic_id=visitor.clinic_id,
            audience=audience,
            protocol=services.protocol,
            now=services.clock.now(),
        )
        for audience in broadcast.AUDIENCES
    }


@clinic_view()
async def broadcasts_page(request: web.Request, visitor: Visitor, db: Any) -> web.StreamResponse:
    """Broadcasts: a new one (text and audience, then a preview), and the past ones."""
    return _page(
        request,
        "broadcasts.html",
        visitor.reader,
        **_base(visitor, "broadcasts"),
        audiences=await _audiences(request, visitor, db),
        chosen=request.query.get("audience", "due"),
        past=await dashboard.past_broadcasts(session=db, clinic_id=visitor.clinic_id),
        report=_report,
    )


def _report(reader: Reader, item: Broadcast, counts: broadcast.Progress) -> Markup:
    """A broadcast's counts as the bot's progress message or final report words them."""
    key = "broadcast.report" if counts.done else "broadcast.progress"
    return Markup(reader.t(key, id=item.id or 0, **broadcast.report_params(counts)))


@clinic_view(changes=True)
async def broadcast_draft(request: web.Request, visitor: Visitor, db: Any) -> web.StreamResponse:
    """A new draft (as /broadcast TEXT makes one); its preview comes next."""
    form = request[FORM]
    text = inbox.clean(form.get("text", ""))
    audience = form.get("audience", "")
    if not text or audience not in broadcast.AUDIENCES:
        return _page(request, "message.html", visitor.reader, 400, key="broadcast.usage")
    draft = await broadcast.create_draft(
        session=db,
        clinic_id=visitor.clinic_id,
        created_by=visitor.session.tg_user_id,
        text=text,
        now=request.app[SERVICES].clock.now(),
    )
    query = urlencode({"audience": audience})
    return _see_other(f"{PREFIX}/c/{visitor.clinic_id}/broadcasts/{draft.id}?{query}")


async def _found_broadcast(request: web.Request, visitor: Visitor, db: Any) -> Broadcast | None:
    """The broadcast the path names, only if it is this clinic's."""
    return await _clinic_row(request, visitor, db, dashboard.clinic_broadcast, "broadcast")


@clinic_view()
async def broadcast_page(request: web.Request, visitor: Visitor, db: Any) -> web.StreamResponse:
    """A draft's preview in each language the clinic speaks, with Send and Cancel; a sent
    broadcast's live progress (htmx polls it) and report."""
    item = await _found_broadcast(request, visitor, db)
    if item is None:
        return _page(request, "message.html", visitor.reader, 404, key="dashboard.not_found")
    assert item.id is not None
    audience = request.query.get("audience", "")
    if audience not in broadcast.AUDIENCES:
        audience = item.audience or "due"
    languages = visitor.protocol.languages or available_languages()
    previews = [
        (lang, catalog(lang).rtl, Markup(texts.broadcast(lang, visitor.clinic.name, item.text)))
        for lang in languages
    ]
    counts = await broadcast.progress(session=db, broadcast_id=item.id)
    sizes = await _audiences(request, visitor, db)
    template = (
        "broadcast_progress.html"
        if request.headers.get("HX-Request") == "true"
        else "broadcast.html"
    )
    return _page(
        request,
        template,
        visitor.reader,
        **_base(visitor, "broadcasts"),
        item=item,
        audience=audience,
        size=sizes[audience],
        previews=previews,
        counts=counts,
        report=_report(visitor.reader, item, counts),
    )


@clinic_view(changes=True)
async def broadcast_send(request: web.Request, visitor: Visitor, db: Any) -> web.StreamResponse:
    """Send a draft to its audience (one delivery row per patient, in this transaction; the
    dispatcher sends them at broadcast priority); once only."""
    item = await _found_broadcast(request, visitor, db)
    audience = request[FORM].get("audience", "")
    if item is None or audience not in broadcast.AUDIENCES:
        return _page(request, "message.html", visitor.reader, 404, key="dashboard.not_found")
    started = await broadcast.start(
        session=db,
        broadcast_id=item.id or 0,
        clinic_id=visitor.clinic_id,
        audience=audience,
        protocol=request.app[SERVICES].protocol,
        now=request.app[SERVICES].clock.now(),
    )
    if started is None:
        return _page(request, "message.html", visitor.reader, 409, key="dashboard.stale")
    log.info("dashboard: broadcast started id=%s recipients=%s", item.id, started.recipients)
    return _see_other(f"{PREFIX}/c/{visitor.clinic_id}/broadcasts/{item.id}")


@clinic_view(changes=True)
async def broadcast_cancel(request: web.Request, visitor: Visitor, db: Any) -> web.StreamResponse:
    item = await _found_broadcast(request, visitor, db)
    if item is None:
        return _page(request, "message.html", visitor.reader, 404, key="dashboard.not_found")
    if item.state != BroadcastState.DRAFT:
        return _page(request, "message.html", visitor.reader, 409, key="dashboard.stale")
    await broadcast.cancel_draft(session=db, draft=item)
    return _page(request, "message.html", visitor.reader, 200, key="broadcast.cancelled")


async def _inbox_values(db: Any, visitor: Visitor) -> dict[str, Any]:
    found, open_count = await inbox.entries(
        session=db, clinic_ids=[visitor.clinic_id], limit=INBOX_SHOWN
    )
    return {
        **_base(visitor, "inbox"),
        "entries": [_entry(visitor, e) for e in found],
        "open_count": open_count,
        "newest": max((e.message.id or 0 for e in found), default=0),
        "notice": None,
    }


class EntryView(msgspec.Struct, frozen=True):
    id: int
    patient_id: int
    name: str
    html: Markup
    handled: bool


def _entry(visitor: Visitor, entry: inbox.Entry) -> EntryView:
    text = texts.notice(visitor.reader, inbox.notice_of(entry, visitor.protocol))
    return EntryView(
        entry.message.id or 0,
        entry.patient.id or 0,
        entry.patient.first_name,
        Markup(text),  # rendered from the catalog, the patient's words escaped
        entry.message.handled_at is not None,
    )


def _alert_view(visitor: Visitor, report: clinics.Report) -> tuple[int, Markup, bool]:
    checkin = report[0]
    text = texts.alert(visitor.reader, clinics.alert_values(visitor.protocol, report))
    return checkin.id or 0, Markup(text), checkin.handled_at is not None


@clinic_view()
async def inbox_page(request: web.Request, visitor: Visitor, db: Any) -> web.StreamResponse:
    """The inbox (what patients wrote, with answer and handled) and the side-effect reports."""
    reports = await clinics.alerts(session=db, clinic_id=visitor.clinic_id, limit=ALERTS_SHOWN)
    return _page(
        request,
        "inbox.html",
        visitor.reader,
        **await _inbox_values(db, visitor),
        alerts=[_alert_view(visitor, r) for r in reports],
    )


@clinic_view()
async def inbox_fresh(request: web.Request, visitor: Visitor, db: Any) -> web.StreamResponse:
    """The inbox list as it is now, polled by htmx: new messages appear without a reload.
    Nothing new (the same newest message, the same open count): 204, and htmx leaves the
    page alone, so an answer being typed is not wiped."""
    values = await _inbox_values(db, visitor)
    seen = (request.query.get("newest"), request.query.get("open"))
    if seen == (str(values["newest"]), str(values["open_count"])):
        return web.Response(status=204, headers=HEADERS)
    return _page(request, "inbox_list.html", visitor.reader, **values)


@clinic_view(changes=True)
async def inbox_answer(request: web.Request, visitor: Visitor, db: Any) -> web.StreamResponse:
    """Answer a patient's message: delivered by the bot (the dispatcher), as /inbox's Reply."""
    message_id = _int(request.match_info["message"])
    text = request[FORM].get("text", "")
    done = (
        await inbox.answer(
            session=db,
            staff_user_id=visitor.session.tg_user_id,
            message_id=message_id,
            text=text,
            clinic_ids=[visitor.clinic_id],
            now=request.app[SERVICES].clock.now(),
        )
        if message_id is not None
        else None
    )
    if done is None:
        return _page(request, "message.html", visitor.reader, 404, key="dashboard.stale")
    log.info("dashboard: inbox answer planned for patient=%s", done.patient.id)
    reader, name = visitor.reader, done.patient.first_name
    notice = (
        reader.t("dashboard.answer_now", name=name)
        if done.due_at <= request.app[SERVICES].clock.now()
        else reader.t("dashboard.answer_later", name=name, when=reader.at(done.due_at))
    )
    return await _after_action(request, visitor, db, notice)


@clinic_view(changes=True)
async def inbox_handled(request: web.Request, visitor: Visitor, db: Any) -> web.StreamResponse:
    """Mark a patient's message handled, as /inbox's Handled does."""
    done = await _mark_handled(request, visitor, db, inbox.mark_handled, "message")
    if done is None:
        return _page(request, "message.html", visitor.reader, 404, key="dashboard.stale")
    return await _after_action(request, visitor, db)


@clinic_view(changes=True)
async def alert_handled(request: web.Request, visitor: Visitor, db: Any) -> web.StreamResponse:
    """Mark a side-effect report handled, as the staff alert's Handled button does; htmx gets
    the report as it is now."""
    done = await _mark_handled(request, visitor, db, clinics.mark_handled, "checkin")
    if done is None:
        return _page(request, "message.html", visitor.reader, 404, key="dashboard.stale")
    if request.headers.get("HX-Request") == "true":
        checkin, patient = done
        item = _alert_view(visitor, (checkin, patient))
        return _page(request, "alert.html", visitor.reader, **_base(visitor, "inbox"), alert=item)
    return _see_other(f"{PREFIX}/c/{visitor.clinic_id}/inbox")


async def _mark_handled(
    request: web.Request,
    visitor: Visitor,
    db: Any,
    mark: Callable[..., Awaitable[T | None]],
    part: str,
) -> T | None:
    """Mark the message or report the path's `part` names handled by this staff member, now,
    through `mark`: the data function the chat's Handled button calls, which finds it only
    among this clinic's rows. None if the part is not an id or there is no such row."""
    named = _path_id(request, part)
    if named is None:
        return None
    return await mark(
        session=db,
        **named,
        clinic_ids=[visitor.clinic_id],
        by=visitor.session.tg_user_id,
        now=request.app[SERVICES].clock.now(),
    )


async def _after_action(
    request: web.Request, visitor: Visitor, db: Any, notice: Html | None = None
) -> web.StreamResponse:
    """htmx: the inbox list as it is now (and what became of an answer); a plain form: back
    to the inbox page."""
    if request.headers.get("HX-Request") == "true":
        await db.flush()
        values = await _inbox_values(db, visitor)
        values["notice"] = Markup(notice) if notice is not None else None
        return _page(request, "inbox_list.html", visitor.reader, **values)
    return _see_other(f"{PREFIX}/c/{visitor.clinic_id}/inbox")


# -- the application -------------------------------------------------------------------------


@web.middleware
async def errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Unknown paths get the dashboard's own 404 page; a failure is one log line with an
    error id, and the page shows only that id."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return _message(request, "dashboard.not_found", 404)
    except web.HTTPMethodNotAllowed:
        return _message(request, "dashboard.not_found", 405)
    except web.HTTPException:
        raise
    except Exception as exc:
        # One ERROR line with an error id (the traceback at DEBUG), as for a handler.
        error_id = failures.report(log, "dashboard view failed", exc)
        reader = _plain_reader(request)
        text = Markup(reader.t("chat.error", error=error_id))
        return _page(request, "message.html", reader, 500, key=None, text=text)


def add_routes(app: web.Application, services: Services, config: Config) -> None:
    """The dashboard's routes, under /dashboard, on an aiohttp application (its own in
    polling mode, the webhook's in webhook mode)."""
    app[SERVICES] = services
    app[CONFIG] = config
    app[KEYS] = auth.Keys(config.bot_token)
    app[TEMPLATES] = _environment()
    app.middlewares.append(errors)
    r = app.router
    r.add_get(f"{PREFIX}", home)
    r.add_get(f"{PREFIX}/", home)
    r.add_get(f"{PREFIX}/login", login_page)
    r.add_post(f"{PREFIX}/login", login)
    r.add_get(f"{PREFIX}/app", mini_app)
    r.add_post(f"{PREFIX}/app/login", mini_app_login)
    r.add_post(f"{PREFIX}/logout", logout)
    c = f"{PREFIX}/c/{{clinic}}"
    r.add_get(f"{c}/", today_page)
    r.add_get(f"{c}/patients", patients_page)
    r.add_get(f"{c}/patients/{{patient}}", patient_page)
    r.add_post(f"{c}/patients/{{patient}}/course", patient_course)
    r.add_post(f"{c}/patients/{{patient}}/sessions/{{session}}/move", session_move)
    r.add_post(f"{c}/patients/{{patient}}/sessions/{{session}}/cancel", session_cancel)
    r.add_post(f"{c}/patients/{{patient}}/pause", patient_pause)
    r.add_post(f"{c}/patients/{{patient}}/resume", patient_resume)
    r.add_get(f"{c}/broadcasts", broadcasts_page)
    r.add_post(f"{c}/broadcasts", broadcast_draft)
    r.add_get(f"{c}/broadcasts/{{broadcast}}", broadcast_page)
    r.add_post(f"{c}/broadcasts/{{broadcast}}/send", broadcast_send)
    r.add_post(f"{c}/broadcasts/{{broadcast}}/cancel", broadcast_cancel)
    r.add_get(f"{c}/deliveries", deliveries_page)
    r.add_get(f"{c}/deliveries.csv", deliveries_csv)
    r.add_get(f"{c}/opt-outs", opt_outs_page)
    r.add_get(f"{c}/inbox", inbox_page)
    r.add_get(f"{c}/inbox/list", inbox_fresh)
    r.add_post(f"{c}/inbox/{{message}}/answer", inbox_answer)
    r.add_post(f"{c}/inbox/{{message}}/handled", inbox_handled)
    r.add_post(f"{c}/alerts/{{checkin}}/handled", alert_handled)
    r.add_static(f"{PREFIX}/static", HERE / "static", append_version=False)


async def ensure_clinic(services: Services) -> None:
    """The settings' clinic exists before anyone logs in (the bot makes it at its first
    update; a dashboard may be opened before that)."""
    async with services.sessions() as db, db.begin():
        await ensure_default_clinic(session=db, info=services.clinic, now=services.clock.now())


def login_url(config: Config, token: str) -> str:
    return f"{config.base_url}{PREFIX}/login?token={token}"


def mini_app_url(config: Config) -> str:
    return f"{config.base_url}{PREFIX}/app"
