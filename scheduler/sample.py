"""What a protocol gives for a sample session (`aftercare check-protocol`): the values; the
report is assembled in messages/texts.py."""

from __future__ import annotations

from datetime import date, time, timedelta
from zoneinfo import ZoneInfo

from messages import texts
from messages.protocol import Protocol, local_to_utc, resolve
from scheduler.planner import Prefs, SessionTimes, plan

SAMPLE_BOOKING_DAY = date(2026, 11, 23)  # a Monday


def sample(protocol: Protocol, tz: ZoneInfo) -> texts.Sample:
    """Booked on a Monday at 09:00 for Thursday 14:30, quiet hours 22:00-08:00."""
    booked = local_to_utc(SAMPLE_BOOKING_DAY, time(9), tz)
    start = local_to_utc(SAMPLE_BOOKING_DAY + timedelta(days=3), time(14, 30), tz)
    end = start + timedelta(minutes=protocol.session_minutes)
    anchors = {"start": start, "end": end}
    steps = [
        texts.SampleStep(s.key, s.due_at, s.expires_at, s.state, s.folded)
        for s in plan(SessionTimes(start=start, end=end), protocol, Prefs(tz=tz), booked)
    ]
    restrictions = [
        texts.SampleRestriction(
            r.key,
            r.phase,
            resolve(r.since, anchors, tz),
            resolve(r.until, anchors, tz),
            f"{r.since} .. {r.until}",
        )
        for r in protocol.restrictions
    ]
    return texts.Sample(booked, start, end, steps, restrictions)
