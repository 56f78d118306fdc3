"""The OPC UA source: one subscription per session, a watchdog, reconnection with backoff.

After (re)connecting, every signal is read once (a snapshot, one state per robot) and then
monitored: every change is queued on the server (``MONITORED_QUEUE_SIZE`` per item) and
arrives in publish responses, which :class:`.mapping.Tracker` turns into readings.

On connection loss: one OFFLINE reading per known robot, stamped with the local clock (the
only readings that are), then reconnection with exponential backoff up to
``reconnect_max_s``. Loss is noticed when the socket closes, when asyncua's watchdog
(``watchdog_s``) cannot read the server state, or when three keep-alives in a row do not
arrive. A login the server refuses ``LOGIN_ATTEMPTS`` times in a row (a wrong user name
or password does not fix itself) is a ConfigError: the agent stops this source, says why,
and goes on reading the factory's other controllers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, cast

from asyncua import Client, ua

from robodensity.core.errors import ConfigError, SourceConnectError, SourceError
from robodensity.core.settings import OpcUaSourceSettings
from robodensity.core.wire import Reading
from robodensity.edge.sources.opcua.connect import LoginRefused, connect, disconnect
from robodensity.edge.sources.opcua.discover import CHUNK, Browser, find_robots
from robodensity.edge.sources.opcua.mapping import DiscoveredRobot, Found, Tracker, mapping_of

log = logging.getLogger(__name__)

MONITORED_QUEUE_SIZE = 1000
"""Per monitored item: a robot may change many times within one publishing interval."""
KEEPALIVE_S = 5.0
"""The server sends a keep-alive after this long without changes; 3 missed ones = lost."""
READING_QUEUE_SIZE = 10_000
"""Readings waiting for the consumer; when full the publish loop waits (backpressure)."""
LOGIN_ATTEMPTS = 5
"""Refused logins in a row (connects and reconnects alike) after which the source gives up."""
_BACKOFF_START_S = 0.5


def monitored_item(
    node: ua.NodeId, handle: int, queue_size: int = MONITORED_QUEUE_SIZE
) -> ua.MonitoredItemCreateRequest:
    """A request to report every change of ``node``'s value, queued on the server, under ``handle``."""
    rv = ua.ReadValueId()
    rv.NodeId = node
    rv.AttributeId = ua.AttributeIds.Value
    mp = ua.MonitoringParameters()
    mp.ClientHandle = handle
    mp.SamplingInterval = 0.0  # report every change; the server queues them
    mp.QueueSize = queue_size
    mp.DiscardOldest = True
    req = ua.MonitoredItemCreateRequest()
    req.ItemToMonitor = rv
    req.MonitoringMode = ua.MonitoringMode.Reporting
    req.RequestedParameters = mp
    return req


