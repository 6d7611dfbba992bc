"""Events of messages to running tasks, and of the values tasks publish.

``engine.send(task, topic, value)`` appends a :class:`MessageSent` to the task's inbox stream
``inbox-<task id>``, from any process; the task's ``engine.recv(topic)`` takes the next one of
its topic and records it (:class:`MessageReceived`) in the task's own stream, so that a re-run
reads the same message again and never another: exactly once in the task's history. A task
publishes progress values with ``engine.set_state(key, value)`` (:class:`StateSet`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from onward.events.base import Event

__all__ = ["MessageReceived", "MessageSent", "StateSet"]


class MessageSent(Event, frozen=True, kw_only=True):
    """A message for a task, on its inbox stream.

    Attributes:
        topic: what it is about; the task receives it by topic.
        value: its value, as plain JSON values.
        sender: who sent it.
    """

    family: ClassVar[str] = "message"

    topic: str
    value: Any = None
    sender: str = ""


class MessageReceived(Event, frozen=True, kw_only=True):
    """A task took a message (or gave up waiting for one): at this step of its run.

    Attributes:
        index: the step index the receive takes in the task's sequence.
        topic: the topic it waited for.
        inbox_version: the message's version in the inbox stream (None: the wait timed out).
        value: the message's value (None when it timed out).
    """

    family: ClassVar[str] = "message"

    index: int
    topic: str
    inbox_version: int | None = None
    value: Any = None


class StateSet(Event, frozen=True, kw_only=True):
    """A task published a value for others to read (``onward get TASK KEY``).

    Attributes:
        key: the value's name.
        value: the value, as plain JSON values.
    """

    family: ClassVar[str] = "message"

    key: str
    value: Any = None
