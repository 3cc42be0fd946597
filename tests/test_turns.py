"""The bot's turns (bot/turns.py): different chats side by side, each chat's in order, no more
at once than allowed; and the poller's offset, which passes only updates handled, all of them
(bot/serve/polling.py: Handled)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from telegram import CallbackQuery, Chat, Message, Update, User

from bot.offline.harness import Harness
from bot.serve.polling import Handled
from bot.turns import SIDE_BY_SIDE, ChatTurns, side_by_side, turn_key


def message(update_id: int, chat_id: int) -> Update:
    user = User(id=chat_id, first_name="P", is_bot=False)
    chat = Chat(id=chat_id, type=Chat.PRIVATE)
    return Update(
        update_id,
        message=Message(update_id, datetime.now(UTC), chat, from_user=user, text="hi"),
    )


def button(update_id: int, chat_id: int) -> Update:
    """A button pressed under one of the bot's messages in the chat."""
    user = User(id=chat_id, first_name="P", is_bot=False)
    shown = Message(1, datetime.now(UTC), Chat(id=chat_id, type=Chat.PRIVATE), text="pick")
    return Update(update_id, callback_query=CallbackQuery("q", user, "ci", message=shown))


class Turns:
    """Updates given to ChatTurns as PTB's queue gives them (a task each, in order), each
    turn held until released."""

    def __init__(self, turns: ChatTurns) -> None:
        self.turns = turns
        self.started: list[int] = []
        self.finished: list[int] = []
        self.done: list[int] = []
        self._release: dict[int, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []
        turns.on_done.append(lambda update: self.done.append(update.update_id))  # type: ignore[attr-defined]

    async def _turn(self, update_id: int) -> None:
        self.started.append(update_id)
        await self._release[update_id].wait()
        self.finished.append(update_id)

    async def give(self, *updates: Update) -> None:
        for update in updates:
            self._release[update.update_id] = asyncio.Event()
            turn = self._turn(update.update_id)
            self._tasks.append(asyncio.create_task(self.turns.process_update(update, turn)))
        await settled()

    async def release(self, update_id: int) -> None:
        self._release[update_id].set()
        await settled()

    async def finish(self) -> None:
        for event in self._release.values():
            event.set()
        await asyncio.gather(*self._tasks)


async def settled() -> None:
    """Every task that can run has run as far as it can."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_turns_of_different_chats_run_side_by_side_and_each_chats_in_order() -> None:
    turns = Turns(ChatTurns(4))
    await turns.give(message(1, chat_id=10), button(2, chat_id=10), message(3, chat_id=20))
    # Chat 20's update starts beside chat 10's first; chat 10's second waits for its first.
    assert turns.started == [1, 3]
    await turns.release(3)
    assert turns.started == [1, 3] and turns.done == [3]
    await turns.release(1)
    assert turns.started == [1, 3, 2] and turns.done == [3, 1]
    await turns.finish()
    assert turns.finished == [3, 1, 2] and turns.done == [3, 1, 2]


async def test_one_chats_updates_keep_their_order_however_many_wait() -> None:
    turns = Turns(ChatTurns(8))
    await turns.give(*(message(n, chat_id=10) for n in range(1, 6)))
    for n in range(1, 6):
        assert turns.started == list(range(1, n + 1))
        await turns.release(n)
    await turns.finish()
    assert turns.finished == [1, 2, 3, 4, 5]


async def test_no_more_turns_at_once_than_allowed() -> None:
    turns = Turns(ChatTurns(2))
    await turns.give(*(message(n, chat_id=n) for n in (1, 2, 3)))
    assert turns.started == [1, 2]
    await turns.release(2)
    assert turns.started == [1, 2, 3]
    await turns.finish()


async def test_one_turn_at_a_time_takes_them_in_order() -> None:
    turns = Turns(ChatTurns(1))
    await turns.give(message(1, chat_id=10), message(2, chat_id=20))
    assert turns.started == [1]
    await turns.release(1)
    assert turns.started == [1, 2]
    await turns.finish()


def test_a_turn_is_its_chats_or_else_its_users() -> None:
    assert turn_key(message(1, chat_id=10)) == 10
    assert turn_key(button(2, chat_id=20)) == 20
    no_message = Update(3, callback_query=CallbackQuery("q", User(30, "P", False), "ci"))
    assert turn_key(no_message) == 30
    assert turn_key(Update(4)) is None


def test_side_by_side_on_postgresql_only() -> None:
    assert side_by_side("sqlite+aiosqlite:///aftercare.db") == 1
    assert side_by_side("postgresql+asyncpg://u:p@db/aftercare") == SIDE_BY_SIDE > 1


def test_the_offset_passes_only_updates_handled_with_none_in_hand_before_them() -> None:
    handled = Handled()
    for update_id in (7, 8, 9):
        handled.give(update_id)
    handled.done(8)
    handled.done(9)
    assert handled.next_offset() is None  # 7 is still in hand
    assert handled.in_hand == 1
    handled.done(7)
    assert handled.next_offset() == 10
    assert handled.next_offset() is None and handled.in_hand == 0
    handled.give(10)
    handled.done(99)  # not one it gave: not counted
    assert handled.in_hand == 1 and handled.next_offset() is None
    handled.done(10)
    assert handled.next_offset() == 11


async def test_patients_writing_at_once_are_answered_side_by_side_each_in_order(
    h: Harness,
) -> None:
    """Twelve patients each send three commands before the bot polls: on PostgreSQL their
    turns run side by side, on SQLite one at a time; either way every patient gets the
    same answers in the same order as the first."""
    patients = [h.patient(4000 + n, "Pat") for n in range(12)]
    for text in ("/start", "/help", "/privacy"):
        for patient in patients:
            patient.send(text)
    await h.settle()
    answers = [[message.text for message in patient.inbox] for patient in patients]
    assert len(answers[0]) >= 3
    for each in answers:
        assert each == answers[0]
    if side_by_side(h.settings.database_url) == 1:
        assert h.most_turns_at_once == 1
    else:
        assert h.most_turns_at_once > 1
