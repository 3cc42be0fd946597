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
from sqlmodel import JSON, Column, Field, SQLModel


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


def _dt(*, index: bool = False, nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), index=index, nullable=nullable))


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
    """Lower goes first: time-critical reminders ahead of bulk broadcasts."""

    REMINDER = 0
    BROADCAST = 10


class Clinic(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(index=True, unique=True, max_length=64)
    name: str = Field(max_length=200)
    timezone: str = Field(max_length=64)
    address: str = Field(default="", max_length=500)
    phone: str = Field(default="", max_length=64)
    booking_url: str | None = Field(default=None, max_length=500)
    protocol_file: str | None = Field(default=None, max_length=500)
    created_at: datetime = _dt(nullable=False)


class Patient(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    clinic_id: int = Field(foreign_key="clinic.id", index=True)
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
    # What the next typed text answers (e.g. "date", "timezone"); conversation state lives
    # here, not in memory, so a restart does not lose a patient mid-flow.
    awaiting: str | None = Field(default=None, max_length=32)
    draft: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _dt(nullable=False)


class TreatmentSession(SQLModel, table=True):
    __tablename__ = "treatment_session"

    id: int | None = Field(default=None, primary_key=True)
    patient_id: int = Field(foreign_key="patient.id", index=True)
    clinic_id: int = Field(foreign_key="clinic.id", index=True)
    start_at: datetime = _dt(index=True, nullable=False)
    end_at: datetime = _dt(nullable=False)
    state: str = Field(default=SessionState.BOOKED, max_length=16)
    screening: dict[str, bool] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )
    flagged: bool = False
    created_at: datetime = _dt(nullable=False)


class PlannedMessage(SQLModel, table=True):
    __tablename__ = "planned_message"
    __table_args__ = (sa.Index("ix_planned_message_due", "state", "priority", "due_at"),)

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
    created_at: datetime = _dt(nullable=False)
