"""The patient's conversation as a typed state, stored on their row.

What the next typed text (or screening button) answers is one of the states below, with its
payload, validated on read: a stored value that no longer fits (an old version's, or a
hand-edited row) reads as `Idle`, never as an error. The state changes only through
`set_state`, called by the transitions in `scheduler/` (never by a handler).

A state that waits for typed text lapses after `LAPSE`: a patient who asked to type a time
zone last week and writes today is not answered as if they were typing one.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession

from messages.protocol import Answer
from scheduler.models import Patient

log = logging.getLogger("aftercare.conversation")

LAPSE = timedelta(hours=24)


class _State(BaseModel):
    # Validators built when first used (a patient's first message), not at every start.
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    since: datetime | None = None
    """When the state began (aware UTC)."""

    def lapsed(self, now: datetime) -> bool:
        return self.since is not None and now - self.since > LAPSE


class Idle(_State):
    """Nothing asked: free text is a message for the clinic (or a red flag)."""

    kind: Literal["idle"] = "idle"


class TypingZone(_State):
    """A typed IANA zone is expected (after "Another time zone…")."""

    kind: Literal["zone"] = "zone"
    onboarding: bool = False
    """True while setting up (then booking follows); False from /settings."""


class TypingQuiet(_State):
    """Typed quiet hours ("22:00-08:00") are expected."""

    kind: Literal["quiet"] = "quiet"


class ChoosingDate(_State):
    """A session date is being chosen (calendar buttons or typed text)."""

    kind: Literal["date"] = "date"
    moving: int | None = None
    """The session being moved; None for a new booking."""
    anchor: int | None = None
    """The message whose buttons started a move: edited when it is done, so its old buttons
    cannot be pressed again."""


class Screening(_State):
    """The health questions of one session: a new booking (`start`, local time) or an
    existing one (`session`: booked by an invite, or just moved)."""

    kind: Literal["screening"] = "screening"
    start: str | None = None
    session: int | None = None
    answers: dict[str, Answer] = Field(default_factory=dict)
    confirmed: bool | None = None
    only_about_date: bool = False
    asking: str | None = None
    """The question (or "confirm") on screen: a button of another question is stale."""
    anchor: int | None = None
    """After a move: the message whose buttons started it."""


class Describing(_State):
    """A check-in's "something else": the next text describes it."""

    kind: Literal["note"] = "note"
    checkin: int


class WritingToClinic(_State):
    """The next text goes to the clinic as it is (after "Answer the clinic")."""

    kind: Literal["clinic"] = "clinic"


State = Annotated[
    Idle | TypingZone | TypingQuiet | ChoosingDate | Screening | Describing | WritingToClinic,
    Field(discriminator="kind"),
]
_ADAPTER: TypeAdapter[State] = TypeAdapter(State, config=ConfigDict(defer_build=True))


def state_of(patient: Patient) -> State:
    """The patient's state, validated; anything that does not fit reads as Idle."""
    if not patient.awaiting:
        return Idle()
    try:
        return _ADAPTER.validate_python({**patient.draft, "kind": patient.awaiting})
    except ValidationError:
        log.info("patient %s: stored state %r no longer fits; idle", patient.id, patient.awaiting)
        return Idle()


def set_state(patient: Patient, state: State, now: datetime | None = None) -> None:
    """Store the state on the row (the caller's transaction commits it)."""
    if isinstance(state, Idle):
        patient.awaiting, patient.draft = None, {}
        return
    if now is not None and state.since is None:
        state = state.model_copy(update={"since": now})
    payload = state.model_dump(mode="json", exclude={"kind"})
    patient.awaiting, patient.draft = state.kind, payload


async def expect(*, session: AsyncSession, patient: Patient, state: State, now: datetime) -> None:
    """The patient was asked for typed text (a zone, quiet hours, a message for the clinic):
    the next text answers `state`."""
    set_state(patient, state, now)
    session.add(patient)


def moving(patient: Patient) -> bool:
    """Whether the patient is choosing a new time for an existing session."""
    state = state_of(patient)
    return isinstance(state, ChoosingDate) and state.moving is not None
