"""Which protocol a patient's timeline follows: their clinic's own file, or the deployment's.

A clinic's protocol file (`aftercare clinic edit --protocol-file`) is checked when it is set;
if it later becomes unreadable, the deployment's protocol is used and a warning logged, so
that a broken file never stops reminders.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from sqlmodel.ext.asyncio.session import AsyncSession

from messages.protocol import Protocol, ProtocolError, load_protocol
from scheduler.models import Clinic, Patient

log = logging.getLogger("aftercare.protocols")


@functools.lru_cache(maxsize=64)
def _load(path: str, mtime_ns: int) -> Protocol:  # noqa: ARG001  (the key: a changed file reloads)
    return load_protocol(Path(path))


def clinic_protocol(clinic: Clinic | None, default: Protocol) -> Protocol:
    return protocol_file(
        clinic.id if clinic else None, clinic.protocol_file if clinic else None, default
    )


def protocol_file(clinic_id: int | None, file: str | None, default: Protocol) -> Protocol:
    """The protocol in a clinic's file (`default` when it has none or it is unusable)."""
    if not file:
        return default
    path = Path(file)
    try:
        return _load(str(path), path.stat().st_mtime_ns)
    except (OSError, ProtocolError):
        log.warning("clinic %s: its protocol file is unusable; using the default", clinic_id)
        return default


async def protocol_of(*, session: AsyncSession, patient: Patient, default: Protocol) -> Protocol:
    """The protocol of the patient's clinic (`default` when the clinic has none)."""
    return clinic_protocol(await session.get(Clinic, patient.clinic_id), default)
