"""Fair lanes: the messages waiting for one database thread, one FIFO per edge agent.

A flush is filled round-robin, one message per agent in turn, so an agent with a backlog
(a flood, or a week of catching up after an outage) gets its share of every flush and no
more while others wait: their messages go into the very next flush, not behind the flood.
``cap_bytes`` bounds what one agent may put into one flush while agents below their cap have
messages waiting; once every agent left has had its share (or one is alone), the flush is
filled round-robin without a cap (nobody waits for it).

Order within an agent is kept (its messages leave in arrival order). The total held is
bounded by the broker's receive maximum: every message here is still unacknowledged.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque

from robodensity.collector.validate import Incoming


class FairQueue:
    """Messages of one database thread's agents, taken round-robin by :meth:`take`."""

    def __init__(self) -> None:
        self._agents: OrderedDict[str, deque[Incoming]] = OrderedDict()
        """By topic (one per agent), in the order they get their next turn."""
        self.messages = 0
        self.bytes = 0
        self.oldest = 0.0
        """time.monotonic() when the oldest waiting message arrived (0 when empty)."""

    def __len__(self) -> int:
        return self.messages

    def put(self, item: Incoming) -> None:
        if not self.messages:
            self.oldest = time.monotonic()
        waiting = self._agents.get(item.topic)
        if waiting is None:
            waiting = self._agents[item.topic] = deque()
        waiting.append(item)
        self.messages += 1
        self.bytes += len(item.payload)

    def take(self, budget_bytes: int, cap_bytes: int) -> list[Incoming]:
        """Up to ``budget_bytes`` of messages (at least one), one per agent in turn; an agent gets
        no more than ``cap_bytes`` while an agent below it still has messages. Agents served go to
        the back of the turn order."""
        out: list[Incoming] = []
        size = 0
        took: dict[str, int] = {}
        while self._agents and size < budget_bytes:
            progress = False
            for topic in list(self._agents):
                waiting = self._agents[topic]
                if took.get(topic, 0) >= cap_bytes and len(self._agents) > 1:
                    continue  # its share of this flush is used; the others go on
                item = waiting.popleft()
                out.append(item)
                n = len(item.payload)
                size += n
                took[topic] = took.get(topic, 0) + n
                progress = True
                if not waiting:
                    del self._agents[topic]
                if size >= budget_bytes:
                    break
            if not progress:
                cap_bytes = budget_bytes  # every agent left has had its share: round-robin on, uncapped
        for topic in took:  # served this time: the others first next time
            if topic in self._agents:
                self._agents.move_to_end(topic)
        self.messages -= len(out)
        self.bytes -= size
        if not self.messages:
            self.oldest = 0.0  # what is left keeps its age: it goes as soon as the thread is free
        return out
