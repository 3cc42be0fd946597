"""Persian and Malayalam patients and staff, end to end: the calendar, digits and dates in
their own language, typed answers in their own words, their menu, and staff notices.

The clock starts on Wednesday 25 Nov 2026, 09:00 UTC (4 Azar 1405); the clinic is in London.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.cli.commands import DemoLanguage
from bot.offline.harness import Harness
from bot.offline.sandbox import SandboxUser, parse_html
from bot.offline.script import SCRIPTS
from messages import safety
from messages.calendars import format_local, month_of, weekday_initials
from messages.render import available_languages, catalog
from scheduler.clock import FakeClock
from tests.e2e import answer_screening, command, onboard, press, say
from tests.patient_flows import patient_of, sessions_of
from tests.procs import aftercare
from tests.test_inbox import desk, send_to_clinic

LONDON = ZoneInfo("Europe/London")


def plain(html: str) -> str:
    """A text as Telegram shows it."""
    return parse_html(html)[0]


def labels(user: SandboxUser) -> list[list[str]]:
    return [[label for label, _ in row] for row in user.last().buttons]


def data(user: SandboxUser) -> list[list[str]]:
    return [[d for _, d in row] for row in user.last().buttons]


# -- dates and calendars, without the bot ---------------------------------------------------


def test_one_instant_in_each_language() -> None:
    instant = datetime(2026, 12, 3, 14, 30, tzinfo=LONDON)
    assert format_local(instant, LONDON, "en") == "Thu 3 Dec, 14:30"
    assert format_local(instant, LONDON, "fa") == "پنجشنبه ۱۲ آذر، ۱۴:۳۰"
    assert format_local(instant, LONDON, "fa", "date") == "پنجشنبه ۱۲ آذر"
    assert format_local(instant, LONDON, "fa", "time") == "۱۴:۳۰"
    assert format_local(instant, LONDON, "ml") == "വ്യാഴം, 3 ഡിസം, 14:30"
    # Nowruz: the Persian year turns on 21 March 2027 (1 Farvardin 1406).
    nowruz = datetime(2027, 3, 21, 10, 0, tzinfo=LONDON)
    assert format_local(nowruz, LONDON, "fa") == "یکشنبه ۱ فروردین، ۱۰:۰۰"


def test_solar_hijri_months() -> None:
    azar = month_of(date(2026, 12, 3), "fa")
    assert (azar.first, azar.last, azar.title) == (
        date(2026, 11, 22),
        date(2026, 12, 21),
        "آذر ۱۴۰۵",
    )
    esfand = month_of(date(2027, 3, 1), "fa")  # 1405 is not a leap year: Esfand has 29 days
    assert (esfand.title, len(esfand.days)) == ("اسفند ۱۴۰۵", 29)
    assert month_of(esfand.last, "fa").next("fa").title == "فروردین ۱۴۰۶"
    assert weekday_initials("fa") == ["ش", "ی", "د", "س", "چ", "پ", "ج"]
    assert month_of(date(2026, 12, 3), "ml").title == "ഡിസംബർ 2026"


# -- a Persian patient -----------------------------------------------------------------------


async def test_a_persian_patient_books_in_the_solar_hijri_calendar(h: Harness) -> None:
    sara = h.patient(1201, "سارا", "fa")
    await onboard(h, sara)
    asked = sara.last().text
    calendar, calendar_data = labels(sara), data(sara)
    await press(h, sara, calendar_data[0][2])  # ▶: the next month
    next_month = labels(sara)[0][1]
    await press(h, sara, data(sara)[0][0])  # ◀: back
    await press(h, sara, "day:2026-12-03")
    times, times_data = labels(sara), data(sara)
    await press(h, sara, "at:2026-12-03T14:30")
    proposed = sara.last().text
    await press(h, sara, "ok:2026-12-03T14:30")
    await answer_screening(h, sara)
    booked = [m.text for m in sara.inbox[-2:]]
    sessions = await sessions_of(h, sara)

    assert asked.startswith("جلسه شما کی است؟")
    assert calendar[0][1] == "آذر ۱۴۰۵"  # Solar Hijri month, Persian digits
    assert calendar[1] == ["ش", "ی", "د", "س", "چ", "پ", "ج"]  # the week starts on Saturday
    # 1 Azar 1405 is a Sunday: one empty cell, then the days; today (4 Azar) is marked.
    assert calendar[2] == [" ", "۱", "۲", "۳", "[۴]", "۵", "۶"]
    assert calendar_data[2][:2] == ["noop", "day:2026-11-22"]  # callback data stays ISO
    assert calendar[-1][-1] == " " and "۳۰" in calendar[-1]  # Azar has 30 days
    assert next_month == "دی ۱۴۰۵"
    assert times[0][0] == "۰۸:۰۰" and times_data[0][0] == "at:2026-12-03T08:00"
    assert "پنجشنبه ۱۲ آذر، ۱۴:۳۰" in proposed
    assert any("پنجشنبه ۱۲ آذر، ۱۴:۳۰" in text for text in booked)
    assert [s.start_at for s in sessions] == [datetime(2026, 12, 3, 14, 30, tzinfo=LONDON)]


async def test_a_persian_patient_types_dates_and_quiet_hours_in_persian(h: Harness) -> None:
    sara = h.patient(1202, "سارا", "fa")
    await onboard(h, sara)
    refused = (await command(h, sara, "۳۱ اسفند")).text  # Esfand 1405 has 29 days
    proposed = (await command(h, sara, "فردا ساعت ۱۰ صبح")).text
    await press(h, sara, "chg")
    jalali = (await command(h, sara, "۱۴۰۵/۰۹/۱۲ ۱۴:۳۰")).text
    await press(h, sara, "ok:2026-12-03T14:30")
    await answer_screening(h, sara)
    await say(h, sara, "/settings")
    await press(h, sara, "set:quiet")
    presets = labels(sara)
    await press(h, sara, "set:q:type")
    quiet = (await command(h, sara, "۲۳:۰۰ تا ۰۷:۳۰")).text
    await say(h, sara, "/settings")
    await press(h, sara, "set:tz")
    await press(h, sara, "set:tz:type")
    zone = (await command(h, sara, "تهران")).text
    patient = await patient_of(h, sara)

    assert refused == plain(catalog("fa").text("chat.date_not_understood"))
    assert "پنجشنبه ۵ آذر، ۱۰:۰۰" in proposed  # tomorrow, 26 Nov
    assert "پنجشنبه ۱۲ آذر، ۱۴:۳۰" in jalali
    assert presets[0][0] == "۲۲:۰۰ \N{EN DASH} ۰۸:۰۰"
    assert "۲۳:۰۰" in quiet and "۰۷:۳۰" in quiet
    assert "Asia/Tehran" in zone
    assert patient is not None
    assert (patient.quiet_start, patient.quiet_end) == ("23:00", "07:30")
    assert patient.timezone == "Asia/Tehran"


async def test_a_malayalam_patient_books_in_malayalam(h: Harness) -> None:
    anu = h.patient(1203, "അനു", "ml")
    await onboard(h, anu)
    calendar = labels(anu)
    proposed = (await command(h, anu, "നാളെ രാവിലെ 10 മണിക്ക്")).text
    await press(h, anu, "ok:2026-11-26T10:00")
    await answer_screening(h, anu)
    sessions = await sessions_of(h, anu)

    assert calendar[0][1] == "നവംബർ 2026"
    assert calendar[1][0] == "ഞാ"  # Sunday first, as in India
    assert "വ്യാഴം, 26 നവം, 10:00" in proposed
    assert [s.start_at for s in sessions] == [datetime(2026, 11, 26, 10, 0, tzinfo=LONDON)]


async def test_a_change_of_language_in_settings_changes_what_follows(h: Harness) -> None:
    anna = h.patient(1204, "Anna", "en")
    await onboard(h, anna)
    await say(h, anna, "/settings")
    await press(h, anna, "set:lang")
    offered = [d for row in data(anna) for d in row]
    await press(h, anna, "set:lang:fa")
    chosen = anna.last().text
    after = (await command(h, anna, "/help")).text
    patient = await patient_of(h, anna)

    assert {"set:lang:en", "set:lang:fa", "set:lang:ml"} <= set(offered)
    assert patient is not None and patient.language == "fa"
    assert "فارسی" in chosen
    assert after == str(catalog("fa").text("chat.help"))


# -- menus, staff, the demo ------------------------------------------------------------------


async def test_each_language_has_its_menu_and_help_lists_it(h: Harness) -> None:
    menus = {
        lang: h.api.commands[(json.dumps({"type": "default"}), "" if lang == "en" else lang)]
        for lang in available_languages()
    }
    helps = {}
    for number, lang in enumerate(available_languages()):
        user = h.patient(1210 + number, "Pat", lang)
        await onboard(h, user)
        helps[lang] = (await command(h, user, "/help")).text

    for lang, menu in menus.items():
        assert [c["description"] for c in menu] == [
            str(catalog(lang).text(f"menu.{c['command']}")) for c in menu
        ]
        for item in menu:
            assert f"/{item['command']}" in helps[lang], (lang, item["command"])
    assert menus["fa"] != menus["en"] and menus["ml"] != menus["en"]


async def test_staff_read_notices_in_their_own_language(db_url: str, clock: FakeClock) -> None:
    async with desk(db_url, clock, 1220) as (h, staff, anna):
        staff.user["language_code"] = "fa"
        await say(h, staff, "/inbox")  # a staff command: the bot learns her language
        before = staff.sent_count
        await send_to_clinic(h, anna, "Can I colour my hair next week?")
        notice = staff.inbox[before]

    buttons = [label for row in notice.buttons for label, _ in row]
    assert buttons == [
        str(catalog("fa").text("inbox.reply_button")),
        str(catalog("fa").text("inbox.handle_button")),
    ]
    assert "Can I colour my hair next week?" in notice.text  # their words, as written
    assert "چهارشنبه ۴ آذر، ۰۹:۰۰" in notice.text  # on the clinic's clock, in her calendar


@pytest.mark.slow  # a demo run takes about 5 s
@pytest.mark.parametrize("lang", ["fa", "ml"])
def test_the_demo_runs_in_each_language(lang: str, tmp_path: Path) -> None:
    result = aftercare("demo", "--language", lang, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    script = SCRIPTS[lang]
    assert script.typed(datetime(2026, 12, 3, 14, 30, tzinfo=LONDON), LONDON) in result.stdout
    assert "Traceback" not in result.stderr


def test_every_language_has_a_demo_script_whose_worry_is_a_red_flag() -> None:
    assert set(SCRIPTS) == set(available_languages()) == {d.value for d in DemoLanguage}
    for script in SCRIPTS.values():
        assert safety.red_flags(script.worry), script.lang
        assert not safety.red_flags(script.question), script.lang
