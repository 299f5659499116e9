"""How the CRM reacts to ClusterInsts and AppInsts the Controller sends (crm_platforms.md §4.3).

Notify callbacks must not block the connection, so each object's work runs in a task of its
own; work for one object is serialised (a delete waits for the create before it), work for
different objects runs concurrently.

Per object, by the state the Controller sent:

- *_REQUESTED, new to us or changed to it: carry it out through the shared handler, which
  reports CREATING/.../READY (or the error state) into the Info cache, which notify sends
  up. Then the cloudlet's resource snapshot is refreshed.
- CREATING/UPDATING/DELETING: the Controller believes we are mid-operation. If we are not
  (no work queued, our Info neither in that state nor past it: a CRM that restarted in the
  middle), report the matching error state, "inconsistent Controller vs CRM state", so the
  operation ends instead of waiting for a report that will never come.
- READY seen for the first time (after a restart): remembered, nothing is redone.
- deleted: the Info goes too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, Generic, TypeVar

from edgeproto import common_pb2
from google.protobuf.message import Message

from edge_cloud.crmutil import InfoCache
from edge_cloud.errors import EdgeError
from edge_cloud.objects import keys

__all__ = ["INCONSISTENT", "KeyedTasks", "ObjectEvents"]

log = logging.getLogger(__name__)

TS = common_pb2
INCONSISTENT: Final = "inconsistent Controller vs CRM state"
REQUESTED: Final = frozenset({TS.CREATE_REQUESTED, TS.UPDATE_REQUESTED, TS.DELETE_REQUESTED})
# transient state → (states our Info may be in without contradicting it, error state)
_TRANSIENT: Final[dict[int, tuple[frozenset[int], int]]] = {
    TS.CREATING: (frozenset({TS.CREATING, TS.READY, TS.CREATE_ERROR}), TS.CREATE_ERROR),
    TS.UPDATING: (frozenset({TS.UPDATING, TS.READY, TS.UPDATE_ERROR}), TS.UPDATE_ERROR),
    TS.DELETING: (
        frozenset({TS.DELETING, TS.DELETE_DONE, TS.NOT_PRESENT, TS.DELETE_ERROR}),
        TS.DELETE_ERROR,
    ),
}

ObjT = TypeVar("ObjT", bound=Message)
InfoT = TypeVar("InfoT", bound=Message)


class KeyedTasks:
    """At most one running job per key; later jobs for a key wait for the earlier ones."""

    def __init__(self) -> None:
        self._tails: dict[str, asyncio.Task[None]] = {}

    @property
    def pending(self) -> int:
        """How many keys have work queued or running."""
        return sum(1 for task in self._tails.values() if not task.done())

    def busy(self, key: str) -> bool:
        """Whether a job for `key` is queued or running."""
        task = self._tails.get(key)
        return task is not None and not task.done()

    def submit(self, key: str, job: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run `job` after the jobs already submitted for `key`."""
        previous = self._tails.get(key)

        async def run() -> None:
            if previous is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.shield(previous)
            await job()

        task = asyncio.create_task(run(), name=f"crm-{key}")
        self._tails[key] = task

        def done(t: asyncio.Task[None]) -> None:
            if self._tails.get(key) is t:
                del self._tails[key]
            if not t.cancelled() and t.exception() is not None:
                log.error("CRM work on %s failed", key, exc_info=t.exception())

        task.add_done_callback(done)
        return task

    async def idle(self) -> None:
        """Wait until every job submitted so far has ended."""
        while self._tails:
            await asyncio.gather(*list(self._tails.values()), return_exceptions=True)

    async def close(self) -> None:
        """Cancel every job and wait for them (shutdown)."""
        tasks = list(self._tails.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tails.clear()


class ObjectEvents(Generic[ObjT, InfoT]):
    """ClusterInst or AppInst events of one CRM.

    Args:
        kind: "ClusterInst" or "AppInst", for logs.
        infos: The Info cache of the type (mirrored upstream).
        apply: The shared handler's `apply(obj, sender) -> acted`.
        tasks: The CRM's per-key job runner.
        changed_infra: Called after work that changed the infrastructure (snapshot).
    """

    def __init__(
        self,
        kind: str,
        infos: InfoCache[InfoT],
        apply: Callable[[ObjT, Any], Awaitable[bool]],
        tasks: KeyedTasks,
        changed_infra: Callable[[], None],
    ) -> None:
        self._kind = kind
        self._infos = infos
        self._apply = apply
        self._tasks = tasks
        self._changed_infra = changed_infra

    def _name(self, obj: Message) -> str:
        return f"{self._kind} {keys.key_string(obj)}"

    def updated(self, new: ObjT, old: ObjT | None) -> None:
        """An object arrived or changed (or is replayed after a restart, with `old` None)."""
        obj: Any = new
        state = int(obj.state)
        name = self._name(new)
        if state in REQUESTED:
            if old is not None and int(getattr(old, "state", 0)) == state:
                return  # another field changed; the requested state is already being handled
            self._tasks.submit(name, lambda: self._work(new))
        elif state in _TRANSIENT:
            if not self._tasks.busy(name):
                self._check_transient(new, state)
        elif state == TS.READY and old is None:
            self._infos.seed(obj.key, TS.READY)

    def deleted(self, old: ObjT) -> None:
        """The Controller removed the object: so does our Info (after queued work)."""
        key: Any = old

        async def forget() -> None:
            self._infos.delete(key.key)

        self._tasks.submit(self._name(old), forget)

    async def _work(self, obj: ObjT) -> None:
        target: Any = obj
        sender = self._infos.sender(target.key)
        state = TS.TrackedState.Name(target.state)
        log.info("%s: %s", self._name(obj), state)
        try:
            acted = await self._apply(obj, sender)
        except EdgeError as err:
            # the handler reported the error state already (or, for a missing App, the
            # Controller's wait times out with the original's behaviour)
            log.warning("%s: %s", self._name(obj), err)
            acted = True
        info: Any = sender.info
        log.info("%s: %s done, %s", self._name(obj), state, TS.TrackedState.Name(info.state))
        if acted:
            self._changed_infra()

    def _check_transient(self, obj: ObjT, state: int) -> None:
        target: Any = obj
        allowed, error = _TRANSIENT[state]
        info: Any = self._infos.get(target.key)
        if info is not None and int(info.state) in allowed:
            return
        log.warning(
            "%s is %s at the Controller but not here (CRM restarted mid-operation?): %s",
            self._name(obj),
            TS.TrackedState.Name(state),  # type: ignore[arg-type]
            INCONSISTENT,
        )
        message = (
            f"{INCONSISTENT}: the CRM has no record of this operation (it restarted in the "
            "middle of it); check the infrastructure and retry"
        )
        self._infos.sender(target.key).send_state(error, error=message, reset=True)
