"""Live progress of images for Server-Sent Event streams (`GET /images/{id}/events`).

One `ProgressFeed` per API process watches every image someone streams. It reads their progress from the
catalog in one query and hands each stream what changed. What wakes it:

- Postgres: `LISTEN imago_progress` on a connection of its own; the pipeline's writers `NOTIFY` in the
  transaction that changes a status (`core/catalog/progress.py`), so a stream hears of a stage within
  milliseconds of its commit. The listening connection is re-opened when it breaks; meanwhile, and every
  `events_poll_s × 20` anyway, the feed reads on a timer, so a lost notification costs seconds, not events.
- SQLite (the embedded default): a timer, every `events_poll_s` (0.25 s), only while someone watches.

Streams carry states, not deltas: a stream starts with the image's current state, so a client that
reconnects misses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import threading
import time
from collections.abc import AsyncIterator

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.catalog.progress import CHANNEL, Progress, parse_announcement, read_progress

log = logging.getLogger("imago.api.events")
SAFETY_NET_FACTOR = 20
STOPPING = Progress(image_id=-1, tenant_id=-1, status="stopping", error=None, stages=())  # the server stops


class ProgressFeed:
    def __init__(self, catalog: Catalog, poll_s: float = 0.25):
        self.catalog = catalog
        self.poll_s = poll_s
        self._watchers: dict[int, set[asyncio.Queue[Progress | None]]] = {}
        self._last: dict[int, Progress] = {}
        self._changed: set[int] = set()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()
        self.listening = False  # a LISTEN connection is open (Postgres)
        self.stopping = False  # the server stops: streams end (their clients reconnect to the next one)

    @property
    def transport(self) -> str:
        return "postgres-notify" if self.catalog.engine.dialect.name == "postgresql" else "timer"

    @contextlib.asynccontextmanager
    async def watch(self, image_id: int) -> AsyncIterator[asyncio.Queue[Progress | None]]:
        """A queue receiving the image's state each time it changes (the current one first); None when the
        image no longer exists."""
        self._start()
        queue: asyncio.Queue[Progress | None] = asyncio.Queue()
        if self.stopping:
            queue.put_nowait(STOPPING)
        self._watchers.setdefault(image_id, set()).add(queue)
        self._last.pop(image_id, None)  # the new watcher gets the current state at the next read
        self._changed.add(image_id)
        self._wake_up()
        try:
            yield queue
        finally:
            watchers = self._watchers.get(image_id, set())
            watchers.discard(queue)
            if not watchers:
                self._watchers.pop(image_id, None)
                self._last.pop(image_id, None)

    def _start(self) -> None:
        if self._task is not None and not self._task.done():
            return
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name="imago-progress-feed")
        if self.transport == "postgres-notify" and (self._listener is None or not self._listener.is_alive()):
            self._stop.clear()
            self._listener = threading.Thread(target=self._listen, name="imago-progress-listen", daemon=True)
            self._listener.start()

    def end_streams(self) -> None:
        """The server is stopping: every stream ends now, cleanly (`STOPPING`), instead of being cut when
        uvicorn's grace period runs out; a client reconnects after the stream's `retry` delay."""
        self.stopping = True
        for queues in self._watchers.values():
            for queue in queues:
                queue.put_nowait(STOPPING)

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        wake = self._wake or asyncio.Event()
        while True:
            timeout = self.poll_s * (SAFETY_NET_FACTOR if self.listening else 1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)
            wake.clear()
            if not self._watchers:
                continue
            # notified images, plus all of them on the timer (no channel, or the safety net)
            wanted = list(self._watchers) if not self.listening or not self._changed else \
                [i for i in self._changed if i in self._watchers]
            self._changed.clear()
            try:
                found = await asyncio.to_thread(read_progress, self.catalog, wanted)
            except Exception as error:  # the catalog is down: streams wait, the next read tries again
                log.warning("progress read failed: %s", error)
                await asyncio.sleep(self.poll_s)
                continue
            for image_id in wanted:
                state = found.get(image_id)
                if state is not None and self._last.get(image_id) == state:
                    continue
                if state is not None:
                    self._last[image_id] = state
                for queue in list(self._watchers.get(image_id, ())):
                    queue.put_nowait(state)

    def _notified(self, ids: list[int]) -> None:
        self._changed.update(ids)
        self._wake_up()

    def _wake_up(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _listen(self) -> None:
        """LISTEN on the catalog's database until stopped; re-open the connection when it breaks."""
        backoff = 0.5
        while not self._stop.is_set():
            connection = None
            try:
                connection = self.catalog.engine.raw_connection()
                raw = connection.dbapi_connection
                raw.autocommit = True
                with raw.cursor() as cursor:
                    cursor.execute(f"LISTEN {CHANNEL}")
                self.listening, backoff = True, 0.5
                self._call(self._notified, [])  # catch up on what happened while not listening
                while not self._stop.is_set():
                    if select.select([raw], [], [], 1.0)[0]:
                        raw.poll()
                        ids: list[int] = []
                        while raw.notifies:
                            ids += parse_announcement(raw.notifies.pop(0).payload)
                        if ids:
                            self._call(self._notified, ids)
            except Exception as error:  # the database went away: read on the timer until it is back
                log.warning("progress listener lost its connection (%s); retrying in %.1f s", error, backoff)
            finally:
                self.listening = False
                if connection is not None:
                    with contextlib.suppress(Exception):
                        connection.invalidate()
            time.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    def _call(self, fn, ids: list[int]) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, ids)
