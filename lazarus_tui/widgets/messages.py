"""Messages from the engine thread to the UI, posted with ``post_message`` (thread-safe)."""

from __future__ import annotations

from textual.message import Message

from engine.session import ProgressEvent


class EngineProgress(Message):
    """One progress event of a job. Consecutive events of the same group coalesce:
    a fast engine cannot flood the UI, only the newest pending event is handled."""

    def __init__(self, group: str, event: ProgressEvent) -> None:
        super().__init__()
        self.group = group
        self.event = event

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, EngineProgress) and message.group == self.group


class EngineDied(Message):
    """The engine thread died (a bug) and a new one was started; ``reason`` is one line."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason
