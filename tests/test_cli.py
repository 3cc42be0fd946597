"""The command line as an operator uses it: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory

from bot.cli.common import counted
from messages.protocol import default_protocol_path
from scheduler.db import SCHEMA_REVISION, alembic_config
from tests.procs import aftercare


def test_check_protocol_prints_the_sample_timeline(tmp_path: Path) -> None:
    result = aftercare("check-protocol", str(default_protocol_path()), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    timeline = result.stdout.split("\n\n")[1].splitlines()
    steps = [line.split()[0] for line in timeline[1:]]
    assert steps[:3] == ["booked", "prep-3d", "prep-1d"]
    assert "after-7d" in steps


def test_check_protocol_names_the_file_and_the_step(tmp_path: Path) -> None:
    broken = tmp_path / "mine.toml"
    broken.write_text(
        default_protocol_path().read_text().replace('when = "start-1d@18:00"', 'when = "strat"')
    )
    result = aftercare("check-protocol", str(broken), cwd=tmp_path)
    assert result.returncode == 1
    assert "mine.toml: step 'prep-1d': when:" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    result = aftercare("run", cwd=tmp_path, AFTERCARE_BOT_TOKEN="123:abc")
    assert result.returncode == 2
    assert result.stderr == (
        f"aftercare: there is no database at {tmp_path / 'aftercare.db'}: run `aftercare "
        "migrate` to create it\n"
    )
    assert not (tmp_path / "aftercare.db").exists()  # no empty file left behind
    (tmp_path / "aftercare.db").touch()  # a file that holds no schema
    result = aftercare("run", cwd=tmp_path, AFTERCARE_BOT_TOKEN="123:abc")
    assert result.returncode == 2
    assert result.stderr == (
        f"aftercare: the database is empty; this version needs schema {SCHEMA_REVISION}: "
        "run `aftercare migrate`\n"
    )


def test_a_command_leaves_no_database_file_behind(tmp_path: Path) -> None:
    """Any command but `migrate` (and `start`, which migrates) finds no database and says how
    to make one; `migrate` makes it."""
    for args in (("staff", "list"), ("replan", "--clinic", "default", "--yes")):
        result = aftercare(*args, cwd=tmp_path)
        assert (result.returncode, result.stderr) == (
            2,
            f"aftercare: there is no database at {tmp_path / 'aftercare.db'}: run `aftercare "
            "migrate` to create it\n",
        )
    assert list(tmp_path.iterdir()) == []
    assert aftercare("migrate", cwd=tmp_path).returncode == 0
    assert aftercare("staff", "list", cwd=tmp_path).returncode == 0


def test_a_new_version_refuses_an_older_schema_with_one_line(tmp_path: Path) -> None:
    """The database was migrated by the version before this one (its newest migration but
    one): `run` says which schema it has and which it needs, and starts nothing."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'aftercare.db'}"
    config = alembic_config(url)
    head = ScriptDirectory.from_config(config).get_revision(SCHEMA_REVISION)
    assert head is not None and isinstance(head.down_revision, str)
    command.upgrade(config, head.down_revision)
    result = aftercare("run", cwd=tmp_path, AFTERCARE_BOT_TOKEN="123:abc")
    assert result.returncode == 2
    assert result.stderr == (
        f"aftercare: the database has schema {head.down_revision}; this version needs "
        f"{SCHEMA_REVISION}: run `aftercare migrate`\n"
    )


def test_a_database_of_a_newer_version_is_left_alone_with_one_line(tmp_path: Path) -> None:
    """A database migrated by a newer version (a schema this one has no migration for):
    neither `migrate` nor `run` touches it, and both say so, not `aftercare migrate`."""
    assert aftercare("migrate", cwd=tmp_path).returncode == 0
    with sqlite3.connect(tmp_path / "aftercare.db") as db:
        db.execute("UPDATE alembic_version SET version_num = '9001'")
    said = (
        f"aftercare: the database has schema 9001, newer than this version's {SCHEMA_REVISION}"
        ": run the version of aftercare that migrated it\n"
    )
    for args in (("migrate",), ("run",), ("staff", "list")):
        result = aftercare(*args, cwd=tmp_path, AFTERCARE_BOT_TOKEN="123:abc")
        assert (result.returncode, result.stderr) == (2, said), args
    with sqlite3.connect(tmp_path / "aftercare.db") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [("9001",)]


