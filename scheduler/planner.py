"""The pure planner: a session, a protocol and a patient's preferences in, planned steps out.

No clock, no database: `now` is passed in, so the same inputs always give the same plan and
the rules can be tested as tables of times. The result is stored as rows; the dispatcher
uses `apply_quiet_hours` again for a message it sends late or retries
(`dispatcher.night_hold`), so that an outage or a retry does not move it into the night.

Quiet hours are the patient's wall clock: an instant is quiet when their clock shows a time
in [quiet_start, quiet_end). Around DST changes a night can be shorter or longer, or even be
entered twice (autumn); the bounds below follow the clock exactly.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal, NamedTuple
from zoneinfo import ZoneInfo

import msgspec

from messages.protocol import Protocol, Restriction, TimeRef, resolve_from


class Prefs(msgspec.Struct, frozen=True):
    """A patient's zone and quiet hours (quiet_start == quiet_end: no quiet hours)."""

    tz: ZoneInfo
    quiet_start: time = time(22)
    quiet_end: time = time(8)

    def __post_init__(self) -> None:
        if self.quiet_start.tzinfo is not None or self.quiet_end.tzinfo is not None:
            raise ValueError("quiet hours are wall-clock times in the patient's zone: no tzinfo")

    @classmethod
    def parse(cls, zone: str, quiet_start: str, quiet_end: str) -> Prefs:
        """From a patient's stored values ("Asia/Kolkata", "22:00", "08:00"); one object for
        the same values (`_parsed`)."""
        return _parsed(zone, quiet_start, quiet_end)


@functools.lru_cache(maxsize=1024)
def _parsed(zone: str, quiet_start: str, quiet_end: str) -> Prefs:
    """`Prefs.parse`, kept: a clinic's patients mostly share a zone and quiet hours, and an
    import or a replan parses them for each session (ten thousand zones looked up and twenty
    thousand times parsed). Prefs are frozen, so the patients may share one."""
    return Prefs(ZoneInfo(zone), time.fromisoformat(quiet_start), time.fromisoformat(quiet_end))


class SessionTimes(msgspec.Struct, frozen=True):
    """The instants a protocol is anchored to (aware datetimes)."""

    start: datetime
    end: datetime
    next_due: datetime | None = None
    """When the next course session is due, if the course goes on."""
    last_end: datetime | None = None
    """The end of the last course session, if this one closes the course (maintenance)."""

    def __post_init__(self) -> None:
        for name in ("start", "end", "next_due", "last_end"):
            value = getattr(self, name)
            if value is not None:
                _require_aware(value, name)
        if self.end < self.start:
            raise ValueError("a session cannot end before it starts")


class PlannedStep(NamedTuple):
    """One message to record: pending (to send at due_at) or expired (visibly not sent).

    [not_before, expires_at) is the window the dispatcher keeps honouring (not_before already
    includes "not before planning"). An expired step keeps its original time as due_at, and
    its window may be empty.

    A named tuple, not a frozen dataclass: a booking, an import or a replan makes seven to
    ten of these a session, and a frozen dataclass's __init__ sets each field through
    object.__setattr__ (a fifth of the planner's time, 3 December).
    """

    key: str
    seq: int
    """The step's index in the protocol: the order in which messages of a session go out."""
    due_at: datetime
    not_before: datetime
    expires_at: datetime
    state: Literal["pending", "expired"]
    folded: tuple[str, ...] = ()
    """Keys of steps that were past at planning and whose texts this message carries."""
    buttons: str | None = None
    extended: bool = False
    """Another session keeps a restriction this step announces as over: its reworded text."""


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got {value!r}")


# --- quiet hours ------------------------------------------------------------------------------


def in_quiet_hours(instant: datetime, prefs: Prefs) -> bool:
    """Whether the patient's clock shows a quiet time at `instant`."""
    _require_aware(instant, "instant")
    return _quiet(instant, prefs)


def _quiet(instant: datetime, prefs: Prefs) -> bool:
    """`in_quiet_hours` for an instant known to be aware (the planner's own values)."""
    start, end = prefs.quiet_start, prefs.quiet_end
    if start == end:
        return False
    clock = instant.astimezone(prefs.tz).time()
    if start < end:
        return start <= clock < end
    return clock >= start or clock < end  # the night wraps past midnight


def _offset(instant: datetime, tz: ZoneInfo) -> timedelta:
    offset = instant.astimezone(tz).utcoffset()
    assert offset is not None  # a ZoneInfo always has one
    return offset


