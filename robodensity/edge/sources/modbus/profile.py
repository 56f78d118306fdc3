"""Modbus register-map profiles: TOML files that say where a controller keeps its signals.

A profile names the blocks one poll reads per robot (one request each), the signals inside
them (table, 0-based PDU address, type, bit, scale), the word order of 32-bit values, the
byte order of strings, which signals are the alarm code, the counters and the identity,
and a rule table from signals to the canonical state (:mod:`robodensity.edge.rules`).
The built-in profiles live next to this module in ``profiles/``; ``cell_plc.toml`` is the
documented layout an integrator can copy for a PLC.

:func:`check_profile` returns every problem as ``file:line: key: problem``; :func:`load_profile`
raises :class:`ProfileError` with them; :func:`format_table` prints what a profile reads.
No I/O but reading the file.
"""

from __future__ import annotations

import re
import struct
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from robodensity.core.errors import ConfigError
from robodensity.core.settings_modbus import StateRuleSettings
from robodensity.core.wire import Counter, State
from robodensity.edge.rules import describe, precedence_problems

TABLES = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
"""Table name -> Modbus read function code."""
BIT_TABLES = ("coil", "discrete")
WIDTH = {"bool": 1, "u16": 1, "i16": 1, "u32": 2, "i32": 2, "f32": 2}
"""Registers per value; a string's width is its ``count``."""
NUMERIC = ("u16", "i16", "u32", "i32", "f32")
MAX_COUNT = {"coil": 2000, "discrete": 2000, "holding": 125, "input": 125}
_TOP_KEYS = {
    "name",
    "manufacturer",
    "description",
    "word_order",
    "string_byte_swap",
    "default",
    "unconfirmed",
    "blocks",
    "signals",
    "counters",
    "alarm",
    "identity",
    "rules",
}
_SIGNAL_KEYS = {"table", "address", "type", "bit", "count", "scale", "note"}


class ProfileError(ConfigError):
    """A profile with problems; ``problems`` holds each as ``file:line: key: problem``."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__("\n".join([f"{source}: {len(problems)} problem(s) in the Modbus profile:", *problems]))
        self.problems = problems


@dataclass(frozen=True)
class Block:
    table: str
    address: int
    count: int


@dataclass(frozen=True)
class Signal:
    name: str
    table: str
    address: int
    type: str = "u16"
    bit: int | None = None
    count: int = 1
    scale: float = 1.0

    @property
    def width(self) -> int:
        return self.count if self.type == "string" else WIDTH[self.type]


@dataclass(frozen=True)
class Profile:
    name: str
    manufacturer: str
    blocks: tuple[Block, ...]
    signals: Mapping[str, Signal]
    rules: tuple[StateRuleSettings, ...]
    default: State = State.IDLE
    description: str = ""
    word_order: str = "big"
    string_byte_swap: bool = False
    alarm_code: str | None = None
    counters: Mapping[Counter, str] = field(default_factory=dict)
    serial: str | None = None
    model: str | None = None
    unconfirmed: tuple[str, ...] = ()
    source: str = ""

    def locate(self, signal: Signal) -> tuple[int, int]:
        """(index of the block that holds ``signal``, offset of its first word or bit in it)."""
        for i, b in enumerate(self.blocks):
            if (
                b.table == signal.table
                and b.address <= signal.address
                and signal.address + signal.width <= (b.address + b.count)
            ):
                return i, signal.address - b.address
        raise ValueError(f"signal {signal.name} is in no block")

    def decoder(self) -> Decoder:
        return Decoder(self)

    def polled_signals(self) -> list[str]:
        """The signals a poll needs: the rules', the alarm code's, the counters' and the serial's."""
        names = {n for rule in self.rules for n in rule.when} | set(self.counters.values())
        names |= {n for n in (self.alarm_code, self.serial) if n is not None}
        return [n for n in self.signals if n in names]


class Decoder:
    """Turns the values of a poll's blocks (None for a block that could not be read) into signals."""

    def __init__(self, profile: Profile, only: Iterable[str] | None = None) -> None:
        """``only``: decode just these signals (a poll needs the rules', not the informational ones)."""
        self.profile = profile
        wanted = profile.signals.values() if only is None else [profile.signals[n] for n in only]
        self._plan = [(s, *profile.locate(s)) for s in wanted]
        order = "<" if profile.word_order == "little" else ">"
        self._formats = {"u32": f"{order}I", "i32": f"{order}i", "f32": f"{order}f"}
        self._little = profile.word_order == "little"

    def decode(self, blocks: Sequence[Sequence[int] | Sequence[bool] | None]) -> dict[str, object]:
        out: dict[str, object] = {}
        for s, index, offset in self._plan:
            values = blocks[index]
            out[s.name] = None if values is None else self._value(s, values, offset)
        return out

    def _value(self, s: Signal, values: Sequence[Any], offset: int) -> object:
        if s.table in BIT_TABLES:
            return bool(values[offset])
        if s.bit is not None:
            return bool((values[offset] >> s.bit) & 1)
        if s.type == "string":
            raw = b"".join(
                struct.pack("<H" if self.profile.string_byte_swap else ">H", v)
                for v in values[offset : offset + s.count]
            )
            return raw.split(b"\0", 1)[0].decode("ascii", "replace").strip()
        if s.type == "u16":
            number: float = values[offset]
        elif s.type == "i16":
            number = values[offset] - 0x10000 if values[offset] & 0x8000 else values[offset]
        else:
            lo, hi = (values[offset], values[offset + 1]) if self._little else (values[offset + 1], values[offset])
            word = struct.pack("<HH", lo, hi) if self._little else struct.pack(">HH", hi, lo)
            number = struct.unpack(self._formats[s.type], word)[0]
        return number * s.scale if s.scale != 1.0 else number


