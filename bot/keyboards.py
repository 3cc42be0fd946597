"""Inline keyboards. Callback data is short, versionless text, parsed defensively."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from messages.render import catalog
from messages.scripts import local_digits

NOOP = "noop"
COMMON_ZONES = (
    "Europe/London",
    "Europe/Berlin",
    "Europe/Moscow",
    "Asia/Dubai",
    "Asia/Tehran",
    "Asia/Kolkata",
    "America/New_York",
    "America/Los_Angeles",
    "Australia/Sydney",
)
FIRST_SLOT, LAST_SLOT, SLOT_MINUTES = time(8), time(20), 30
CALENDAR_PAST_DAYS = 7


def _button(text: str, data: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(text, callback_data=data)


def choice(lang: str, rows: list[list[tuple[str, str]]]) -> InlineKeyboardMarkup:
    """Rows of (catalog key, callback data)."""
    texts = catalog(lang)
    return InlineKeyboardMarkup([[_button(texts.text(k), d) for k, d in row] for row in rows])


def consent(lang: str) -> InlineKeyboardMarkup:
    return choice(
        lang, [[("button.consent_yes", "consent:yes")], [("button.consent_no", "consent:no")]]
    )


def yes_no(lang: str, prefix: str) -> InlineKeyboardMarkup:
    return choice(lang, [[("button.yes", f"{prefix}:y"), ("button.no", f"{prefix}:n")]])


def timezones(lang: str, current: str) -> InlineKeyboardMarkup:
    texts = catalog(lang)
    rows = [[_button(texts.text("button.keep_zone", zone=current), "tz:keep")]]
    zones = [z for z in COMMON_ZONES if z != current]
    rows += [
        [_button(z, f"tz:set:{z}") for z in zones[i : i + 2]] for i in range(0, len(zones), 2)
    ]
    rows.append([_button(texts.text("button.type_zone"), "tz:type")])
    return InlineKeyboardMarkup(rows)


def month_calendar(lang: str, anchor: date, today: date) -> InlineKeyboardMarkup:
    """The month of `anchor` in the reader's calendar (Persian: Solar Hijri, from Saturday),
    with the language's digits; days too far in the past are shown but inert. Callback data
    stays Gregorian ISO dates whatever the calendar."""
    # Imported at the first calendar shown: Babel's date formatting and persiantools cost
    # each start 15 ms, for a keyboard of the booking conversation.
    from messages.calendars import first_weekday, month_of, weekday_initials

    month = month_of(anchor, lang)
    rows = [
        [
            _button("◀", f"cal:{month.previous(lang).first.isoformat()}"),
            _button(month.title, NOOP),
            _button("▶", f"cal:{month.next(lang).first.isoformat()}"),
        ],
        [_button(w, NOOP) for w in weekday_initials(lang)],
    ]
    earliest = today - timedelta(days=CALENDAR_PAST_DAYS)
    start = first_weekday(lang)
    cells: list[InlineKeyboardButton] = [_button(" ", NOOP)] * (
        (month.first.weekday() - start) % 7
    )
    for number, day in enumerate(month.days, start=1):
        if day < earliest:
            cells.append(_button("·", NOOP))
        else:
            label = local_digits(str(number), lang)
            cells.append(
                _button(f"[{label}]" if day == today else label, f"day:{day.isoformat()}")
            )
    cells += [_button(" ", NOOP)] * (-len(cells) % 7)
    rows += [cells[i : i + 7] for i in range(0, len(cells), 7)]
    return InlineKeyboardMarkup(rows)


def time_slots(lang: str, day: date) -> InlineKeyboardMarkup:
    slots: list[time] = []
    at = datetime.combine(day, FIRST_SLOT)
    while at.time() <= LAST_SLOT:
        slots.append(at.time())
        at += timedelta(minutes=SLOT_MINUTES)
    rows = [
        [
            _button(local_digits(f"{t:%H:%M}", lang), f"at:{day.isoformat()}T{t:%H:%M}")
            for t in slots[i : i + 5]
        ]
        for i in range(0, len(slots), 5)
    ]
    rows.append([_button(catalog(lang).text("button.other_day"), f"cal:{day.isoformat()}")])
    return InlineKeyboardMarkup(rows)


def confirm_booking(lang: str, local_iso: str) -> InlineKeyboardMarkup:
    return choice(lang, [[("button.confirm", f"ok:{local_iso}"), ("button.change", "chg")]])


def screening_question(lang: str, key: str, *, not_applicable: bool) -> InlineKeyboardMarkup:
    """Yes / No (/ Does not apply to me) for one health question."""
    rows = [[("button.yes", f"scr:{key}:yes"), ("button.no", f"scr:{key}:no")]]
    if not_applicable:
        rows.append([("button.not_applicable", f"scr:{key}:na")])
    return choice(lang, rows)


def confirm_remembered(lang: str) -> InlineKeyboardMarkup:
    return choice(
        lang,
        [
            [("button.still_true", "scr:confirm:keep")],
            [("button.something_changed", "scr:confirm:changed")],
        ],
    )


def free_text(lang: str, draft_id: int) -> InlineKeyboardMarkup:
    """What the bot can do with a message it cannot answer itself."""
    return choice(
        lang,
        [
            [("button.send_to_clinic", f"msg:send:{draft_id}")],
            [("button.book", "msg:book"), ("button.aftercare", "msg:aftercare")],
            [("button.help", "msg:help")],
        ],
    )


def send_to_clinic(lang: str, draft_id: int) -> InlineKeyboardMarkup:
    return choice(lang, [[("button.send_to_clinic", f"msg:send:{draft_id}")]])


def cancel_session(lang: str, session_id: int) -> InlineKeyboardMarkup:
    return choice(
        lang,
        [
            [
                ("button.sessions.cancel_yes", f"ses:cy:{session_id}"),
                ("button.sessions.cancel_no", f"ses:cn:{session_id}"),
            ]
        ],
    )
