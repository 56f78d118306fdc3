"""Canonical robot states as small integer codes for vectorised metrics.

The code of a state is its index in :data:`STATES`, so an array of codes can index the
last axis of every ``(..., len(STATES))`` array the metrics return.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from robodensity.core.wire import State

STATES: tuple[State, ...] = (
    State.EXECUTING,
    State.IDLE,
    State.FAULT,
    State.OUT_OF_SERVICE,
    State.OFFLINE,
)
"""All canonical states; a state's code is its index here."""

N_STATES = len(STATES)
EXECUTING = STATES.index(State.EXECUTING)
IDLE = STATES.index(State.IDLE)
FAULT = STATES.index(State.FAULT)
OUT_OF_SERVICE = STATES.index(State.OUT_OF_SERVICE)
OFFLINE = STATES.index(State.OFFLINE)

CODE: dict[str, int] = {s.value: i for i, s in enumerate(STATES)}
"""State value -> code."""


def state_codes(states: Iterable[str | State]) -> np.ndarray:
    """Integer codes of states.

    Parameters
    ----------
    states : iterable of str or State
        State values as the wire contract spells them (``"EXECUTING"`` ...), or
        :class:`~robodensity.core.wire.State` members; a numpy string array is fine.

    Returns
    -------
    numpy.ndarray of int8
        Code of each state, the index into :data:`STATES`.

    Raises
    ------
    ValueError
        When a value is not a canonical state; the message names the value.
    """
    arr = np.asarray(states if isinstance(states, np.ndarray) else list(states))
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=np.int8)
    # Map the few distinct values, then broadcast back: fast for millions of rows.
    uniq, inverse = np.unique(arr, return_inverse=True)
    lut = np.empty(len(uniq), dtype=np.int8)
    for i, value in enumerate(uniq.tolist()):
        code = CODE.get(value) if isinstance(value, str) else None
        if code is None:
            allowed = ", ".join(CODE)
            raise ValueError(f"not a robot state: {value!r}; must be one of {allowed}")
        lut[i] = code
    return lut[inverse].reshape(arr.shape)
