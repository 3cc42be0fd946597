"""Appointments in from a booking system's CSV, the delivery log out; the clinic CLI.

The import itself runs in-process against the harness's database (then the patient opens
the per-booking link in the sandbox); the command line runs as a real subprocess.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli.commands import cli
from scheduler import importer
from scheduler.clock import FakeClock
from scheduler.models import Clinic, TreatmentSession
from tests.clinic_side import fast_settings, patient_row
from tests.e2e import onboarded, opened_link, press, running
from tests.patient_flows import sessions_of

EXPORT = """clinic,start,telegram_id,phone,invite,name
,2026-12-03 14:30,,+44 7700 900123,,Nina
,2026-12-04 10:00,951,,,Anna
nowhere,2026-12-05 10:00,,+44 7700 900999,,Olga
,next tuesday,,+44 7700 900888,,Paul
,2026-12-06 10:00,,,,Nobody
"""


async def _import(h: object, text: str) -> importer.ImportReport:
    from sqlmodel import select

    from bot.offline.harness import Harness

    assert isinstance(h, Harness) and h.services is not None
    rows, error = importer.read_csv(text)
    assert error is None
    async with h.services.sessions() as db, db.begin():
        default = (await db.exec(select(Clinic).where(Clinic.slug == "default"))).one()
        report = await importer.import_appointments(
            session=db,
            rows=rows,
            importing=importer.Importing(default, h.services.protocol),
            now=h.clock.now(),
        )
    h.services.poke()
    await h.settle()
    return report


async def test_import_books_known_patients_invites_the_others_and_is_idempotent(
    db_url: str, clock: FakeClock
) -> None:
    async with running(db_url, clock, **fast_settings()) as h:
        anna = await onboarded(h, 951, "Anna")
        first = await _import(h, EXPORT)
        anna_sessions = await sessions_of(h, anna)
        booked_msg = [m.text for m in anna.inbox if "Your session is booked" in m.text]
        again = await _import(h, EXPORT)

        (link,) = csv.DictReader(io.StringIO(importer.links_csv(first.links, "@sandbox_bot")))
        assert link["link"].startswith("https://t.me/sandbox_bot?start=b-")
        nina = await opened_link(h, 952, "Nina", link["link"].split("?start=")[1])
        await press(h, nina, "consent:yes")
        nina_sessions = await sessions_of(h, nina)
        # Nina is on Telegram now: her next appointment is booked directly, no new link.
        later = await _import(h, EXPORT + ",2026-12-20 10:00,,+447700900123,,Nina\n")
        nina_after = await sessions_of(h, nina)
        nina_id = (await patient_row(h, nina)).id
        assert h.services is not None
        out = io.StringIO()
        async with h.services.sessions() as db:
            count = await importer.export_deliveries(
                session=db, since=datetime(2026, 11, 1, tzinfo=UTC), write=out.write
            )
        log = list(csv.DictReader(io.StringIO(out.getvalue())))

    assert (first.booked, first.invited, first.unchanged) == (1, 1, 0)
    assert first.errors == [
        (4, "clinic: no clinic 'nowhere' (`aftercare clinic list`)"),
        (5, "start: 'next tuesday' is not a date and time like 2026-12-03 14:30"),
        (6, "no patient: give telegram_id, phone or invite"),
    ]
    assert [s.start_at.isoformat() for s in anna_sessions] == ["2026-12-04T10:00:00+00:00"]
    assert len(booked_msg) == 1 and "Fri 4 Dec, 10:00" in booked_msg[0]
    assert (again.booked, again.invited, again.unchanged) == (0, 0, 2)
    assert again.links == first.links  # the same, still unused link
    assert link["line"] == "2" and link["name"] == "Nina" and link["phone"] == "+447700900123"
    assert (link["start"], link["telegram_id"]) == ("2026-12-03 14:30", "")
    assert [s.start_at.isoformat() for s in nina_sessions] == ["2026-12-03T14:30:00+00:00"]
    assert (later.booked, later.invited, later.unchanged, later.links) == (1, 0, 2, [])
    assert len(nina_after) == 2 and all(isinstance(s, TreatmentSession) for s in nina_after)
    assert all(s.patient_id == nina_id for s in nina_after)
    assert count == len(log) > 0
    sent = [r for r in log if r["state"] == "sent"]
    assert {r["step"] for r in sent} == {"booked"} and all(r["sent_at"] for r in sent)
    assert "Your session" not in out.getvalue()  # states and times, never message texts


def aftercare(*args: str, cwd: Path, db: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AFTERCARE_")}
    env = {**clean, "AFTERCARE_DATABASE_URL": f"sqlite+aiosqlite:///{db}"}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.slow
def test_the_clinic_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process (typer's runner) for speed; the import runs as a real subprocess too."""
    db = tmp_path / "a.db"
    monkeypatch.chdir(tmp_path)
    env = {"AFTERCARE_DATABASE_URL": f"sqlite+aiosqlite:///{db}"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        result = CliRunner().invoke(cli, list(args), env=env)
        return subprocess.CompletedProcess(
            list(args), result.exit_code, result.stdout, result.stderr
        )

    assert run("migrate").returncode == 0
    added = run("clinic", "add", "north", "--name", "North", "--timezone", "Europe/Berlin")
    assert added.returncode == 0, added.stderr
    bad = run("clinic", "add", "mars", "--name", "Mars", "--timezone", "Mars/Base")
    assert (bad.returncode, bad.stderr) == (1, "aftercare: unknown time zone 'Mars/Base'\n")
    assert run("clinic", "edit", "north", "--phone", "+49 30 1").returncode == 0
    bad_url = run("clinic", "edit", "north", "--booking-url", "ftp://x")
    assert bad_url.returncode == 1 and "expected https://" in bad_url.stderr
    listed = run("clinic", "list").stdout.splitlines()
    assert [line.split(" | ")[0] for line in listed] == ["default", "north"]
    assert listed[1].split(" | ")[4] == "+49 30 1"
    invite = run("staff", "invite", "--clinic", "north", "--bot-username", "@clinic_bot")
    assert invite.stdout.startswith("https://t.me/clinic_bot?start=staff-"), invite.stderr
    no_name = run("staff", "invite", "--clinic", "north")
    assert no_name.returncode == 2 and "--bot-username" in no_name.stderr

    export = tmp_path / "bookings.csv"
    export.write_text(
        EXPORT.replace(",2026-12-04 10:00,951,,,Anna", "north,2026-12-04 10:00,,+49 151 1,,Anna")
    )
    missing = run("import", str(tmp_path / "nope.csv"), "--dry-run")
    assert (missing.returncode, missing.stderr) == (
        1,
        f"aftercare: {tmp_path / 'nope.csv'}: No such file or directory\n",
    )
    latin = tmp_path / "latin.csv"
    latin.write_bytes("clinic,start,phone,name\nnorth,2026-12-04 10:00,1,José\n".encode("latin-1"))
    not_utf8 = run("import", str(latin), "--dry-run")
    assert not_utf8.returncode == 1 and "not UTF-8 text" in not_utf8.stderr
    dry = run("import", str(export), "--dry-run")  # no bot username needed to check
    assert dry.returncode == 1  # lines with errors
    assert dry.stdout.startswith(
        "5 lines: 0 to book, 2 to invite, 0 already imported, 3 with errors (dry run: nothing"
    )
    assert f"{export}: line 5: start: 'next tuesday'" in dry.stderr
    assert not (tmp_path / "bookings-invites.csv").exists()
    # Where the invite links cannot go, the import does not start: they could not be made again.
    nowhere = tmp_path / "no-such-folder" / "links.csv"
    refused = run("import", str(export), "--bot-username", "clinic_bot", "--links", str(nowhere))
    assert (refused.returncode, refused.stderr) == (
        1,
        f"aftercare: {nowhere}: No such file or directory\n",
    )
    a_folder = run("import", str(export), "--bot-username", "clinic_bot", "--links", str(tmp_path))
    assert a_folder.stderr == f"aftercare: {tmp_path}: Is a directory\n"
    # No bot username (no option, setting or token): the import is done, and the links wait
    # for a second run that has it. Nothing asks for a username when there are no links.
    unnamed = run("import", str(export))
    assert "5 lines: 0 booked, 2 invited, 0 already imported, 3 with errors\n" in unnamed.stdout
    assert unnamed.returncode == 1 and unnamed.stderr.endswith(
        "aftercare: 2 invite links not written: give --bot-username (or set"
        " AFTERCARE_BOT_USERNAME or the bot token), then run the same import again (it imports"
        " nothing twice)\n"
    )
    assert not (tmp_path / "bookings-invites.csv").exists()
    empty = tmp_path / "empty.csv"
    empty.write_text("clinic,start,telegram_id\n")
    nothing = run("import", str(empty))
    assert (nothing.returncode, nothing.stderr) == (0, ""), nothing.stderr
    real = aftercare("import", str(export), "--bot-username", "clinic_bot", cwd=tmp_path, db=db)
    assert "5 lines: 0 booked, 0 invited, 2 already imported, 3 with errors\n" in real.stdout
    links = list(csv.DictReader(io.StringIO((tmp_path / "bookings-invites.csv").read_text())))
    assert [(r["line"], r["clinic"], r["name"]) for r in links] == [
        ("2", "default", "Nina"),
        ("3", "north", "Anna"),
    ]
    assert all(r["link"].startswith("https://t.me/clinic_bot?start=b-") for r in links)
    again = run("import", str(export), "--bot-username", "clinic_bot")
    assert "0 booked, 0 invited, 2 already imported" in again.stdout

    out = run("export", "deliveries", "--since", "2026-01-01")
    assert out.returncode == 0 and out.stdout.startswith("id,clinic,patient_id,session_id")
    assert run("export", "deliveries", "--since", "soon").returncode == 1
    written = run("export", "deliveries", "--since", "2026-01-01", "--out", "log.csv")
    assert written.stdout.endswith(" deliveries written to log.csv\n"), written.stderr
    assert (tmp_path / "log.csv").read_text() == out.stdout
    unwritable = run("export", "deliveries", "--since", "2026-01-01", "--out", str(nowhere))
    assert (unwritable.returncode, unwritable.stderr) == (
        1,
        f"aftercare: {nowhere}: No such file or directory\n",
    )


def test_a_start_with_a_date_but_no_time_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export without the times is not booked at midnight, in any ISO form of a date."""
    monkeypatch.chdir(tmp_path)
    env = {"AFTERCARE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"}
    assert CliRunner().invoke(cli, ["migrate"], env=env).exit_code == 0
    export = tmp_path / "dates.csv"
    export.write_text(
        "clinic,start,phone\n"
        ",2026-12-10,+44 7700 900001\n"
        ",2026-W50-4,+44 7700 900002\n"
        ",2026-12-10 00:00,+44 7700 900003\n"
        ",2026-12-10T09:30,+44 7700 900004\n"
    )
    dry = CliRunner().invoke(cli, ["import", str(export), "--dry-run"], env=env)
    assert dry.exit_code == 1
    assert dry.stdout.startswith("4 lines: 0 to book, 2 to invite, 0 already imported, 2 with")
    assert dry.stderr.splitlines() == [
        f"{export}: line 2: start: '2026-12-10' has no time: give it like 2026-12-03 14:30",
        f"{export}: line 3: start: '2026-W50-4' has no time: give it like 2026-12-03 14:30",
    ]
