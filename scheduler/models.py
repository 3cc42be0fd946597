"""The tables. Every datetime is aware and stored in UTC.

SQLite keeps no offset even with `DateTime(timezone=True)`, so `UTCDateTime` normalises
on the way in (to UTC) and on the way out (naive values are UTC by construction).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import JSON, Column, Field, SQLModel, col
from sqlmodel._compat import SQLModelConfig  # the type of SQLModel.model_config


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: store aware UTC datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self,
        value: datetime | None,
        dialect: Dialect,  # noqa: ARG002
    ) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ref(
    target: str,
    ondelete: str,
    *,
    nullable: bool = True,
    index: bool = False,
    primary_key: bool = False,
) -> Any:
    """A foreign key column that follows its row: CASCADE (erased with it) or SET NULL."""
    nullable = nullable and not primary_key
    column = Column(
        sa.Integer(),
        sa.ForeignKey(target, ondelete=ondelete),
        nullable=nullable,
        index=index,
        primary_key=primary_key,
    )
    return Field(default=None, sa_column=column) if nullable else Field(sa_column=column)


def _dt(*, index: bool = False, nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), index=index, nullable=nullable))


class _Table(SQLModel):
    """Every table. Its pydantic validator and serializer are built on first use
    (`model_validate`, `model_dump`), not at import: SQLModel builds a row without validating
    it, so a running bot never uses them, and building them for every table cost each start
    15 ms."""

    model_config = SQLModelConfig(defer_build=True)


class MessageState(StrEnum):
    """Life of a planned message (see docs/delivery.md)."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    FAILED = "failed"


class SessionState(StrEnum):
    BOOKED = "booked"
    CANCELLED = "cancelled"


class Priority:
    """Lower goes first: what a person is waiting for (a patient's message to the clinic's
    staff, a staff answer to the patient), then time-critical reminders, then bulk
    broadcasts. Replies stay behind the rate limiter's INTERACTIVE (-10): a 429 pauses them."""

    REPLY = -5
    REMINDER = 0
    BROADCAST = 10
    # Every priority a planned row may have, in claim order: the claim reads each one's due
    # end of the pending index (scheduler/dispatcher.py), so a row of any other would wait.
    ALL = (REPLY, REMINDER, BROADCAST)


class Clinic(_Table, table=True):
    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(index=True, unique=True, max_length=64)
    name: str = Field(max_length=200)
    timezone: str = Field(max_length=64)
    address: str = Field(default="", max_length=500)
    phone: str = Field(default="", max_length=64)
    booking_url: str | None = Field(default=None, max_length=500)
    protocol_file: str | None = Field(default=None, max_length=500)
    # The number a patient calls when breathing is difficult (red-flag answers, /aftercare).
    emergency_phone: str = Field(default="112", max_length=32)
    # Telegram's paid broadcasts (each message billed in Stars): broadcasts may then go at up
    # to 1,000 messages a second instead of 30. Off unless the clinic turns it on.
    allow_paid_broadcast: bool = Field(default=False)
    created_at: datetime = _dt(nullable=False)
    # How many of its patients erased everything about themselves (/delete): a plain number,
    # the only trace an erasure leaves (the dashboard's opt-outs).
    erased_patients: int = Field(
        default=0, sa_column=Column(sa.Integer(), nullable=False, server_default="0")
    )


