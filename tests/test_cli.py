"""The command line as an operator uses it: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from messages.protocol import default_protocol_path
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
        "aftercare: the database is empty; this version needs schema 0010: "
        "run `aftercare migrate`\n"
    )
    assert "Traceback" not in result.stderr


def test_run_without_a_token_says_which_setting(tmp_path: Path) -> None:
    result = aftercare("run", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("aftercare: setting AFTERCARE_BOT_TOKEN")


def test_migrate_creates_the_schema(tmp_path: Path) -> None:
    result = aftercare("migrate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "aftercare.db").exists()


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
