"""Synthetic provinces: cities, factories, headcounts and robots, from a spec and a seed.

The province is the simulator's registry and ground truth at once: the demo and the
tests import it into the database through the same CSV files an economic department
would hand over, and check computed densities against it.
"""

from __future__ import annotations

import csv
import random
import tomllib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

Protocol = Literal["opcua", "mqtt"]

MANUFACTURERS = {  # name -> (domestic brand?, models)
    "ESTUN": (True, ["ER20-1780", "ER50-2100"]),
    "EFORT": (True, ["ER15-1520", "ER80-2550"]),
    "SIASUN": (True, ["SR10C", "SR210A"]),
    "INOVANCE": (True, ["IR-S4-40", "IR-R10-110"]),
    "FANUC": (False, ["M-20iD/25", "R-2000iC/165F"]),
    "ABB": (False, ["IRB 6700", "IRB 1200"]),
    "KUKA": (False, ["KR 210 R2700-2", "KR 10 R1100"]),
    "YASKAWA": (False, ["GP25", "AR2010"]),
}
CATEGORY = {"ER": "articulated", "SR": "articulated", "IR-S": "SCARA", "IR-R": "articulated"}
APPLICATIONS = ("welding", "handling", "assembly", "palletising", "painting", "inspection")


@dataclass(frozen=True)
class Region:
    code: str  # GB/T 2260
    name: str
    name_en: str
    parent: str | None


@dataclass(frozen=True)
class Industry:
    code: str  # GB/T 4754-2017 division
    name: str
    name_en: str
    key_manufacturing: bool


@dataclass(frozen=True)
class Factory:
    id: str
    name: str
    region: str
    industry: str
    employees: int
    protocol: Protocol
    shifts: int = 2


@dataclass(frozen=True)
class Robot:
    manufacturer: str
    serial: str
    model: str
    category: str
    application: str
    domestic: bool
    factory: str
    commissioned: date
    moved_from: tuple[str, date] | None = None
    """A leased robot that moved: (previous factory, the day it started at ``factory``)."""

    @property
    def key(self) -> str:
        return f"{self.manufacturer}/{self.serial}"


@dataclass(frozen=True)
class Province:
    code: str
    regions: tuple[Region, ...]
    industries: tuple[Industry, ...]
    factories: tuple[Factory, ...]
    robots: tuple[Robot, ...]
    headcount_date: date = date(2026, 1, 1)

    def robots_of(self, factory_id: str) -> list[Robot]:
        return [r for r in self.robots if r.factory == factory_id]


@dataclass(frozen=True)
class CitySpec:
    code: str
    name: str
    name_en: str
    factories: int


@dataclass(frozen=True)
class ProvinceSpec:
    code: str = "320000"
    name: str = "江苏省"
    name_en: str = "Jiangsu"
    cities: tuple[CitySpec, ...] = (
        CitySpec("320100", "南京市", "Nanjing", 2),
        CitySpec("320200", "无锡市", "Wuxi", 2),
        CitySpec("320500", "苏州市", "Suzhou", 2),
    )
    robots: int = 100
    employees_min: int = 150
    employees_max: int = 900
    opcua_share: float = 0.5
    """Share of factories whose robots speak OPC UA; the rest publish on MQTT."""
    density: float | None = None
    """Robots per 10,000 employees to aim for in every factory; None: ``robots`` in all."""
    leased_share: float = 0.0
    """Share of robots that are leased and moved between factories during ``lease_year``."""
    lease_year: int = 2026
    industries: tuple[Industry, ...] = field(
        default=(
            Industry("36", "汽车制造业", "Automobile manufacturing", True),
            Industry("38", "电气机械和器材制造业", "Electrical machinery and equipment", True),
            Industry("39", "计算机、通信和其他电子设备制造业", "Computers, communication and electronics", True),
            Industry("34", "通用设备制造业", "General-purpose machinery", False),
        )
    )


def load_spec(path: Path) -> ProvinceSpec:
    """A ProvinceSpec from TOML: top-level keys of ProvinceSpec, ``[[cities]]`` tables."""
    raw = tomllib.loads(path.read_text())
    cities = tuple(CitySpec(**c) for c in raw.pop("cities", []))
    industries = tuple(Industry(**i) for i in raw.pop("industries", []))
    spec = ProvinceSpec(**raw)
    if cities:
        spec = ProvinceSpec(**{**spec.__dict__, "cities": cities})
    if industries:
        spec = ProvinceSpec(**{**spec.__dict__, "industries": industries})
    return spec