# ------------------------------------------------------------------ loading and checking


_HEADER = re.compile(r"^\s*\[(\[)?\s*([A-Za-z0-9_.\"-]+)\s*\]?\]\s*(#.*)?$")
_KEYLINE = re.compile(r'^\s*("[^"]*"|[A-Za-z0-9_-]+)\s*=')


def key_lines(text: str) -> dict[str, int]:
    """Dotted key (``signals.mode``, ``rules[2].state``) -> its line, for messages that point at it."""
    lines: dict[str, int] = {}
    table = ""
    arrays: dict[str, int] = {}
    for no, line in enumerate(text.splitlines(), start=1):
        if m := _HEADER.match(line):
            name = m.group(2)
            if m.group(1):  # [[name]]: the next element of an array of tables
                arrays[name] = arrays.get(name, -1) + 1
                table = f"{name}[{arrays[name]}]"
            else:
                table = name
            lines.setdefault(table, no)
        elif m := _KEYLINE.match(line):
            key = m.group(1).strip('"')
            lines.setdefault(f"{table}.{key}" if table else key, no)
    return lines


def check_profile(path: Path, text: str | None = None) -> tuple[Profile | None, list[str]]:
    """(the profile if it has no problem, every problem as ``file:line: key: problem``)."""
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return None, [f"{path}:1: file: cannot be read: {getattr(exc, 'strerror', None) or exc}"]
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"line (\d+)", str(exc))
        return None, [f"{path}:{line.group(1) if line else 1}: toml: {exc}"]
    checker = _Checker(doc)
    profile = checker.profile(str(path))
    lines = key_lines(text)

    def where(key: str) -> int:
        probe = key
        while probe:
            if probe in lines:
                return lines[probe]
            probe = probe.rsplit(".", 1)[0] if "." in probe else ""
        return 1

    problems = [f"{path}:{where(k)}: {k}: {p}" for k, p in checker.problems]
    return (profile if not problems else None), problems


def builtin_profiles() -> list[str]:
    folder = resources.files(__package__).joinpath("profiles")
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def profile_path(name_or_path: str) -> Path:
    """The file of a built-in profile name, or the path itself."""
    if re.match(r"^[a-z][a-z0-9_]*$", name_or_path):
        path = Path(str(resources.files(__package__).joinpath("profiles", f"{name_or_path}.toml")))
        if not path.is_file():
            raise ConfigError(f"no built-in Modbus profile {name_or_path!r}; built in: {', '.join(builtin_profiles())}")
        return path
    return Path(name_or_path)


def load_profile(name_or_path: str) -> Profile:
    """A built-in profile by name, or a profile file; ProfileError listing every problem."""
    path = profile_path(name_or_path)
    profile, problems = check_profile(path)
    if profile is None:
        raise ProfileError(str(path), problems)
    return profile


