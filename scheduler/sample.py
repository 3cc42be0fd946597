"""The timeline a protocol gives for a sample session (`aftercare check-protocol`)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from messages.protocol import Protocol, TimeRef, local_to_utc, resolve
from messages.render import format_local
from scheduler.planner import Prefs, SessionTimes, plan

SAMPLE_BOOKING_DAY = date(2026, 11, 23)  # a Monday


def sample_timeline(protocol: Protocol, tz: ZoneInfo) -> str:
    """Booked on a Monday at 09:00 for Thursday 14:30, quiet hours 22:00-08:00."""
    now = local_to_utc(SAMPLE_BOOKING_DAY, time(9), tz)
    start = local_to_utc(SAMPLE_BOOKING_DAY + timedelta(days=3), time(14, 30), tz)
    end = start + timedelta(minutes=protocol.session_minutes)
    steps = plan(SessionTimes(start=start, end=end), protocol, Prefs(tz=tz), now)

    def local(at: datetime) -> str:
        return format_local(at, tz, "en", "datetime")

    lines = [
        f"Sample session: booked {local(now)}, session {local(start)} to "
        f"{format_local(end, tz, 'en', 'time')} ({tz.key}), quiet hours 22:00-08:00",
        "",
        f"{'step':<16} {'sends at':<18} {'valid until':<18} state",
    ]
    for step in steps:
        folded = f" (+ {', '.join(step.folded)})" if step.folded else ""
        lines.append(
            f"{step.key:<16} {local(step.due_at):<18} {local(step.expires_at):<18} "
            f"{step.state}{folded}"
        )
    return "\n".join(lines)


def restriction_table(protocol: Protocol, tz: ZoneInfo) -> str:
    """What to avoid, and when, for the same sample session."""
    start = local_to_utc(SAMPLE_BOOKING_DAY + timedelta(days=3), time(14, 30), tz)
    anchors = {"start": start, "end": start + timedelta(minutes=protocol.session_minutes)}

    def local(ref: TimeRef) -> str:
        at = resolve(ref, anchors, tz)
        return format_local(at, tz, "en", "datetime") if at is not None else "-"

    lines = [
        "What to avoid, for the same session:",
        f"{'restriction':<16} {'phase':<7} {'from':<18} {'until':<18} (protocol)",
    ]
    for r in protocol.restrictions:
        lines.append(
            f"{r.key:<16} {r.phase:<7} {local(r.since):<18} {local(r.until):<18} "
            f"({r.since} .. {r.until})"
        )
    return "\n".join(lines)
