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

import msgspec

from messages.protocol import Answer, Protocol, ScreeningQuestion

CONFIRM = "confirm"  # the "still true?" step of remembered answers
ANSWERS: tuple[Answer, ...] = ("yes", "no", "na")


class Next(msgspec.Struct, frozen=True):
    """What to ask now: the remembered answers to confirm, a question, or nothing more."""

    confirm: bool = False
    question: ScreeningQuestion | None = None

    @property
    def done(self) -> bool:
        return not self.confirm and self.question is None


def remembered_of(protocol: Protocol, conditions: Mapping[str, str]) -> dict[str, str]:
    """The answers worth remembering, of those stored or of those that stand after a booking:
    lasting answers, and "does not apply"."""
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
    known = standing(remembered, answers, confirmed)
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


def standing(
    remembered: Mapping[str, str], answers: Mapping[str, str], confirmed: bool | None
) -> dict[str, str]:
    """The answers that stand: this booking's, over the remembered ones if the patient
    confirmed them. What the session records (`session_answers`) and what is remembered for
    the next booking (`remembered_of`) are read from these."""
    return {**(remembered if confirmed else {}), **answers}


def session_answers(protocol: Protocol, known: Mapping[str, str]) -> dict[str, bool]:
    """What the session records, from the answers that stand (`standing`): every question
    answered yes or no (True: yes); "does not apply" is left out."""
    return {
        q.key: known[q.key] == "yes" for q in protocol.screening if known.get(q.key) in ANSWERS[:2]
    }