class _Checker:
    """Builds a Profile from a TOML document, collecting (key, problem) instead of stopping."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.problems: list[tuple[str, str]] = []

    def bad(self, key: str, problem: str) -> None:
        self.problems.append((key, problem))

    def text(self, key: str, required: bool = True) -> str:
        value = self.doc.get(key)
        if value is None and not required:
            return ""
        if not isinstance(value, str) or not value.strip():
            self.bad(key, "must be non-empty text")
            return ""
        return value

    def profile(self, source: str) -> Profile | None:
        doc = self.doc
        for key in sorted(set(doc) - _TOP_KEYS):
            self.bad(key, f"unknown key; allowed: {', '.join(sorted(_TOP_KEYS))}")
        name, manufacturer = self.text("name"), self.text("manufacturer")
        word_order = doc.get("word_order", "big")
        if word_order not in ("big", "little"):
            self.bad("word_order", f'must be "big" (ABCD) or "little" (CDAB); got {word_order!r}')
        swap = doc.get("string_byte_swap", False)
        if not isinstance(swap, bool):
            self.bad("string_byte_swap", "must be true or false")
        unconfirmed = doc.get("unconfirmed", [])
        if not isinstance(unconfirmed, list) or not all(isinstance(u, str) for u in unconfirmed):
            self.bad("unconfirmed", "must be a list of texts")
            unconfirmed = []
        blocks = self.blocks()
        signals = self.signals(blocks)
        rules, default = self.rules(signals)
        alarm = self.pick("alarm", "code", signals, NUMERIC)
        serial = self.pick("identity", "serial", signals, ("string", *NUMERIC))
        model = self.pick("identity", "model", signals, ("string",))
        counters = self.counters(signals)
        if self.problems:
            return None
        return Profile(
            name=name,
            manufacturer=manufacturer,
            blocks=tuple(blocks),
            signals=signals,
            rules=tuple(rules),
            default=default,
            description=self.text("description", required=False),
            word_order=word_order,
            string_byte_swap=swap,
            alarm_code=alarm,
            counters=counters,
            serial=serial,
            model=model,
            unconfirmed=tuple(unconfirmed),
            source=source,
        )

    def blocks(self) -> list[Block]:
        raw = self.doc.get("blocks")
        if not isinstance(raw, list) or not raw:
            self.bad("blocks", "needs at least one [[blocks]] (table, address, count): what one poll reads")
            return []
        out = []
        for i, b in enumerate(raw):
            key = f"blocks[{i}]"
            if not isinstance(b, dict):
                self.bad(key, "must be a table")
                continue
            for extra in sorted(set(b) - {"table", "address", "count", "note"}):
                self.bad(f"{key}.{extra}", "unknown key; allowed: table, address, count, note")
            table = self.table(f"{key}.table", b.get("table"))
            address = self.integer(f"{key}.address", b.get("address"), 0, 65_535)
            count = self.integer(f"{key}.count", b.get("count"), 1, MAX_COUNT.get(table or "holding", 125))
            if table and address is not None and count is not None:
                if address + count > 65_536:
                    self.bad(f"{key}.count", "runs past address 65535")
                out.append(Block(table, address, count))
        return out

    def signals(self, blocks: list[Block]) -> dict[str, Signal]:
        raw = self.doc.get("signals")
        if not isinstance(raw, dict) or not raw:
            self.bad("signals", "needs a [signals] table: name = { table, address, ... }")
            return {}
        out: dict[str, Signal] = {}
        for name, spec in raw.items():
            key = f"signals.{name}"
            if not isinstance(spec, dict):
                self.bad(key, "must be a table { table = ..., address = ... }")
                continue
            for extra in sorted(set(spec) - _SIGNAL_KEYS):
                self.bad(key, f"unknown key {extra!r}; allowed: {', '.join(sorted(_SIGNAL_KEYS))}")
            table = self.table(f"{key}.table", spec.get("table"))
            address = self.integer(f"{key}.address", spec.get("address"), 0, 65_535)
            bit = spec.get("bit")
            default_type = "bool" if table in BIT_TABLES or bit is not None else "u16"
            kind = spec.get("type", default_type)
            if kind not in (*WIDTH, "string"):
                self.bad(key, f"type must be one of {', '.join([*WIDTH, 'string'])}; got {kind!r}")
                continue
            if table in BIT_TABLES and kind != "bool":
                self.bad(key, f"a {table} is a single bit: type must be bool")
                continue
            if bit is not None and (table in BIT_TABLES or kind != "bool"):
                self.bad(key, "bit is only for a bool inside a holding or input register")
                continue
            if kind == "bool" and table not in BIT_TABLES and bit is None:
                self.bad(key, "a bool in a register needs bit = 0..15")
                continue
            if bit is not None and self.integer(f"{key}.bit", bit, 0, 15) is None:
                continue
            count = self.integer(f"{key}.count", spec.get("count", 1), 1, 125) if kind == "string" else 1
            scale = spec.get("scale", 1.0)
            if not isinstance(scale, int | float) or isinstance(scale, bool) or scale == 0:
                self.bad(f"{key}.scale", "must be a non-zero number")
                continue
            if scale != 1.0 and kind not in NUMERIC:
                self.bad(f"{key}.scale", "only numbers can be scaled")
                continue
            if table is None or address is None or count is None:
                continue
            signal = Signal(name, table, address, kind, bit, count, float(scale))
            holder = [b for b in blocks if b.table == table and b.address <= address < b.address + b.count]
            if not any(address + signal.width <= b.address + b.count for b in holder):
                self.bad(
                    key, f"{table} {address}..{address + signal.width - 1} is in no [[blocks]]: a poll never reads it"
                )
                continue
            out[name] = signal
        return out

    def rules(self, signals: Mapping[str, Signal]) -> tuple[list[StateRuleSettings], State]:
        default = State.IDLE
        raw_default = self.doc.get("default", "IDLE")
        try:
            default = State(raw_default)
        except ValueError:
            self.bad("default", f"must be one of IDLE, OUT_OF_SERVICE; got {raw_default!r}")
        raw = self.doc.get("rules")
        if not isinstance(raw, list) or not raw:
            self.bad("rules", "needs at least one [[rules]] (when = { signal = value }, state = ...)")
            return [], default
        rules: list[StateRuleSettings] = []
        for i, r in enumerate(raw):
            key = f"rules[{i}]"
            try:
                rule = StateRuleSettings.model_validate(r)
            except ValidationError as exc:
                for err in exc.errors():
                    loc = ".".join(str(x) for x in err["loc"] if x != "not")
                    self.bad(f"{key}.{loc}" if loc else key, err["msg"])
                continue
            for name, want in rule.when.items():
                signal = signals.get(name)
                if signal is None:
                    self.bad(f"{key}.when", f"{name} is not in [signals]")
                elif signal.type == "string":
                    self.bad(f"{key}.when", f"{name} is text: rules test bits and numbers")
                elif signal.type == "bool" and not isinstance(getattr(want, "not_", want), bool):
                    self.bad(f"{key}.when", f"{name} is a bit: compare it with true or false")
            rules.append(rule)
        if len(rules) == len(raw):
            for index, problem in precedence_problems(rules, default):
                self.bad("default" if index is None else f"rules[{index}].state", problem)
        return rules, default

    def pick(self, table: str, key: str, signals: Mapping[str, Signal], types: Sequence[str]) -> str | None:
        section = self.doc.get(table, {})
        if not isinstance(section, dict):
            self.bad(table, "must be a table")
            return None
        name = section.get(key)
        if name is None:
            return None
        if name not in signals:
            self.bad(f"{table}.{key}", f"{name!r} is not in [signals]")
            return None
        if signals[name].type not in types:
            self.bad(f"{table}.{key}", f"{name} must be of type {' or '.join(types)}")
            return None
        return str(name)

    def counters(self, signals: Mapping[str, Signal]) -> dict[Counter, str]:
        raw = self.doc.get("counters", {})
        if not isinstance(raw, dict):
            self.bad("counters", "must be a table: canonical counter = signal")
            return {}
        out: dict[Counter, str] = {}
        for name, signal in raw.items():
            try:
                counter = Counter(name)
            except ValueError:
                self.bad(f"counters.{name}", f"not a canonical counter ({', '.join(c.value for c in Counter)})")
                continue
            picked = self.pick("counters", name, signals, NUMERIC)
            if picked is not None:
                out[counter] = signal
        return out

    def table(self, key: str, value: object) -> str | None:
        if value not in TABLES:
            self.bad(key, f"must be one of {', '.join(TABLES)}; got {value!r}")
            return None
        return str(value)

    def integer(self, key: str, value: object, lo: int, hi: int) -> int | None:
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            hint = " (a 0-based PDU address: 4xxxx - 40001)" if key.endswith(".address") else ""
            self.bad(key, f"must be an integer {lo}..{hi}{hint}; got {value!r}")
            return None
        return value


def format_table(profile: Profile) -> str:
    """What a profile reads and how it decides, as plain text for ``edge profile check``."""
    out = [f"profile {profile.name} ({profile.manufacturer}): {profile.description}".rstrip(": ")]
    out.append(
        f"word order {profile.word_order}, strings {'byte-swapped' if profile.string_byte_swap else 'high byte first'}"
    )
    out.append("reads per robot and poll:")
    out += [
        f"  {b.table:<8} {b.address:>5} .. {b.address + b.count - 1:<5} (FC{TABLES[b.table]:02d})"
        for b in profile.blocks
    ]
    out.append("signals:")
    roles = {profile.alarm_code: "alarm code", profile.serial: "serial", profile.model: "model"}
    roles.update({s: f"counter {c.value}" for c, s in profile.counters.items()})
    for s in profile.signals.values():
        where = f"{s.table} {s.address}" + (f" bit {s.bit}" if s.bit is not None else "")
        scale = f" x{s.scale:g}" if s.scale != 1.0 else ""
        role = roles.get(s.name, "")
        out.append(f"  {s.name:<18} {where:<18} {s.type}{f'[{s.count}]' if s.type == 'string' else ''}{scale}  {role}")
    out.append("state (first match wins; no signal readable: OFFLINE):")
    out += [f"  {i + 1:>2}. {describe(r):<48} -> {r.state}" for i, r in enumerate(profile.rules)]
    out.append(f"      {'otherwise':<48} -> {profile.default}")
    out += [f"unconfirmed: {u}" for u in profile.unconfirmed]
    return "\n".join(out)
