"""The printable bulletin: its figures match the database and the simulation, and it renders."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from robodensity.app import metrics_job
from robodensity.app.metrics_job import LOCAL_TZ
from robodensity.core.errors import ConfigError, DatabaseError
from robodensity.dashboards.bulletin import chromium, find_chromium, month_period, write_bulletin
from robodensity.simulators.load import load_province
from robodensity.simulators.province import Province, ProvinceSpec, generate
from robodensity.storage.db import connect, drop_schema, migrate

START = datetime(2026, 1, 1, tzinfo=LOCAL_TZ)
FEB = datetime(2026, 2, 1, tzinfo=LOCAL_TZ)
END = datetime(2026, 3, 1, tzinfo=LOCAL_TZ)
SEED = 5
SILENT = 3
"""Robots of the first city whose telemetry is removed: a coverage gap the bulletin must note."""


@dataclass
class Loaded:
    url: str
    schema: str
    province: Province
    silent: set[str]


@pytest.fixture(scope="module")
def loaded(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    migrate(pg_url, schema)
    province = generate(ProvinceSpec(robots=45), SEED)
    city = province.regions[1].code
    silent = [r for r in province.robots if r.factory.startswith(f"f{city}")][:SILENT]
    try:
        with connect(pg_url, schema) as conn:
            load_province(conn, province, tmp_path_factory.mktemp("registry"), SEED, START, END)
            conn.execute(
                "DELETE FROM events WHERE robot_id IN (SELECT robot_id FROM robots WHERE serial = ANY(%s))",
                ([r.serial for r in silent],),
            )
            # One factory of the first city works two shifts five days a week; the rest are 24/7.
            conn.execute(
                "INSERT INTO factory_shifts (factory_id, valid_from, days, start_min, end_min) "
                "VALUES (%s, '2000-01-01', '12345', 360, 1320)",
                (_calendar_factory(province),),
            )
            conn.commit()
            metrics_job.compute(conn, START, FEB)
            metrics_job.compute(conn, FEB, END)
            conn.commit()
        yield Loaded(pg_url, schema, province, {r.serial for r in silent})
    finally:
        drop_schema(pg_url, schema)


def _calendar_factory(province: Province) -> str:
    city = province.regions[1].code
    return next(f.id for f in province.factories if f.region == city)


def _figures(page: str) -> dict[tuple[str, str], str]:
    return {
        (m[0], m[1]): m[2] for m in re.findall(r'data-key="([a-z_]+)" data-region="([^"]*)" data-value="([^"]*)"', page)
    }


def test_bulletin_figures_match_the_database_and_the_simulation(loaded: Loaded, tmp_path: Path) -> None:
    out = tmp_path / "bulletin.html"
    with connect(loaded.url, loaded.schema) as conn:
        written = write_bulletin(conn, "320000", "2026-02", out, pdf=False)
        db = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT region_code, robot_density, verified_density, coverage, utilisation, robot_count, plan "
                "FROM v_density WHERE industry_code = '*' AND period_start = %s AND period_end = %s",
                (FEB, END),
            )
        }
    assert written == [out]
    page = out.read_text(encoding="utf-8")
    fig = _figures(page)
    prov = loaded.province
    expected = len(prov.robots) / sum(f.employees for f in prov.factories) * 10_000
    assert float(fig[("robot_density", "320000")]) == pytest.approx(expected)
    assert float(fig[("target", "320000")]) == 500
    for region in prov.regions[1:]:
        code = region.code
        facs = [f for f in prov.factories if f.region == code]
        robots = [r for f in facs for r in prov.robots_of(f.id)]
        assert float(fig[("robot_density", code)]) == pytest.approx(
            len(robots) / sum(f.employees for f in facs) * 10_000
        )
        _density, verified, coverage, utilisation, count, plan = db[code]
        assert float(fig[("verified_density", code)]) == pytest.approx(verified)
        assert float(fig[("coverage", code)]) == pytest.approx(coverage)
        assert float(fig[("utilisation", code)]) == pytest.approx(utilisation)
        assert int(fig[("robot_count", code)]) == count
        silent = sum(r.serial in loaded.silent for r in robots)
        assert float(fig[("coverage", code)]) == pytest.approx((len(robots) - silent) / len(robots))
        assert ("density_change", code) in fig  # January was computed too: movers listed
        # the plan utilisation divides by, next to it in every city's row
        assert f'data-key="plan" data-region="{code}" data-plan="{plan}"' in page
        calendar = _calendar_factory(prov) in {f.id for f in facs}
        assert plan == (
            f"planned: shift calendars (1 of {len(facs)} factories, the others 24/7)" if calendar else "planned: 24/7"
        )
    assert f'data-plan="{db["320000"][-1]}"' in page  # and next to the province's own utilisation
    # Chinese and English labels; the silent robots appear as a data gap in both languages.
    assert "机器人密度" in page and "Robot density" in page and "<svg" in page
    assert "计划时间：全天候 planned: 24/7" in page and "计划时间：班次日历（" in page
    city = prov.regions[1]
    assert f"{SILENT} 台登记机器人本月未上报数据" in page and f"{city.name_en}: {SILENT} registered robots" in page


def test_bulletin_for_a_month_without_densities_says_what_to_run(loaded: Loaded, tmp_path: Path) -> None:
    with (
        connect(loaded.url, loaded.schema) as conn,
        pytest.raises(DatabaseError, match="metrics compute --from 2026-05-01 --to 2026-06-01"),
    ):
        write_bulletin(conn, "320000", "2026-05", tmp_path / "x.html")
    with pytest.raises(ConfigError):
        month_period("2026-13")
    assert month_period("2026-12") == (datetime(2026, 12, 1).date(), datetime(2027, 1, 1).date())


# ----------------------------------------------------------------------------- rendering in Chromium


@pytest.fixture(scope="session")
def chromium_available() -> str:
    found = find_chromium()
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("headless Chromium is not installed and cannot be installed here (needs root and apt-get)")
    res = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    found = find_chromium()
    if res.returncode != 0 or not found:
        pytest.skip(f"apt-get install chromium failed: {(res.stderr or res.stdout).strip()[-300:]}")
    return found


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and raw rows of an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = channels = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line[j] for j in range(stride) if j % channels < 3))
        prev = line
    return width, height, rows


def test_bulletin_renders_in_headless_chromium_and_is_not_blank(
    loaded: Loaded, tmp_path: Path, chromium_available: str
) -> None:
    out = tmp_path / "bulletin.html"
    with connect(loaded.url, loaded.schema) as conn:
        written = write_bulletin(conn, "320000", "2026-02", out, pdf=True)
    pdf = out.with_suffix(".pdf")
    assert pdf in written and pdf.read_bytes()[:5] == b"%PDF-"
    shot = tmp_path / "shot.png"
    res = chromium([f"--screenshot={shot}", "--window-size=900,1400", "--hide-scrollbars", out.resolve().as_uri()])
    assert res.returncode == 0 and shot.is_file(), res.stderr[-500:]
    width, height, rows = _png_pixels(shot.read_bytes())
    assert (width, height) == (900, 1400)
    inked = sum(sum(1 for x in range(0, len(r), 3) if r[x] + r[x + 1] + r[x + 2] < 600) for r in rows[::4])
    colours = {r[x : x + 3] for r in rows[::8] for x in range(0, len(r), 24)}
    assert inked > 0.01 * width * height / 4, "the screenshot is (nearly) blank"
    assert len(colours) > 8, "the screenshot has almost no colours: no charts rendered"
    # The bar colour of the density chart is on screen.
    assert any(bytes((0x2F, 0x6D, 0xB5)) == r[x : x + 3] for r in rows for x in range(0, len(r), 3))


# ----------------------------------------------------------------------------- Chinese glyphs

HEADINGS_ZH = ("工业机器人密度月报", "总体", "各市密度与目标", "利用率", "数据缺口")
NO_CJK_FONTS = """<?xml version="1.0"?><!DOCTYPE fontconfig SYSTEM "fonts.dtd">
<fontconfig><dir>/usr/share/fonts/truetype/dejavu</dir><cachedir>{cache}</cachedir></fontconfig>
"""


def _poppler(tool: str) -> str:
    found = shutil.which(tool)
    if not found:
        pytest.skip(f"{tool} (Debian poppler-utils, installed by ./dev test) is not installed")
    return found


def _embedded_glyphs(pdf: bytes) -> dict[str, int]:
    """Glyph outlines embedded in the PDF per font family (Chromium embeds each font as Type 3 glyph procedures)."""
    families = {
        num: fam.decode()
        for num, fam in re.findall(rb"(\d+) 0 obj\s*<</Type /FontDescriptor\s*/FontFamily \(([^)]*)\)", pdf)
    }
    glyphs: dict[str, int] = {}
    for desc, procs in re.findall(rb"/Subtype /Type3.*?/FontDescriptor (\d+) 0 R.*?/CharProcs <<(.*?)>>", pdf, re.S):
        family = families.get(desc, "?")
        glyphs[family] = glyphs.get(family, 0) + len(re.findall(rb"/g[0-9A-F]+ \d+ 0 R", procs))
    return glyphs


def test_bulletin_pdf_embeds_a_cjk_font_and_the_chinese_headings_render(
    loaded: Loaded, tmp_path: Path, chromium_available: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "bulletin.html"
    with connect(loaded.url, loaded.schema) as conn:
        written = write_bulletin(conn, "320000", "2026-02", out, pdf=True)
    pdf = out.with_suffix(".pdf")
    assert pdf in written
    glyphs = _embedded_glyphs(pdf.read_bytes())
    cjk = {family: n for family, n in glyphs.items() if "CJK" in family}
    # Far more glyphs than fonts: the Chinese characters' outlines, not one .notdef box per font.
    assert cjk and sum(cjk.values()) > 60, f"no CJK glyphs embedded in the PDF: {glyphs}"
    text = subprocess.run([_poppler("pdftotext"), str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    for heading in HEADINGS_ZH:
        assert heading in text, f"{heading!r} not in the PDF's text"
    # the plan, in both languages, as Chromium printed it
    flat = re.sub(r"\s+", " ", text)
    assert "计划时间" in flat and "planned: 24/7" in flat and "planned: shift calendars (1 of" in flat, flat[:2000]

    # The same page rendered with only a Latin font installed differs: Chinese glyphs were drawn, not boxes.
    def shot(name: str) -> list[bytes]:
        path = tmp_path / f"{name}.png"
        res = chromium([f"--screenshot={path}", "--window-size=900,700", "--hide-scrollbars", out.resolve().as_uri()])
        assert res.returncode == 0 and path.is_file(), res.stderr[-500:]
        return _png_pixels(path.read_bytes())[2]

    with_font = shot("with-cjk")
    conf = tmp_path / "fonts.conf"
    conf.write_text(NO_CJK_FONTS.format(cache=tmp_path / "fc-cache"), encoding="utf-8")
    monkeypatch.setenv("FONTCONFIG_FILE", str(conf))
    without = shot("without-cjk")
    differing = sum(a != b for a, b in zip(with_font, without, strict=True))
    assert differing > 20, f"only {differing} of {len(with_font)} screenshot rows differ without the CJK font"
