"""Rule tables from several signals to one canonical state (Modbus profiles, JSON mappings).

A table is a list of :class:`~robodensity.core.settings_modbus.StateRuleSettings`: the first
rule whose every condition holds gives the state, none matching gives the default. A
condition is ``name = value`` (equal) or ``name = { not = value }``; a signal whose value
is unknown (``None``: unreadable, Bad, absent) satisfies neither, so an unknown alarm bit
never makes a robot FAULT and an unknown "running" bit never makes it EXECUTING.

Precedence is the one of :mod:`edge.normalise`: e-stop and alarms (FAULT) first, then
manual/teach (OUT_OF_SERVICE), then EXECUTING / IDLE. :func:`precedence_problems` says where
a table breaks it, so a profile that would call a robot in e-stop EXECUTING is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from robodensity.core.settings_modbus import NotCondition, Scalar, StateRuleSettings
from robodensity.core.wire import Quality, State

RANK = {State.FAULT: 0, State.OUT_OF_SERVICE: 1, State.EXECUTING: 2, State.IDLE: 2}
"""Lower ranks must come first in a table (edge/normalise.py's precedence)."""


def _same(got: object, want: Scalar) -> bool:
    if isinstance(want, bool) or isinstance(got, bool):
        return isinstance(got, bool | int) and isinstance(want, bool | int) and bool(got) is bool(want)
    if isinstance(want, str) or isinstance(got, str):
        return str(got).strip().casefold() == str(want).strip().casefold()
    return got == want


def holds(got: object, want: Scalar | NotCondition) -> bool:
    """Whether one condition holds for a signal value; never for an unknown (None) value."""
    if got is None:
        return False
    if isinstance(want, NotCondition):
        return not _same(got, want.not_)
    return _same(got, want)


def signal_names(rules: Sequence[StateRuleSettings]) -> set[str]:
    return {name for rule in rules for name in rule.when}


class RuleTable:
    """A rule table made ready for evaluating many times (a poll loop): names and conditions listed once."""

    def __init__(self, rules: Sequence[StateRuleSettings], default: State) -> None:
        self.rules = [(rule.state, tuple(rule.when.items())) for rule in rules]
        self.names = tuple(sorted(signal_names(rules)))
        self.default = default

    def evaluate(self, signals: Mapping[str, object]) -> tuple[State, Quality]:
        """(state, quality) of one robot. OFFLINE (BAD) when no signal of the table is known;
        UNCERTAIN when some are unknown; the first matching rule's state, else the default."""
        known = sum(signals.get(n) is not None for n in self.names)
        if not known:
            return State.OFFLINE, Quality.BAD
        quality = Quality.GOOD if known == len(self.names) else Quality.UNCERTAIN
        for state, when in self.rules:
            if all(holds(signals.get(name), want) for name, want in when):
                return state, quality
        return self.default, quality


def evaluate(
    signals: Mapping[str, object], rules: Sequence[StateRuleSettings], default: State
) -> tuple[State, Quality]:
    """:meth:`RuleTable.evaluate` for a table used once."""
    return RuleTable(rules, default).evaluate(signals)


def precedence_problems(rules: Sequence[StateRuleSettings], default: State) -> list[tuple[int | None, str]]:
    """(rule index or None for the default, problem) wherever the table breaks the precedence."""
    out: list[tuple[int | None, str]] = []
    for i, (before, rule) in enumerate(zip(rules, rules[1:]), start=1):
        if RANK[rule.state] < RANK[before.state]:
            out.append(
                (i, f"{rule.state} after a rule for {before.state}: FAULT rules come first, then OUT_OF_SERVICE")
            )
    if default not in (State.IDLE, State.OUT_OF_SERVICE):
        out.append((None, f"default {default} overstates: use IDLE (or OUT_OF_SERVICE)"))
    return out


def describe(rule: StateRuleSettings) -> str:
    """``error = true and mode != 1`` for a table printout."""

    def one(name: str, want: Scalar | NotCondition) -> str:
        if isinstance(want, NotCondition):
            return f"{name} != {_text(want.not_)}"
        return f"{name} = {_text(want)}"

    return " and ".join(one(n, w) for n, w in rule.when.items())


def _text(value: Scalar) -> str:
    return str(value).lower() if isinstance(value, bool) else repr(value) if isinstance(value, str) else str(value)