class Patient(_Table, table=True):
    id: int | None = Field(default=None, primary_key=True)
    # No index of its own: those that begin with it (`_STAFF_INDEXES`) serve it.
    clinic_id: int = Field(foreign_key="clinic.id")
    tg_user_id: int = Field(sa_column=Column(sa.BigInteger(), unique=True, nullable=False))
    chat_id: int = Field(sa_column=Column(sa.BigInteger(), nullable=False))
    first_name: str = Field(default="", max_length=128)
    language: str = Field(default="en", max_length=8)
    timezone: str = Field(max_length=64)
    quiet_start: str = Field(default="22:00", max_length=5)
    quiet_end: str = Field(default="08:00", max_length=5)
    consent_at: datetime | None = _dt()
    paused_at: datetime | None = _dt()
    blocked_at: datetime | None = _dt()
    # The conversation's state (scheduler/conversation.py): its kind, and its payload. It lives
    # here, not in memory, so a restart does not lose a patient mid-flow.
    awaiting: str | None = Field(default=None, max_length=32)
    draft: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # Lasting screening answers ("endocrine_disorder": "yes"; "pregnant_or_breastfeeding":
    # "na" when it does not apply), confirmed at the next booking instead of asked again.
    conditions: dict[str, str] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )
    conditions_at: datetime | None = _dt()
    created_at: datetime = _dt(nullable=False)
    # When their maintenance counts from: the end of their last session if it closed a course
    # whose maintenance goes on, else None. Derived from their sessions and courses, kept by
    # every write that changes those (scheduler/courses.py: note_maintenance_from), so that
    # the due list is one index range instead of every patient's last session and course.
    maintenance_from: datetime | None = _dt()
    # The start of their latest booked session (None: none booked), kept with it: a patient
    # has a session still to come when it is in the future (the course audience of a
    # broadcast is one index range, not a search of every patient's sessions).
    last_session_start: datetime | None = _dt()


class TreatmentSession(_Table, table=True):
    __tablename__ = "treatment_session"

    id: int | None = Field(default=None, primary_key=True)
    # No index of their own: those that begin with them (`_STAFF_INDEXES`) serve them.
    patient_id: int = Field(foreign_key="patient.id")
    clinic_id: int = Field(foreign_key="clinic.id")
    start_at: datetime = _dt(index=True, nullable=False)
    end_at: datetime = _dt(nullable=False)
    state: str = Field(default=SessionState.BOOKED, max_length=16)
    screening: dict[str, bool] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )
    flagged: bool = False
    created_at: datetime = _dt(nullable=False)


class PlannedMessage(_Table, table=True):
    __tablename__ = "planned_message"

    id: int | None = Field(default=None, primary_key=True)
    patient_id: int = Field(foreign_key="patient.id", index=True)
    session_id: int | None = Field(default=None, foreign_key="treatment_session.id", index=True)
    step: str = Field(max_length=64)
    seq: int = 0
    priority: int = Priority.REMINDER
    state: str = Field(default=MessageState.PENDING, max_length=16)
    due_at: datetime = _dt(nullable=False)
    not_before: datetime = _dt(nullable=False)
    expires_at: datetime = _dt(nullable=False)
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=500)
    sent_at: datetime | None = _dt()
    lease_until: datetime | None = _dt()
    claimed_by: str | None = Field(default=None, max_length=64)
    tg_message_id: int | None = None
    extra: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # Set for a message about the patient to someone else (a staff chat: the patient's words,
    # an alert); None for a message to the patient's own chat.
    chat_id: int | None = Field(default=None, sa_column=Column(sa.BigInteger(), nullable=True))
    created_at: datetime = _dt(nullable=False)


# --- Patient conversation (issue 3) ---------------------------------------------------------


class CheckIn(_Table, table=True):
    """A patient's answer to a side-effect check-in (after-24h, after-3d)."""

    __tablename__ = "checkin"

    id: int | None = Field(default=None, primary_key=True)
    patient_id: int = Field(foreign_key="patient.id", index=True)
    session_id: int | None = Field(default=None, foreign_key="treatment_session.id")
    # The check-in message that was answered.
    message_id: int | None = Field(default=None, foreign_key="planned_message.id")
    option: str = Field(max_length=64)
    # The "something else" description, as typed (truncated); never logged.
    note: str | None = Field(default=None, max_length=500)
    red_flag: bool = False
    answered_at: datetime = _dt(nullable=False)
    handled_at: datetime | None = _dt()
    handled_by: int | None = Field(default=None, sa_column=Column(sa.BigInteger(), nullable=True))