def generate(spec: ProvinceSpec = ProvinceSpec(), seed: int = 1) -> Province:
    """A deterministic province: factories spread over cities, robots over factories."""
    rng = random.Random(seed)
    regions = [Region(spec.code, spec.name, spec.name_en, None)]
    factories: list[Factory] = []
    for city in spec.cities:
        regions.append(Region(city.code, city.name, city.name_en, spec.code))
        for _ in range(city.factories):
            i = len(factories)
            industry = spec.industries[i % len(spec.industries)]
            factories.append(
                Factory(
                    id=f"f{city.code}-{i + 1:03d}",
                    name=f"{city.name_en} {industry.name_en.split()[0].rstrip(',')} Works {i + 1}",
                    region=city.code,
                    industry=industry.code,
                    employees=rng.randint(spec.employees_min, spec.employees_max),
                    protocol=_spread(i, spec.opcua_share),
                    shifts=rng.choice((2, 2, 3)),
                )
            )
    owners = _owners(spec, factories, rng)
    robots = []
    names = sorted(MANUFACTURERS)
    for n, owner in enumerate(owners):
        maker = rng.choice(names)
        domestic, models = MANUFACTURERS[maker]
        model = rng.choice(models)
        commissioned = date(rng.randint(2015, 2025), rng.randint(1, 12), 1)
        moved = None
        if len(factories) > 1 and rng.random() < spec.leased_share:
            before = rng.choice([f.id for f in factories if f.id != factories[owner].id])
            moved = (before, date(spec.lease_year, rng.randint(1, 10), rng.randint(1, 28)))
        robots.append(
            Robot(
                manufacturer=maker,
                serial=f"{maker[:2]}{seed:02d}{n + 1:06d}",
                model=model,
                category=next((c for p, c in CATEGORY.items() if model.startswith(p)), "articulated"),
                application=rng.choice(APPLICATIONS),
                domestic=domestic,
                factory=factories[owner].id,
                commissioned=commissioned,
                moved_from=moved,
            )
        )
    return Province(spec.code, tuple(regions), spec.industries, tuple(factories), tuple(robots))


def _owners(spec: ProvinceSpec, factories: list[Factory], rng: random.Random) -> list[int]:
    """The factory index of every robot, sorted."""
    if spec.density is not None:
        per = [max(1, round(spec.density * f.employees / 10_000)) for f in factories]
        return [i for i, n in enumerate(per) for _ in range(n)]
    # Every factory gets at least one robot; the rest go by headcount.
    weights = [f.employees for f in factories]
    extra = rng.choices(range(len(factories)), weights, k=max(0, spec.robots - len(factories)))
    return sorted(list(range(len(factories))) + extra)


def _spread(i: int, share: float) -> Protocol:
    """OPC UA for an evenly spread ``share`` of factories, MQTT for the others."""
    return "opcua" if int((i + 1) * share) > int(i * share) else "mqtt"


_ROBOT_COLUMNS = [
    "manufacturer",
    "serial",
    "model",
    "category",
    "application",
    "domestic",
    "commissioned",
    "decommissioned",
    "subsidy_programme",
]


def _robot_rows(province: Province) -> list[list[Any]]:
    """One row per robot (none decommissioned, none subsidised)."""
    return [
        [
            r.manufacturer,
            r.serial,
            r.model,
            r.category,
            r.application,
            str(r.domestic).lower(),
            r.commissioned.isoformat(),
            "",
            "",
        ]
        for r in province.robots
    ]


def _assignment_rows(province: Province) -> list[list[Any]]:
    """Each robot's first factory from commissioning, and a second row for a leased robot that moved."""
    first = [
        [r.manufacturer, r.serial, r.moved_from[0] if r.moved_from else r.factory, r.commissioned.isoformat()]
        for r in province.robots
    ]
    moves = [
        [r.manufacturer, r.serial, r.factory, r.moved_from[1].isoformat()] for r in province.robots if r.moved_from
    ]
    return first + moves


def write_registry_csv(province: Province, folder: Path) -> list[Path]:
    """The registry as the CSV files ``robodensity registry import`` reads."""
    folder.mkdir(parents=True, exist_ok=True)
    tables: dict[str, tuple[list[str], list[list[Any]]]] = {
        "regions": (
            ["code", "name", "name_en", "parent_code"],
            [[r.code, r.name, r.name_en, r.parent or ""] for r in province.regions],
        ),
        "industries": (
            ["code", "name", "name_en", "key_manufacturing"],
            [[i.code, i.name, i.name_en, str(i.key_manufacturing).lower()] for i in province.industries],
        ),
        "factories": (
            ["factory_id", "name", "region_code", "industry_code"],
            [[f.id, f.name, f.region, f.industry] for f in province.factories],
        ),
        "headcounts": (
            ["factory_id", "valid_from", "employee_count"],
            [[f.id, province.headcount_date.isoformat(), f.employees] for f in province.factories],
        ),
        "robots": (_ROBOT_COLUMNS, _robot_rows(province)),
        "assignments": (["manufacturer", "serial", "factory_id", "valid_from"], _assignment_rows(province)),
    }
    paths = []
    for name, (header, rows) in tables.items():
        path = folder / f"{name}.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(rows)
        paths.append(path)
    return paths
