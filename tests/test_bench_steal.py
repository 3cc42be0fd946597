"""The bench's reading of steal time (bench/steal.py), which it prints beside its figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import steal


def test_the_share_stolen_is_of_all_the_cpu_time_between_two_readings() -> None:
    assert steal.stolen((100, 10_000), (130, 10_600)) == pytest.approx(0.05)
    assert steal.percent(steal.stolen((100, 10_000), (130, 10_600))) == "5.0 %"


def test_no_reading_or_no_time_between_is_unknown_not_zero() -> None:
    assert steal.stolen(None, (1, 2)) is None
    assert steal.stolen((1, 2), None) is None
    assert steal.stolen((1, 2), (1, 2)) is None
    assert steal.percent(None) == "unknown"


def test_proc_stat_is_read_as_linux_writes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  1946383 65 189110 3230976 24349 0 44791 77809 0 0\ncpu0 1 2 3\n")
    monkeypatch.setattr(steal, "_STAT", stat)
    assert steal.cpu_ticks() == (77809, 1946383 + 65 + 189110 + 3230976 + 24349 + 44791 + 77809)
    stat.write_text("something else\n")
    assert steal.cpu_ticks() is None
    monkeypatch.setattr(steal, "_STAT", tmp_path / "gone")
    assert steal.cpu_ticks() is None