# --- Clinic side (issue 5) ------------------------------------------------------------------
# Rows about a patient go with the patient (ON DELETE CASCADE), so that erasing a patient
# needs no knowledge of these tables.


class StaffMember(_Table, table=True):
    """A Telegram user who works for a clinic (joined through a staff invite link)."""

    __tablename__ = "staff_member"
    __table_args__ = (sa.UniqueConstraint("clinic_id", "tg_user_id"),)

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinic.id", index=True)
    tg_user_id: int = Field(sa_column=Column(sa.BigInteger(), nullable=False, index=True))
    chat_id: int = Field(sa_column=Column(sa.BigInteger(), nullable=False))
    name: str = Field(default="", max_length=128)
    # The language of their Telegram app at their last staff command: notices to their chat
    # are written in it.
    language: str = Field(default="en", max_length=8)
    created_at: datetime = _dt(nullable=False)
    # The Mini App address their private chat has as its menu button (setChatMenuButton),
    # once Telegram took it; None: not set yet (then their next staff command sets it).
    menu_button_url: str | None = Field(default=None, max_length=500)


class InviteKind(StrEnum):
    STAFF = "staff"
    CLINIC = "clinic"
    BOOKING = "booking"


class Invite(_Table, table=True):
    """A deep-link code: staff (one-time, expiring), clinic (reusable), booking (one-time)."""

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=40, unique=True, index=True)
    kind: str = Field(max_length=16)
    clinic_id: int = Field(foreign_key="clinic.id", index=True)
    # A per-booking invite: the session to book when the patient presses Start.
    start_at: datetime | None = _dt()
    expires_at: datetime | None = _dt()
    used_at: datetime | None = _dt()
    # Staff invites: the Telegram user who joined. Patient invites: the patient (so that
    # erasing the patient erases this link to them too).
    used_by: int | None = Field(default=None, sa_column=Column(sa.BigInteger(), nullable=True))
    patient_id: int | None = _ref("patient.id", "CASCADE")
    created_at: datetime = _dt(nullable=False)


class CoursePlanKind(StrEnum):
    NONE = "none"
    MILD = "mild"
    NOTICEABLE = "noticeable"
    MAINTENANCE = "maintenance"


class Course(_Table, table=True):
    """A patient's treatment plan: `sessions` course sessions, then maintenance."""

    id: int | None = Field(default=None, primary_key=True)
    patient_id: int = _ref("patient.id", "CASCADE", nullable=False, index=True)
    plan: str = Field(default=CoursePlanKind.MILD, max_length=16)
    sessions: int = 1
    maintenance_stopped_at: datetime | None = _dt()
    created_at: datetime = _dt(nullable=False)


class CourseSession(_Table, table=True):
    """Which course a session belongs to."""

    __tablename__ = "course_session"

    session_id: int = _ref("treatment_session.id", "CASCADE", primary_key=True)
    course_id: int = _ref("course.id", "CASCADE", nullable=False)


class BroadcastState(StrEnum):
    DRAFT = "draft"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"


class Broadcast(_Table, table=True):
    """A staff message to many patients; each recipient is one planned row (BROADCAST)."""

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinic.id", index=True)
    created_by: int = Field(sa_column=Column(sa.BigInteger(), nullable=False))
    text: str = Field(max_length=4000)
    audience: str | None = Field(default=None, max_length=16)
    state: str = Field(default=BroadcastState.DRAFT, max_length=16)
    recipients: int = 0
    # The staff message that shows live progress (edited) and where the report goes.
    progress_chat_id: int | None = Field(
        default=None, sa_column=Column(sa.BigInteger(), nullable=True)
    )
    progress_message_id: int | None = None
    progress_at: datetime | None = _dt()
    created_at: datetime = _dt(nullable=False)
    started_at: datetime | None = _dt()
    finished_at: datetime | None = _dt()


class BroadcastRecipient(_Table, table=True):
    """One patient of a broadcast: the primary key makes a second copy impossible."""

    __tablename__ = "broadcast_recipient"

    broadcast_id: int = _ref("broadcast.id", "CASCADE", primary_key=True)
    patient_id: int = _ref("patient.id", "CASCADE", primary_key=True)
    message_id: int = _ref("planned_message.id", "CASCADE", nullable=False, index=True)


