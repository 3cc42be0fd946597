"""Screening that fits the person: which health question comes next, and what is remembered.

Pure: the protocol's questions, what the patient told us before (`remembered`), and the
answers of this booking in; the next thing to ask out. The order:

1. If answers are remembered from an earlier booking (lasting conditions, and questions that
   do not apply to the patient), they are shown once to confirm ("still true?"), not asked
   from scratch. "Something changed" forgets them for this booking.
2. Then every question not yet answered, in protocol order, except those covered by a
   confirmed remembered answer and those that follow one that does not apply (periods, once
   pregnancy does not apply). A question `about_date` is asked after the date is chosen, so
   its text can name it; a move asks only those.

A "yes" never blocks the booking: it flags the session for the clinic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from messages.protocol import Answer, Protocol, ScreeningQuestion

CONFIRM = "confirm"  # the "still true?" step of remembered answers
ANSWERS: tuple[Answer, ...] = ("yes", "no", "na")


@dataclass(frozen=True)
class Next:
    """What to ask now: the remembered answers to confirm, a question, or nothing more."""

    confirm: bool = False
    question: ScreeningQuestion | None = None

    @property
    def done(self) -> bool:
        return not self.confirm and self.question is None


def remembered_of(protocol: Protocol, conditions: Mapping[str, str]) -> dict[str, str]:
    """The stored answers that still mean something: lasting answers, and "does not apply"."""
    kept: dict[str, str] = {}
    for question in protocol.screening:
        answer = conditions.get(question.key)
        does_not_apply = answer == "na" and question.not_applicable
        if does_not_apply or (answer in ("yes", "no") and question.lasting):
            kept[question.key] = str(answer)
    return kept


def next_step(
    protocol: Protocol,
    *,
    remembered: Mapping[str, str],
    answers: Mapping[str, str],
    confirmed: bool | None,
    only_about_date: bool = False,
) -> Next:
    """The next thing to ask. `confirmed`: None while the remembered answers were not shown
    yet, True if the patient said they still hold, False if something changed."""
    if remembered and confirmed is None:
        return Next(confirm=True)
    known = _known(remembered, answers, confirmed)
    for question in protocol.screening:
        if question.key in known:
            continue
        if only_about_date and not question.about_date:
            continue
        skip = question.skip_if_not_applicable
        if skip is not None and known.get(skip) == "na":
            continue
        return Next(question=question)
    return Next()


def session_answers(
    protocol: Protocol,
    *,
    remembered: Mapping[str, str],
    answers: Mapping[str, str],
    confirmed: bool | None,
) -> dict[str, bool]:
    """What the session records: every question answered yes or no (True: yes), from this
    booking's answers and the confirmed remembered ones; "does not apply" is left out."""
    known = _known(remembered, answers, confirmed)
    return {
        q.key: known[q.key] == "yes" for q in protocol.screening if known.get(q.key) in ANSWERS[:2]
    }


def to_remember(
    protocol: Protocol,
    *,
    remembered: Mapping[str, str],
    answers: Mapping[str, str],
    confirmed: bool | None,
) -> dict[str, str]:
    """The answers kept for the next booking (lasting ones, and "does not apply")."""
    return remembered_of(protocol, _known(remembered, answers, confirmed))


def _known(
    remembered: Mapping[str, str], answers: Mapping[str, str], confirmed: bool | None
) -> dict[str, str]:
    """This booking's answers, over the remembered ones if the patient confirmed them."""
    return {**(remembered if confirmed else {}), **answers}
