"""The wire contract between edge agents and the collector, version 1: its only definition.

``contract`` says what travels (topics, limits, vocabularies, the typed values);
``codec`` makes and reads the bytes: the edge's encoder and outbox splicing, the
collector's fast decoder and the reference decoder that explains every rejection.
Every public name of both is re-exported here: ``from robodensity.core.wire import Batch``.

Standard library plus msgspec (small, pure C, no dependencies), so the collector never
imports asyncua or paho through it and a gateway needs nothing else to speak it.
"""

# Star imports on purpose: each module's __all__ is the one list of its public names.
from robodensity.core.wire import codec, contract
from robodensity.core.wire.codec import *  # noqa: F403
from robodensity.core.wire.contract import *  # noqa: F403

__all__ = [*contract.__all__, *codec.__all__]
