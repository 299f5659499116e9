"""Progress reporting: what a platform says while it works, and how it reaches users.

A platform calls `progress.task("Creating Cloudlet")` or `progress.step("...")`; it never
knows where the words go. The CCRM renders them into the Info object's `StatusInfo` and
streams it; the CRM writes them into its Info cache, which notify forwards. The rendering
is the original's (`StatusInfo.SetTask/SetStep`, crm_platforms.md §2), because users read
these lines.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from edgeproto import common_pb2
from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.message import Message

from edge_cloud.objects.gojson import enum_go_name

__all__ = [
    "InfoSender",
    "NoProgress",
    "Progress",
    "RecordedProgress",
    "UpdateType",
    "render_status",
    "reset_status",
    "set_status_step",
    "set_status_task",
]


class UpdateType(enum.IntEnum):
    """The original's `CacheUpdateType` values used for progress (`StreamStatus`)."""

    TASK = 0
    STEP = 1


class Progress(Protocol):
    """Where a platform reports what it is doing; calls never block and never fail."""

    def task(self, message: str) -> None:
        """A new top-level task ("Creating Cloudlet"); numbers the task."""

    def step(self, message: str) -> None:
        """A step within the current task."""


class NoProgress:
    """Progress that goes nowhere, for calls nobody watches."""

    def task(self, message: str) -> None:
        """Drop the message."""

    def step(self, message: str) -> None:
        """Drop the message."""


class RecordedProgress:
    """Progress kept in a list, for tests and for replaying to a late reader.

    Attributes:
        updates: (kind, message) in the order reported.
    """

    def __init__(self) -> None:
        self.updates: list[tuple[UpdateType, str]] = []

    def task(self, message: str) -> None:
        """Record a task."""
        self.updates.append((UpdateType.TASK, message))

    def step(self, message: str) -> None:
        """Record a step."""
        self.updates.append((UpdateType.STEP, message))

    @property
    def messages(self) -> list[str]:
        """Just the messages, in order."""
        return [m for _, m in self.updates]

    def clear(self) -> None:
        """Forget everything recorded so far."""
        self.updates.clear()


def render_status(status: common_pb2.StatusInfo) -> str:
    """`TaskName(n of max), StepName` as the original prints a status line."""
    if status.task_number == 0:
        return ""
    line = status.task_name
    if status.max_tasks > 0:
        line += f"({status.task_number} of {status.max_tasks})"
    if status.step_name:
        line += f", {status.step_name}"
    return line


def set_status_task(status: common_pb2.StatusInfo, task: str) -> None:
    """Start a task: ignored when empty or unchanged, else numbered and a line appended."""
    if not task or status.task_name == task:
        return
    status.task_number += 1
    status.task_name = task
    status.step_name = ""
    status.msg_count += 1
    status.msgs.append(render_status(status))


def set_status_step(status: common_pb2.StatusInfo, step: str) -> None:
    """Set the step of the current task and append its line."""
    status.step_name = step
    status.msg_count += 1
    status.msgs.append(render_status(status))


def reset_status(status: common_pb2.StatusInfo) -> None:
    """Zero the status and drop its lines."""
    status.Clear()


InfoT = TypeVar("InfoT", bound=Message)


class InfoSender(Generic[InfoT]):
    """Builds up one Info object (CloudletInfo, ClusterInstInfo, ...) and emits each update.

    The original's generated `*InfoSender` (crm_platforms.md §2) as one generic class: it
    keeps a local copy so status lines accumulate, and hands every update (a full copy
    whose `fields` names what changed) to `emit` — a gRPC stream in the CCRM, an Info
    cache in the CRM. It is also the `Progress` given to platforms.

    Args:
        info: The starting Info, usually just its key.
        emit: Called with a copy of the Info after each change.
        state_enum: The enum of the Info's `state` field, for the state's status line.
        fields: Field numbers (as strings) of `state`, `errors` and `status` in this Info.
    """

    def __init__(
        self,
        info: InfoT,
        emit: Callable[[InfoT], None],
        *,
        state_enum: EnumDescriptor,
        fields: tuple[str, str, str],
    ) -> None:
        self._info = info
        self._emit = emit
        self._state_enum = state_enum
        self._state_field, self._errors_field, self._status_field = fields

    @property
    def info(self) -> InfoT:
        """The Info as sent so far (do not modify; use `send_update`)."""
        return self._info

    def _status(self) -> common_pb2.StatusInfo:
        info: Any = self._info  # every Info message has a `status` StatusInfo
        status: common_pb2.StatusInfo = info.status
        return status

    def _send(self, fields: Sequence[str]) -> None:
        info: Any = self._info
        del info.fields[:]
        info.fields.extend(fields)
        out = type(self._info)()
        out.CopyFrom(self._info)
        self._emit(out)

    def task(self, message: str) -> None:
        """Progress: a new task line (`SendStatus(UpdateTask, ...)`)."""
        set_status_task(self._status(), message)
        self._send([self._status_field])

    def step(self, message: str) -> None:
        """Progress: a step line (`SendStatus(UpdateStep, ...)`)."""
        set_status_step(self._status(), message)
        self._send([self._status_field])

    def send_state(self, state: int, *, error: str | None = None, reset: bool = False) -> None:
        """Report a new state, with its name as a task line ("Creating", "CreateError").

        Errors become `[error]`, or are cleared without one.

        Args:
            state: The new state value.
            error: The error that caused it, if any.
            reset: Clear the status lines first (start of a new operation).
        """
        info: Any = self._info
        if reset:
            reset_status(self._status())
        del info.errors[:]
        if error is not None:
            info.errors.append(error)
        info.state = state
        set_status_task(self._status(), enum_go_name(self._state_enum, state))
        self._send([self._state_field, self._errors_field, self._status_field])

    def send_update(self, update: Callable[[InfoT], None], fields: Sequence[str]) -> None:
        """Change arbitrary fields and send them.

        Args:
            update: Sets the fields on the local Info.
            fields: The field numbers it changed.
        """
        update(self._info)
        self._send(list(fields))