class Appointment(_Table, table=True):
    """One imported line of a booking system's export (the natural key makes re-import a
    no-op): the patient's identity as the booking system knows it, and the start time."""

    __table_args__ = (sa.UniqueConstraint("clinic_id", "patient_key", "start_at"),)

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinic.id")  # its natural key's index serves it
    patient_key: str = Field(max_length=100)
    start_at: datetime = _dt(nullable=False)
    session_id: int | None = _ref("treatment_session.id", "SET NULL")
    invite_code: str | None = Field(default=None, max_length=40)
    created_at: datetime = _dt(nullable=False)


# --- Patients and the clinic talking (issue 8) -----------------------------------------------


class InboxKind(StrEnum):
    """What an inbox row is."""

    DRAFT = "draft"  # free text the patient has not (yet) chosen to send to the clinic
    MESSAGE = "message"  # the patient wrote to the clinic
    RED_FLAG = "red_flag"  # the patient's words named a red-flag sign: an alert
    NOTE = "note"  # a check-in's "something else" description
    SCREENING = "screening"  # a session booked with a screening "yes"
    REPLY = "reply"  # a staff answer to the patient


class InboxMessage(_Table, table=True):
    """One message between a patient and their clinic, in either direction.

    The patient's words are kept as written (truncated), never logged. Staff are told through
    delivery rows (`PlannedMessage.chat_id`), and a staff answer is a delivery row to the
    patient (`delivery_id`), so nothing lives only in memory. Erased with the patient.
    """

    __tablename__ = "inbox_message"
    # AUTOINCREMENT on SQLite (`dialect_options_for`): an id is never reused after a delete,
    # so a button naming an erased draft can never send a newer one.
    __table_args__ = (sa.Index("ix_inbox_message_clinic_created", "clinic_id", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    patient_id: int = _ref("patient.id", "CASCADE", nullable=False, index=True)
    clinic_id: int = Field(foreign_key="clinic.id")
    kind: str = Field(max_length=16)
    text: str = Field(default="", max_length=4000)
    # Red-flag sign keys found in the text (messages/safety.py), or the screening keys.
    signs: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    session_id: int | None = _ref("treatment_session.id", "SET NULL")
    checkin_id: int | None = _ref("checkin.id", "CASCADE")
    # A reply: the message it answers, the staff member who wrote it, and its delivery row.
    reply_to: int | None = _ref("inbox_message.id", "CASCADE")
    author_id: int | None = Field(default=None, sa_column=Column(sa.BigInteger(), nullable=True))
    delivery_id: int | None = _ref("planned_message.id", "SET NULL")
    created_at: datetime = _dt(nullable=False)
    handled_at: datetime | None = _dt()
    handled_by: int | None = Field(default=None, sa_column=Column(sa.BigInteger(), nullable=True))


class StaffDraft(_Table, table=True):
    """A staff member's conversation state: the inbox message their next text answers."""

    __tablename__ = "staff_draft"

    tg_user_id: int = Field(sa_column=Column(sa.BigInteger(), primary_key=True))
    reply_to: int = _ref("inbox_message.id", "CASCADE", nullable=False)
    created_at: datetime = _dt(nullable=False)


class ReplanRun(_Table, table=True):
    """A clinic-wide replan (`aftercare replan`): its sessions are replanned in id order, in
    batches that each commit with `cursor` (the last session done), so a killed run is
    finished by the next one and no session is planned twice."""

    __tablename__ = "replan_run"

    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = _ref("clinic.id", "CASCADE", nullable=False, index=True)
    reason: str = Field(default="", max_length=200)
    total: int = 0
    done: int = 0
    cursor: int = 0
    # Sessions booked after this instant were planned with the new settings already.
    started_at: datetime = _dt(nullable=False)
    finished_at: datetime | None = _dt()


class UpdateOffset(_Table, table=True):
    """Long polling: the next update a bot's leader asks Telegram for, written after each
    update is handled. A stand-by that takes over resumes here: Telegram keeps every update
    until a getUpdates asks past it, so nothing that arrived meanwhile is lost, and at most
    the update being handled when a leader died is handled again (issue 13)."""

    __tablename__ = "update_offset"

    bot_id: int = Field(sa_column=Column(sa.BigInteger(), primary_key=True))
    next_update_id: int = Field(sa_column=Column(sa.BigInteger(), nullable=False))
    updated_at: datetime = _dt(nullable=False)


# --- Delivery (issues 4 and 11) --------------------------------------------------------------
# The pending rows of each priority in claim order, and the rows being sent: the claim, the
# expiry sweep and the next wake-up read only the due end of each priority's range (and the
# few rows in flight), however many rows wait for later or for the next priority, and a sent
# history is in neither index (docs/delivery.md). Partial indexes: a query is served by one
# only with the same condition written into its text (`planned_state_is`), not bound.
_PM_COLUMNS = PlannedMessage.__table__.c  # type: ignore[attr-defined]


def planned_state_is(state: MessageState) -> sa.ColumnElement[bool]:
    """planned_message.state = `state`, the value written into the statement: SQLite picks a
    partial index only for a condition it can see is the index's own, and PostgreSQL's
    generic plan of a prepared statement cannot use one for a bound value."""
    found: sa.ColumnElement[bool] = _PM_COLUMNS.state == sa.literal_column(f"'{state.value}'")
    return found


def pending_due(priority: int, now: datetime) -> sa.ColumnElement[bool]:
    """Pending rows of `priority` due by `now`: the due end of that priority's range of the
    pending index."""
    found: sa.ColumnElement[bool] = sa.and_(
        planned_state_is(MessageState.PENDING),
        _PM_COLUMNS.priority == priority,
        _PM_COLUMNS.due_at <= now,
    )
    return found


_PENDING_INDEX = sa.Index(
    "ix_planned_message_pending",
    _PM_COLUMNS.priority,
    _PM_COLUMNS.due_at,
    _PM_COLUMNS.seq,
    _PM_COLUMNS.id,
    info={"where": planned_state_is(MessageState.PENDING)},
)
_SENDING_INDEX = sa.Index(
    "ix_planned_message_sending",
    _PM_COLUMNS.lease_until,
    info={"where": planned_state_is(MessageState.SENDING)},
)


def dialect_options_for(dialect: str) -> None:
    """Give the tables their options in `dialect`'s own keywords, once an engine of it is
    made (`scheduler.db.make_engine`): the partial indexes their condition (`sqlite_where`,
    `postgresql_where`), and on SQLite the inbox its AUTOINCREMENT. Declared with the table
    or the index, such a keyword imports that dialect's module, and `aftercare run` on SQLite
    would load PostgreSQL's (and the other way round). The migrations create them."""
    if dialect in ("sqlite", "postgresql"):
        for index in (_PENDING_INDEX, _SENDING_INDEX):
            index.dialect_kwargs[f"{dialect}_where"] = index.info["where"]
    if dialect == "sqlite":
        InboxMessage.__table__.dialect_kwargs["sqlite_autoincrement"] = True  # type: ignore[attr-defined]


# --- Staff views at scale (issue 11) ----------------------------------------------------------
# Every staff page and count reads an index range, never the whole table: /patients pages by
# (clinic, id) keys; the audience counts read the reachability columns from the index alone; a
# patient's next and last sessions are one seek each; /alerts, the inbox's open count and each
# message's latest answer, and the delivery export (in due order) each have theirs.
_STAFF_INDEXES = (
    sa.Index("ix_patient_clinic_id_id", col(Patient.clinic_id), col(Patient.id)),
    sa.Index(
        "ix_patient_clinic_reachable",
        col(Patient.clinic_id),
        col(Patient.blocked_at),
        col(Patient.paused_at),
        col(Patient.consent_at),
    ),
    sa.Index(
        "ix_treatment_session_patient_state_start",
        col(TreatmentSession.patient_id),
        col(TreatmentSession.state),
        col(TreatmentSession.start_at),
        col(TreatmentSession.id),
    ),
    sa.Index(
        "ix_treatment_session_clinic_state_start",
        col(TreatmentSession.clinic_id),
        col(TreatmentSession.state),
        col(TreatmentSession.start_at),
    ),
    # A replan's batches: the clinic's booked sessions in id order, after the run's cursor.
    sa.Index(
        "ix_treatment_session_clinic_state_id",
        col(TreatmentSession.clinic_id),
        col(TreatmentSession.state),
        col(TreatmentSession.id),
    ),
    sa.Index("ix_course_session_course_id", col(CourseSession.course_id)),
    sa.Index("ix_checkin_answered_at_id", col(CheckIn.answered_at), col(CheckIn.id)),
    sa.Index("ix_inbox_message_reply_to", col(InboxMessage.reply_to)),
    sa.Index(
        "ix_inbox_message_clinic_open",
        col(InboxMessage.clinic_id),
        col(InboxMessage.kind),
        col(InboxMessage.handled_at),
    ),
    sa.Index("ix_planned_message_due_at_id", col(PlannedMessage.due_at), col(PlannedMessage.id)),
    # Who is due for maintenance: the clinic's patients whose maintenance counts from before
    # a cutoff, oldest first, read from the index alone (their zone picks the cutoff, and
    # the reachability columns filter them), both for the count and for the page.
    sa.Index(
        "ix_patient_clinic_maintenance_from",
        col(Patient.clinic_id),
        col(Patient.maintenance_from),
        col(Patient.id),
        col(Patient.timezone),
        col(Patient.blocked_at),
        col(Patient.paused_at),
        col(Patient.consent_at),
    ),
    # The zones of a clinic's patients (the due list's cutoffs), a seek each.
    sa.Index("ix_patient_clinic_timezone", col(Patient.clinic_id), col(Patient.timezone)),
    # Who has a session still to come (a broadcast's course audience): the clinic's patients
    # whose latest booked session starts after now, reachability read from the index.
    sa.Index(
        "ix_patient_clinic_last_session_start",
        col(Patient.clinic_id),
        col(Patient.last_session_start),
        col(Patient.blocked_at),
        col(Patient.paused_at),
        col(Patient.consent_at),
    ),
)


# --- The clinic dashboard (issue 12) -----------------------------------------------------------
# Patients found by the start of their name: one index range per search, case-folded the way
# the database folds it (`lower`), whatever the number of patients.
sa.Index(
    "ix_patient_clinic_name",
    col(Patient.clinic_id),
    sa.func.lower(col(Patient.first_name)),
    col(Patient.id),
)


class DashboardLogin(_Table, table=True):
    """A one-time login link that `/dashboard` sent to a staff member: only its hash is kept;
    it is used once (a conditional UPDATE sets `used_at`) and before `expires_at`."""

    __tablename__ = "dashboard_login"

    token_hash: str = Field(primary_key=True, max_length=64)
    tg_user_id: int = Field(sa_column=Column(sa.BigInteger(), nullable=False))
    language: str = Field(default="en", max_length=8)
    expires_at: datetime = _dt(nullable=False)
    used_at: datetime | None = _dt()
    created_at: datetime = _dt(nullable=False)


class DashboardSession(_Table, table=True):
    """A browser's (or the Mini App's) session: the cookie's hash, whose it is, until when.
    In the database, so that any process can serve the dashboard, and logout ends it."""

    __tablename__ = "dashboard_session"

    token_hash: str = Field(primary_key=True, max_length=64)
    tg_user_id: int = Field(sa_column=Column(sa.BigInteger(), nullable=False, index=True))
    language: str = Field(default="en", max_length=8)
    expires_at: datetime = _dt(nullable=False, index=True)
    created_at: datetime = _dt(nullable=False)