def _transition(a: datetime, b: datetime, tz: ZoneInfo) -> datetime | None:
    """The first instant in (a, b] at which the zone's UTC offset differs from the one at a.

    Assumes at most one change between a and b (they are at most about a day apart, and no
    zone changes its offset twice within a day). Transitions fall on whole seconds.
    """
    before = _offset(a, tz)
    if _offset(b, tz) == before:
        return None
    lo, hi = math.floor(a.timestamp()), math.ceil(b.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset(datetime.fromtimestamp(mid, UTC), tz) == before:
            lo = mid
        else:
            hi = mid
    return datetime.fromtimestamp(hi, UTC)


def _wall(instant: datetime, tz: ZoneInfo) -> tuple[datetime, timedelta]:
    local = instant.astimezone(tz)
    offset = local.utcoffset()
    assert offset is not None  # a ZoneInfo always has one
    return local.replace(tzinfo=None), offset


@functools.lru_cache(maxsize=4096)
def _quiet_period(instant: datetime, prefs: Prefs) -> tuple[datetime, datetime]:
    """The quiet period [start, end) that contains the quiet `instant`, exactly.

    Cached: the sessions of a clinic share a zone and quiet hours, and their steps fall on
    the same few instants (the same evening's "@20:00"); a bulk replan would otherwise walk
    the same night thousands of times.

    Between offset changes the wall clock runs linearly, so a bound is where the clock reads
    quiet_start or quiet_end; at an offset change the clock jumps, and the night ends (or
    began) there if the clock jumps out of (or into) the quiet range.
    """
    tz = prefs.tz
    cursor = instant
    while True:  # forwards to the end
        wall, offset = _wall(cursor, tz)
        target = datetime.combine(wall.date(), prefs.quiet_end)
        if target <= wall:
            target += timedelta(days=1)
        candidate = (target - offset).replace(tzinfo=UTC)
        change = _transition(cursor, candidate, tz)
        if change is None:
            end = candidate
            break
        if not _quiet(change, prefs):
            end = change
            break
        cursor = change
    cursor = instant
    while True:  # backwards to the start
        wall, offset = _wall(cursor, tz)
        target = datetime.combine(wall.date(), prefs.quiet_start)
        if target > wall:
            target -= timedelta(days=1)
        candidate = (target - offset).replace(tzinfo=UTC)
        boundary = _transition(candidate, cursor, tz) or candidate
        # Quiet just before the boundary too: the clock jumped back into the night there
        # (even onto quiet_start itself), so the night began earlier.
        just_before = boundary - timedelta(microseconds=1)
        if not _quiet(just_before, prefs):
            start = boundary
            break
        cursor = just_before
    return start, end


def apply_quiet_hours(due: datetime, lo: datetime, hi: datetime, prefs: Prefs) -> datetime:
    """Where a message due at `due`, valid in [lo, hi), goes so as not to wake the patient.

    Outside quiet hours it stays. Inside, it moves to the end of the night if that is still
    before `hi`; otherwise to one minute before the night began if that is not before `lo`
    (or to `lo`, if `lo` falls in that last minute); otherwise the window leaves no other
    choice and it stays where it is.
    """
    for value, name in ((due, "due"), (lo, "lo"), (hi, "hi")):
        _require_aware(value, name)
    due, lo, hi = due.astimezone(UTC), lo.astimezone(UTC), hi.astimezone(UTC)
    if not lo <= due < hi:
        raise ValueError(f"due {due} is outside its window [{lo}, {hi})")
    return _shift(due, lo, hi, prefs)


def _shift(due: datetime, lo: datetime, hi: datetime, prefs: Prefs) -> datetime:
    """`apply_quiet_hours` for the planner's own values: aware, in UTC, `due` in [lo, hi)."""
    if not _quiet(due, prefs):
        return due
    start, end = _quiet_period(due, prefs)
    if end < hi:
        return end
    for earlier in (start - timedelta(minutes=1), lo):
        if lo <= earlier < start and not _quiet(earlier, prefs):
            return earlier
    return due


# --- restrictions across a patient's sessions ----------------------------------------------


def restriction_times(
    restriction: Restriction, session: SessionTimes, tz: ZoneInfo
) -> tuple[datetime, datetime] | None:
    """[since, until) of one restriction for one session alone (None: an absent anchor)."""
    return _restriction_span(restriction, _session_anchors(session), {}, tz)


def _session_anchors(session: SessionTimes) -> dict[str, datetime]:
    """A session's anchors for its restrictions, in UTC (SessionTimes checked them aware)."""
    return {"start": session.start.astimezone(UTC), "end": session.end.astimezone(UTC)}


def _restriction_span(
    restriction: Restriction, anchors: dict[str, datetime], days: dict[str, date], tz: ZoneInfo
) -> tuple[datetime, datetime] | None:
    since = _resolved(restriction.since, anchors, days, tz)
    until = _resolved(restriction.until, anchors, days, tz)
    return None if since is None or until is None else (since, until)


def _resolved(
    ref: TimeRef, anchors: dict[str, datetime], days: dict[str, date], tz: ZoneInfo
) -> datetime | None:
    """`ref` against anchors already in UTC, each anchor's date on the patient's clock found
    once (`days`); None when its anchor is absent."""
    base = anchors.get(ref.anchor)
    if base is None:
        return None
    if ref.at is None and not ref.months:
        return base + ref.delta  # resolve_from, inlined: most references are this case
    day = days.get(ref.anchor)
    if day is None:
        day = days[ref.anchor] = base.astimezone(tz).date()
    return resolve_from(ref, base, tz, day)


class Restrictions:
    """When each restriction of a session really holds, given the patient's other sessions.

    The rule for overlapping timelines: what a patient avoids is one thing however many
    sessions ask for it (a restriction's `topic`), so the spans of one topic that overlap or
    touch, across all of the patient's booked sessions, merge into one; so do two spans
    that only a session lies between (no one drinks during a treatment), once more than one
    session is involved (a lone session keeps its "before" and "after" apart). A session's
    restriction then lasts from the start to the end of the merged span that contains it:
    the earlier session's "alcohol until Sunday" becomes "until three days after the next
    session" when the next session's "no alcohol from Saturday" meets it. Every text and
    plan reads its times here, so they never disagree.
    """

    def __init__(
        self,
        protocol: Protocol,
        session: SessionTimes,
        tz: ZoneInfo,
        others: Sequence[SessionTimes] = (),
    ) -> None:
        sessions = (session, *others)
        spans: dict[str, list[_Span]] = {}
        self._own: dict[str, tuple[datetime, datetime] | None] = {}
        for owner, times in enumerate(sessions):
            # Each session's anchors made UTC, and their dates on the patient's clock found,
            # once for all the restrictions (a patient on a course has several sessions).
            anchors, days = _session_anchors(times), dict[str, date]()
            for restriction in protocol.restrictions:
                own = _restriction_span(restriction, anchors, days, tz)
                if owner == 0:
                    self._own[restriction.key] = own
                if own is not None and own[0] < own[1]:
                    spans.setdefault(restriction.subject, []).append(
                        _Span(own[0], own[1], frozenset({owner}))
                    )
        self._merged = {
            topic: [(s.since, s.until) for s in _merge(found, sessions)]
            for topic, found in spans.items()
        }

    def own(self, restriction: Restriction) -> tuple[datetime, datetime] | None:
        """The restriction's times for this session alone."""
        return self._own[restriction.key]

    def span(self, restriction: Restriction) -> tuple[datetime, datetime] | None:
        """[since, until) in force for this session's restriction (merged with the others')."""
        own = self.own(restriction)
        if own is None:
            return None
        for since, until in self._merged.get(restriction.subject, ()):
            if since <= own[0] and own[1] <= until:
                return since, until
        return own  # an empty own span (since == until) merges with nothing

    def extended(self, restriction: Restriction) -> bool:
        """Whether another session keeps it in force after this session's own end of it."""
        own, span = self.own(restriction), self.span(restriction)
        return own is not None and span is not None and span[1] > own[1]


class _Span(msgspec.Struct, frozen=True):
    since: datetime
    until: datetime
    owners: frozenset[int]  # the sessions whose restrictions it is made of


def _merge(spans: list[_Span], sessions: Sequence[SessionTimes]) -> list[_Span]:
    """Overlapping or touching spans as one (at the instant one ends another begins: the
    thing is never allowed in between), and spans only a session lies between, when they
    are not that one session's own."""
    merged: list[_Span] = []
    for span in sorted(spans, key=lambda s: (s.since, s.until)):
        if merged and _joins(merged[-1], span, sessions):
            last = merged[-1]
            merged[-1] = _Span(last.since, max(last.until, span.until), last.owners | span.owners)
        else:
            merged.append(span)
    return merged


def _joins(left: _Span, right: _Span, sessions: Sequence[SessionTimes]) -> bool:
    if right.since <= left.until:
        return True
    return any(
        times.start <= left.until
        and right.since <= times.end
        and (left.owners | right.owners) != {index}
        for index, times in enumerate(sessions)
    )


# --- planning ---------------------------------------------------------------------------------


def _after_previous(
    previous: datetime, lo: datetime, hi: datetime, shift: bool, prefs: Prefs
) -> datetime | None:
    """The earliest acceptable time at or after the previous message, or None if none is.

    A message must not overtake the one before it ("you can wash again" before "don't wash
    tonight"); if waiting for it would leave the window, or put the message in the night
    although its window has daytime room (only earlier), the message expires.
    """
    due = max(previous, lo)
    if due >= hi:
        return None
    if shift and _quiet(due, prefs):
        start, end = _quiet_period(due, prefs)
        if end < hi:
            return end
        if lo < start:
            return None
    return due


def _place(
    when: datetime,
    lo: datetime,
    hi: datetime,
    shift: bool,
    prefs: Prefs,
    previous: datetime | None,
) -> datetime | None:
    """When to send a step valid in [lo, hi), or None if it cannot be sent at all (`shift`:
    it keeps the patient's quiet hours)."""
    due = max(when, lo)  # a step already past is due now (or at not_before)
    if due >= hi:
        return None
    if shift:
        due = _shift(due, lo, hi, prefs)
    if previous is not None and due < previous:
        return _after_previous(previous, lo, hi, shift, prefs)
    return due


def plan(
    session: SessionTimes,
    protocol: Protocol,
    prefs: Prefs,
    now: datetime,
    others: Sequence[SessionTimes] = (),
    *,
    in_chat: bool = True,
) -> list[PlannedStep]:
    """The steps of `protocol` for `session`, planned at `now`, in protocol order.

    `in_chat`: planned while the patient is in the chat (they booked it). A step that ignores
    quiet hours for that reason (`quiet = "ignore"`: the booking's confirmation) keeps them
    like any other when the patient is not there (an import, a clinic's replan).

    A step whose anchor is absent (no next session, not the last one) or whose `when` falls
    outside its `only_if_between` does not exist for this session; nor does a step that
    announces the end of a restriction that another of the patient's sessions (`others`)
    keeps in force, unless the protocol rewords it (`when_extended`). A step already past at
    `now` is folded into its `fold_into` target if that is planned, else sent now if still
    valid, else returned as expired so that the caller records it visibly. The returned
    pending steps lie in their windows, respect quiet hours as far as their windows allow,
    and their due times never decrease in protocol order.
    """
    _require_aware(now, "now")
    now = now.astimezone(UTC)
    # Every anchor in UTC once, so that each step's times are plain additions (resolve_from).
    anchors = {"booking": now, "start": session.start.astimezone(UTC)}
    anchors["end"] = session.end.astimezone(UTC)
    if session.next_due is not None:
        anchors["next"] = session.next_due.astimezone(UTC)
    if session.last_end is not None:
        anchors["last"] = session.last_end.astimezone(UTC)
    tz = prefs.tz
    local_days: dict[str, date] = {}  # each anchor's date on the patient's clock, once

    restrictions = Restrictions(protocol, session, tz, others) if others else None

    planned: list[PlannedStep] = []
    pending: dict[str, int] = {}  # key -> index in `planned`, for folding
    previous: datetime | None = None
    for seq, step in enumerate(protocol.steps):
        when = _resolved(step.when, anchors, local_days, tz)
        expires = _resolved(step.expires, anchors, local_days, tz)
        not_before = (
            when
            if step.not_before is None
            else _resolved(step.not_before, anchors, local_days, tz)
        )
        if when is None or expires is None or not_before is None:
            continue
        if step.only_if_between is not None:
            first, second = (
                _resolved(ref, anchors, local_days, tz) for ref in step.only_if_between
            )
            if first is None or second is None or not first <= when < second:
                continue
        extended = restrictions is not None and any(
            restrictions.extended(protocol.restriction(key)) for key in step.ends
        )
        if extended and step.when_extended == "drop":
            continue
        if when < now and step.fold_into in pending:
            index = pending[step.fold_into]
            target = planned[index]
            planned[index] = target._replace(folded=(*target.folded, step.key))
            continue

        lo, hi = max(not_before, now), expires
        due = _place(when, lo, hi, step.quiet == "shift" or not in_chat, prefs, previous)
        if due is None:
            planned.append(
                PlannedStep(
                    step.key, seq, when, lo, hi, "expired", buttons=step.buttons, extended=extended
                )
            )
            continue
        pending[step.key] = len(planned)
        planned.append(
            PlannedStep(
                step.key, seq, due, lo, hi, "pending", buttons=step.buttons, extended=extended
            )
        )
        previous = due
    return planned