def test_run_without_a_token_says_which_setting(tmp_path: Path) -> None:
    result = aftercare("run", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("aftercare: setting AFTERCARE_BOT_TOKEN")


def test_run_says_its_failures_as_the_other_commands_do(tmp_path: Path) -> None:
    """`aftercare run` starts the bot without typer (tests/test_startup.py), yet says what
    stops it as every command does; `run --help` goes through typer."""
    for args in (("run",), ("run", "--webhook")):
        result = aftercare(*args, cwd=tmp_path)
        assert (result.returncode, result.stderr) == (
            2,
            "aftercare: setting AFTERCARE_BOT_TOKEN: missing (copy .env.example to .env and "
            "set it)\n",
        )
    webhook = aftercare("run", "--webhook", cwd=tmp_path, AFTERCARE_BOT_TOKEN="123:abc")
    assert (webhook.returncode, webhook.stderr) == (
        2,
        "aftercare: setting AFTERCARE_WEBHOOK_URL: an https:// URL is required\n",
    )
    helped = aftercare("run", "--help", cwd=tmp_path)
    assert helped.returncode == 0
    assert "--webhook" in helped.stdout


def test_migrate_creates_the_schema_and_says_what_it_did(tmp_path: Path) -> None:
    result = aftercare("migrate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "aftercare.db").exists()
    assert result.stdout == f"the database's tables are made (schema {SCHEMA_REVISION})\n"
    again = aftercare("migrate", cwd=tmp_path)
    assert (again.returncode, again.stdout) == (
        0,
        f"the database is up to date already (schema {SCHEMA_REVISION})\n",
    )
    # A database of the version before: upgraded, from its schema to this one's.
    older = tmp_path / "older"
    older.mkdir()
    config = alembic_config(f"sqlite+aiosqlite:///{older / 'aftercare.db'}")
    head = ScriptDirectory.from_config(config).get_revision(SCHEMA_REVISION)
    assert head is not None and isinstance(head.down_revision, str)
    command.upgrade(config, head.down_revision)
    upgraded = aftercare("migrate", cwd=older)
    assert (upgraded.returncode, upgraded.stdout) == (
        0,
        f"the database is up to date (schema {head.down_revision} to {SCHEMA_REVISION})\n",
    )


@pytest.mark.slow
def test_demo_runs_offline_in_under_30_seconds(tmp_path: Path) -> None:
    began = time.monotonic()
    result = aftercare("demo", cwd=tmp_path)
    elapsed = time.monotonic() - began
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert elapsed < 30
    assert "patient: /start" in result.stdout
    assert "One week done" in result.stdout
    assert not list(tmp_path.iterdir()), "the demo leaves no database behind"


def test_counts_read_right_for_one() -> None:
    """The import's and the replan's summaries: "1 line", "replanned 1 session"."""
    assert counted(1, "line") == "1 line"
    assert counted(0, "session") == "0 sessions"
    assert counted(3_000, "pending reminder") == "3,000 pending reminders"


def test_the_commands_modules_are_made_without_the_collector_and_kept_out_of_its_sight() -> None:
    """`aftercare` (bot.cli.main) imports its commands (typer, the settings, pydantic) as
    lasting imports: the collector is off while they are made, then back on, with them frozen
    out of its full collections."""
    probe = (
        "import atexit, gc, sys\n"
        "import bot.cli\n"
        "assert 'typer' not in sys.modules and gc.get_freeze_count() == 0\n"
        "atexit.register(lambda: print(gc.get_freeze_count(), gc.isenabled()))\n"
        "sys.argv = ['aftercare', '--help']\n"
        "bot.cli.main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    frozen, enabled = result.stdout.splitlines()[-1].split()
    assert int(frozen) > 10_000 and enabled == "True"


def test_a_backup_holds_every_commit_while_the_bot_writes_and_replaces_nothing(
    tmp_path: Path,
) -> None:
    assert aftercare("migrate", cwd=tmp_path).returncode == 0
    live = tmp_path / "aftercare.db"
    # A writer that keeps its commits in the write-ahead log, as a running bot's often are.
    writer = sqlite3.connect(live)
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute(
        "INSERT INTO clinic (slug, name, timezone, address, phone, emergency_phone, "
        "created_at) VALUES ('late', 'Late Clinic', 'UTC', '', '', '112', '2026-12-05')"
    )
    writer.commit()
    try:
        made = aftercare("backup", "copy.db", cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        assert made.stdout.startswith("backed up aftercare.db to copy.db (")
        plain = tmp_path / "plain.db"
        plain.write_bytes(live.read_bytes())  # the file alone, as `cp` would copy it
        again = aftercare("backup", "copy.db", cwd=tmp_path)
    finally:
        writer.close()

    def slugs(path: Path) -> set[str]:
        with sqlite3.connect(path) as db:
            return {row[0] for row in db.execute("SELECT slug FROM clinic")}

    assert "late" in slugs(tmp_path / "copy.db")
    assert "late" not in slugs(plain)  # what the command is for
    assert (again.returncode, again.stderr) == (
        1,
        "aftercare: copy.db: already exists (a backup never replaces a file)\n",
    )
    postgres = aftercare(
        "backup",
        "pg.db",
        cwd=tmp_path,
        AFTERCARE_DATABASE_URL="postgresql+asyncpg://u:p@localhost/aftercare",
    )
    assert postgres.returncode == 1 and "pg_dump" in postgres.stderr
    assert not (tmp_path / "pg.db").exists()