class OpcUaSource:
    """Readings from the OPC 40010 robots of one OPC UA server (one controller or cell)."""

    def __init__(self, settings: OpcUaSourceSettings) -> None:
        mapping_of(settings)  # a bad mapping file is a ConfigError now, not at the first connect
        self.settings = settings
        self.robots: list[DiscoveredRobot] = []
        """The robots of the current (or last) session."""
        self.stats: dict[str, int] = defaultdict(int)
        """Counts: connects, losses, notifications, bad_counter_values."""
        self._tracker = Tracker(repr(self), self.stats)
        self._client: Client | None = None
        self._queue: asyncio.Queue[Reading] | None = None
        self._backlog: deque[Reading] = deque()  # (re)connect snapshots: bounded by the robot count
        self._last_publish = 0.0
        self._stale_after_s = 60.0
        self._lost: asyncio.Event | None = None
        self._subscription_id: int | None = None
        self._refused = 0  # logins refused in a row

    def __repr__(self) -> str:
        return f"OpcUaSource({self.settings.url})"

    async def __aenter__(self) -> OpcUaSource:
        self._queue = asyncio.Queue(READING_QUEUE_SIZE)
        self._lost = asyncio.Event()
        await self._open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._close()

    def __aiter__(self) -> AsyncIterator[Reading]:
        return self._run()

    # -- session ------------------------------------------------------------------------

    async def _open(self) -> None:
        """Connect, discover, read everything, subscribe. Raises SourceError."""
        assert self._queue is not None and self._lost is not None
        self._lost.clear()
        mapping = mapping_of(self.settings)
        try:
            client = await connect(self.settings)
        except LoginRefused as exc:
            self._refused += 1
            if self._refused >= LOGIN_ATTEMPTS:
                raise ConfigError(f"{exc}; refused {self._refused} times in a row, giving up") from exc
            raise
        self._refused = 0
        try:
            found = await find_robots(client, mapping)
            if not found:
                raise SourceError(f"{self.settings.url}: no robots found")
            await self._start(client, found)
        except SourceError:
            await disconnect(client)
            raise
        except Exception as exc:
            await disconnect(client)
            raise SourceConnectError(self.settings.url) from exc
        self._client = client
        self.stats["connects"] += 1

    async def _start(self, client: Client, found: list[Found]) -> None:
        self.robots = [f.robot for f in found]
        nodes = self._tracker.start(found)

        async def lost(exc: Exception) -> None:
            log.warning("%s: connection lost: %r", self, exc)
            if self._lost is not None:
                self._lost.set()

        client.connection_lost_callback = lost
        # Snapshot: every value read, one state per robot stamped with its newest signal.
        values = await Browser(client).read(nodes)
        # _run, the only consumer, is busy in _open: never wait on the bounded queue here.
        self._backlog.extend(self._tracker.apply(list(enumerate(values)), snapshot=True))
        await self._subscribe(client, nodes)
        log.info("%s: %d robots, %d monitored items", self, len(found), len(nodes))

    async def _subscribe(self, client: Client, nodes: list[ua.NodeId]) -> None:
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = float(self.settings.publishing_interval_ms)
        params.RequestedMaxKeepAliveCount = max(1, round(KEEPALIVE_S * 1000 / params.RequestedPublishingInterval))
        # Long enough to survive a consumer that stalls the publish loop for minutes.
        params.RequestedLifetimeCount = max(
            3 * params.RequestedMaxKeepAliveCount, round(600_000 / params.RequestedPublishingInterval)
        )
        params.MaxNotificationsPerPublish = 0
        params.PublishingEnabled = True
        params.Priority = 0
        result = await client.uaclient.create_subscription(params, self._on_publish)
        self._subscription_id = result.SubscriptionId
        keepalive_s = result.RevisedPublishingInterval * result.RevisedMaxKeepAliveCount / 1000
        self._stale_after_s = 3 * keepalive_s + self.settings.watchdog_s
        self._last_publish = time.monotonic()
        for start in range(0, len(nodes), CHUNK):
            cp = ua.CreateMonitoredItemsParameters()
            cp.SubscriptionId = self._subscription_id
            cp.ItemsToCreate = [monitored_item(nodes[h], h) for h in range(start, min(start + CHUNK, len(nodes)))]
            cp.TimestampsToReturn = ua.TimestampsToReturn.Both
            created = await client.uaclient.create_monitored_items(cp)
            failed = [(start + i, r.StatusCode) for i, r in enumerate(created) if not r.StatusCode.is_good()]
            for handle, status in failed:
                log.warning("%s: cannot monitor %s: %s", self, nodes[handle], status.name)
                bad = ua.DataValue(StatusCode=status, SourceTimestamp=cast(Any, datetime.now(UTC)))
                self._backlog.extend(self._tracker.apply([(handle, bad)]))

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.connection_lost_callback = None
            await disconnect(client)

    async def _on_publish(self, result: ua.PublishResult) -> None:
        """One publish response: the notifications of one publishing interval."""
        assert self._queue is not None and self._lost is not None
        self._last_publish = time.monotonic()
        items: list[tuple[int, ua.DataValue]] = []
        for notification in result.NotificationMessage.NotificationData or []:
            if isinstance(notification, ua.DataChangeNotification):
                for item in notification.MonitoredItems:
                    items.append((item.ClientHandle, item.Value))
            elif isinstance(notification, ua.StatusChangeNotification) and notification.Status.is_bad():
                log.warning("%s: subscription status %s", self, notification.Status.name)
                self._lost.set()
        self.stats["notifications"] += len(items)
        for reading in self._tracker.apply(items):
            await self._queue.put(reading)

    # -- the iterator -------------------------------------------------------------------

    async def _run(self) -> AsyncIterator[Reading]:
        if self._queue is None or self._lost is None:
            raise SourceError(f"{self}: use 'async with source:' before iterating")
        queue, lost = self._queue, self._lost
        backoff = _BACKOFF_START_S
        while True:
            while self._backlog:
                yield self._backlog.popleft()
            while not queue.empty():
                yield queue.get_nowait()
            if self._client is not None and lost.is_set():
                self.stats["losses"] += 1
                await self._close()
                for reading in self._tracker.offline(datetime.now(UTC)):
                    yield reading
                continue
            if self._client is None:
                try:
                    await self._open()
                except SourceError as exc:
                    cause = exc.__cause__ or exc
                    log.warning("%s: reconnect failed (%r); next try in %.1f s", self, cause, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.settings.reconnect_max_s)
                else:
                    backoff = _BACKOFF_START_S
                continue
            getter = asyncio.ensure_future(queue.get())
            waiter = asyncio.ensure_future(lost.wait())
            try:
                await asyncio.wait({getter, waiter}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                if time.monotonic() - self._last_publish > self._stale_after_s and not getter.done():
                    # Not even a keep-alive: the server dropped the subscription or stopped publishing.
                    log.warning("%s: no publish response for %.0f s", self, time.monotonic() - self._last_publish)
                    lost.set()
            finally:
                waiter.cancel()
                if not getter.done():
                    getter.cancel()
            if getter.done() and not getter.cancelled():
                yield getter.result()
