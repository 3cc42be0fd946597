"""What `aftercare demo` prints: each chat's new and edited bot messages once, stamped with
the clinic's local time, and what the scripted people type and press.

Shared by the demo's parts (bot/offline/demo.py, demo_patient.py, demo_clinic.py).
"""

from __future__ import annotations

import textwrap
from datetime import datetime
from typing import TextIO
from zoneinfo import ZoneInfo

from bot.offline.harness import Harness
from bot.offline.sandbox import SandboxUser, SentMessage
from messages.calendars import format_local


class Transcript:
    """The printed conversation."""

    def __init__(self, out: TextIO, zone: ZoneInfo, lang: str = "en") -> None:
        self._out = out
        self._zone = zone
        self.lang = lang

    def stamp(self, at: datetime) -> str:
        return format_local(at, self._zone, self.lang, "datetime")

    def say(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()

    def scene(self, title: str) -> None:
        self.say(f"\n=== {title} ===")

    def message(self, message: SentMessage, who: str) -> None:
        """One bot message: its time, its text indented, its buttons' labels."""
        at = message.edit_date or message.date
        kind = " [photo]" if message.photo else ""
        body = textwrap.indent(message.text, "    ")
        self.say(f"[{self.stamp(at)}] {who}{kind}:\n{body}")
        labels = [label for row in message.buttons for label, _ in row]
        if labels:
            self.say("    " + "  ".join(f"[{label}]" for label in labels[:12]))


class Chat:
    """One scripted person's chat with the bot: what they do, and what the bot answers,
    each new or edited message printed once."""

    def __init__(self, t: Transcript, user: SandboxUser, who: str, *, named: bool = False):
        self.t = t
        self.user = user
        self.who = who
        self._to = f" to {who}" if named else ""  # "bot to patient Ben" where chats alternate
        self._seen: dict[int, int] = {}  # message id -> number of edits printed

    def show(self) -> None:
        for message in self.user.inbox:
            edits = len(message.history)
            if self._seen.get(message.message_id) == edits:
                continue
            label = "bot" if message.message_id not in self._seen else "bot (edits its message)"
            self.t.message(message, label + self._to)
            self._seen[message.message_id] = edits

    def _tell(self, h: Harness, action: str) -> None:
        self.t.say(f"[{self.t.stamp(h.clock.now())}] {self.who}: {action}")

    async def _answers(self, h: Harness) -> None:
        await h.settle()
        self.show()

    async def did(self, h: Harness, action: str) -> None:
        """Print what the person has just done, then the bot's answers."""
        self._tell(h, action)
        await self._answers(h)

    async def type(self, h: Harness, text: str) -> None:
        self._tell(h, text)
        self.user.send(text)
        await self._answers(h)

    async def answer_screening(self, h: Harness, *, na: tuple[str, ...] = ()) -> None:
        """Answer the health questions: "does not apply" to the keys in `na`, "no" to the
        rest, remembered answers confirmed."""
        for _ in range(20):
            buttons = [d for row in self.user.last().buttons for _, d in row]
            asked = [d for d in buttons if d.startswith("scr:")]
            if not asked:
                return
            if "scr:confirm:keep" in asked:
                await self.press(h, "scr:confirm:keep")
                continue
            key = asked[0].split(":")[1]
            await self.press(h, f"scr:{key}:{'na' if key in na else 'no'}")

    async def press_starting(self, h: Harness, prefix: str) -> None:
        """Press the newest button whose callback data starts with `prefix`."""
        data = next(
            d
            for m in reversed(self.user.inbox)
            for row in m.buttons
            for _, d in row
            if d.startswith(prefix)
        )
        await self.press(h, data)

    async def press(self, h: Harness, data: str) -> None:
        """Press the button with this callback data on the latest bot message showing it."""
        message = next(
            m
            for m in reversed(self.user.inbox)
            if any(d == data for row in m.buttons for _, d in row)
        )
        label = next(lbl for row in message.buttons for lbl, d in row if d == data)
        self._tell(h, f"presses [{label}]")
        self.user.press(message.message_id, data)
        await self._answers(h)
