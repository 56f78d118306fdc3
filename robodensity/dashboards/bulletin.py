"""The printable monthly bulletin: robot density against target by city, in Chinese and English.

``bulletin_data`` reads one month's density rows (the metrics job's period from the first
of the month to the first of the next, China Standard Time) for a region and its direct
sub-regions, the previous month for the movers, and the days with reported data (daily
blocks) for the data-gap notes. Every figure comes from the density rows the metrics job
writes; none is computed here. ``render_html`` turns that into one self-contained HTML page with inline SVG
charts; ``write_bulletin`` writes it and, when headless Chromium is installed, a PDF.

Every figure in the page carries ``data-key``/``data-region`` attributes so a test can read
them back and compare them with the database. Next to every figure the page states, in Chinese
and English, its definition, its denominator's source and vintage, and its coverage
(docs/definitions.md); a target names the definition it is measured in, and its progress is
that definition's density over it.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from robodensity.core.errors import ConfigError, DatabaseError
from robodensity.core.settings import DEFAULT_TIMEZONE

LOCAL_TZ_NAME = DEFAULT_TIMEZONE
LOW_COVERAGE = 0.9
"""Below this share of registered robots reporting, a region's figures get a data-gap note."""
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


@dataclass
class BulletinData:
    region: dict[str, Any]
    """The region's own density row (v_density) for the month."""
    children: list[dict[str, Any]]
    """Its direct sub-regions' rows for the month, by code."""
    industries: list[dict[str, Any]]
    previous: dict[str, dict[str, Any]]
    """Previous month's rows by region code (region and sub-regions); empty when not computed."""
    month: date
    period_start: datetime
    period_end: datetime
    days_with_data: int
    days_in_month: int
    gaps: list[tuple[str, str]] = field(default_factory=list)
    """(Chinese, English) notes on missing or partial data."""
    defined: list[dict[str, Any]] = field(default_factory=list)
    """The month's rows of the other definitions (v_density_defined), region and sub-regions, '*'."""


def month_period(month: str) -> tuple[date, date]:
    """First day of ``month`` (YYYY-MM) and of the month after."""
    if not re.fullmatch(r"\d{4}-\d{2}", month):
        raise ConfigError(f"--month must be YYYY-MM; got {month!r}")
    first = date(int(month[:4]), int(month[5:]), 1) if 1 <= int(month[5:]) <= 12 else None
    if first is None:
        raise ConfigError(f"--month must be YYYY-MM with a month 01..12; got {month!r}")
    nxt = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return first, nxt


def _rows(
    conn: psycopg.Connection, region: str, start: date, end: date, view: str = "v_density"
) -> list[dict[str, Any]]:
    other = "AND definition <> 'participating' " if view == "v_density_defined" else ""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT * FROM {view} "  # one of the two view names of this module
            f"WHERE (region_code = %(r)s OR parent_code = %(r)s) AND industry_code = '*' {other}"
            "AND period_start = (%(s)s::timestamp AT TIME ZONE %(tz)s) "
            "AND period_end = (%(e)s::timestamp AT TIME ZONE %(tz)s) "
            "ORDER BY level, region_code, definition",
            {
                "r": region,
                "s": datetime.combine(start, time()),
                "e": datetime.combine(end, time()),
                "tz": LOCAL_TZ_NAME,
            },
        ).fetchall()


def bulletin_data(conn: psycopg.Connection, region: str, month: str) -> BulletinData:
    first, nxt = month_period(month)
    rows = _rows(conn, region, first, nxt)
    own = [r for r in rows if r["region_code"] == region]
    if not own:
        raise DatabaseError(
            f"no densities of region {region} for {month}: run "
            f"`robodensity metrics compute --from {first.isoformat()} --to {nxt.isoformat()}` first"
        )
    prev_first, _ = month_period(f"{first.year - (first.month == 1)}-{(first.month - 2) % 12 + 1:02d}")
    previous = {r["region_code"]: r for r in _rows(conn, region, prev_first, first)}
    with conn.cursor(row_factory=dict_row) as cur:
        industries = cur.execute(
            "SELECT d.*, i.name AS industry_name, i.name_en AS industry_name_en FROM v_density d "
            "JOIN v_industries i ON i.code = d.industry_code "
            "WHERE d.region_code = %s AND d.period_start = %s AND d.period_end = %s "
            "ORDER BY d.robot_density DESC NULLS LAST, d.industry_code",
            (region, own[0]["period_start"], own[0]["period_end"]),
        ).fetchall()
        days = cur.execute(
            "SELECT count(DISTINCT rd.day) AS n FROM v_robot_blocks_daily rd "
            "JOIN v_factory_region fr ON fr.factory_id = rd.factory_id AND fr.region_code = %s "
            "WHERE rd.day >= %s AND rd.day < %s AND rd.offline_s < rd.covered_s",
            (region, first, nxt),
        ).fetchone()
    data = BulletinData(
        own[0],
        [r for r in rows if r["region_code"] != region],
        industries,
        previous,
        first,
        own[0]["period_start"],
        own[0]["period_end"],
        int(days["n"] if days else 0),
        (nxt - first).days,
    )
    data.defined = _rows(conn, region, first, nxt, "v_density_defined")
    data.gaps = _gaps(data)
    return data


def _gaps(d: BulletinData) -> list[tuple[str, str]]:
    notes: list[tuple[str, str]] = []
    for r in [d.region, *d.children]:
        name, name_en = r["region_name"], r["region_name_en"]
        if r["employee_count"] == 0:
            notes.append(
                (f"{name}：无从业人员数据，无法计算密度。", f"{name_en}: no employee headcount, so no density.")
            )
        cov = r["coverage"]
        if cov is not None and cov < LOW_COVERAGE:
            missing = r["robot_count"] - r["reporting_count"]
            notes.append(
                (
                    f"{name}：{missing} 台登记机器人本月未上报数据（覆盖率 {_pct(cov)}），核验密度偏低。",
                    f"{name_en}: {missing} registered robots sent no telemetry this month "
                    f"(coverage {_pct(cov)}); verified density understates.",
                )
            )
    if d.days_with_data < d.days_in_month:
        notes.append(
            (
                f"本月 {d.days_in_month} 天中仅 {d.days_with_data} 天有利用率数据。",
                f"Utilisation data exist for {d.days_with_data} of {d.days_in_month} days of the month.",
            )
        )
    if not d.previous:
        notes.append(("上月密度未计算，无法列出变化。", "The previous month was not computed: no movers."))
    if d.region["target"] is None:
        notes.append(("未找到适用的密度目标。", "No applicable density target was found."))
    elif d.region["target_definition"] != d.region["definition"]:
        t = d.region["target_definition"]
        notes.append(
            (
                f"目标按“{t}”口径设定，与参与企业密度口径不同；目标完成度按该口径的密度计算（若已导入官方统计）。",
                f"The target is measured in definition {t}, not in that of the participating-factories density; "
                "progress is that definition's density over the target (when official statistics are imported).",
            )
        )
    return notes


def definition_note(r: dict[str, Any]) -> str:
    """What a figure is, in Chinese and English: definition, denominator source and vintage, coverage."""
    cov = f"覆盖率 coverage {_pct(r.get('coverage'))}"
    if r.get("employment_coverage") is not None and r["definition"] != "participating":
        cov += f" · 就业覆盖率 employment coverage {_pct(r['employment_coverage'])}"
    year = r.get("denominator_year")
    vintage = r["vintage"] + ("" if year is None else f", {year}")
    text = f"口径 definition: {r['definition']} · 分母 denominator: {r['denominator_source']}, {vintage} · {cov}"
    return f'<small class="def" data-definition="{html.escape(r["definition"])}">{html.escape(text)}</small>'


_CALENDARS = re.compile(r"planned: shift calendars \((\d+) of (\d+) factories(, the others 24/7)?\)")


def plan_text(plan: str | None) -> str:
    """The plan a utilisation divides by (density.plan), in Chinese and English."""
    if plan is None:
        return "计划时间未知 plan unknown"
    found = _CALENDARS.fullmatch(plan)
    if found:
        others = "，其余全天候" if found.group(3) else ""
        return f"计划时间：班次日历（{found.group(2)} 家企业中 {found.group(1)} 家{others}） {plan}"
    if plan == "planned: 24/7":
        return f"计划时间：全天候 {plan}"
    return plan


def plan_note(r: dict[str, Any]) -> str:
    """The plan next to a utilisation figure: ``data-plan`` carries the row's label as stored."""
    plan = r.get("plan")
    return f'<small class="def plan" data-plan="{html.escape(plan or "")}">{html.escape(plan_text(plan))}</small>'


def _plan_cell(key: str, region: str, plan: str | None) -> str:
    return (
        f'<td class="plan" data-key="{key}" data-region="{html.escape(region)}" '
        f'data-plan="{html.escape(plan or "")}">{html.escape(plan_text(plan))}</td>'
    )


# ----------------------------------------------------------------------------- rendering


def _num(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _cell(key: str, region: str, value: Any, text: str) -> str:
    raw = "" if value is None else repr(float(value)) if isinstance(value, float) else str(value)
    return (
        f'<td class="num" data-key="{key}" data-region="{html.escape(region)}" '
        f'data-value="{html.escape(raw)}">{html.escape(text)}</td>'
    )


def bar_chart_svg(
    items: list[tuple[str, float | None]],
    *,
    target: float | None = None,
    unit: str = "",
    width: int = 640,
    bar_h: int = 26,
    label_w: int = 190,
    percent: bool = False,
) -> str:
    """A horizontal bar chart as inline SVG; a dashed red line marks ``target``."""
    values = [v for _, v in items if v is not None]
    top = max([*values, target or 0, 1e-9]) * 1.15
    plot_w = width - label_w - 70
    height = len(items) * bar_h + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" font-family="sans-serif" font-size="12">'
    ]
    for i, (label, v) in enumerate(items):
        y = 10 + i * bar_h
        parts.append(
            f'<text x="{label_w - 6}" y="{y + bar_h * 0.62:.1f}" text-anchor="end">{html.escape(label)}</text>'
        )
        if v is not None:
            w = plot_w * v / top
            parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{bar_h - 8}" fill="#2f6db5"/>')
            text = _pct(v) if percent else _num(v)
            parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + bar_h * 0.62:.1f}">{text}{unit}</text>')
        else:
            parts.append(f'<text x="{label_w + 4}" y="{y + bar_h * 0.62:.1f}" fill="#888">n/a</text>')
    if target:
        x = label_w + plot_w * target / top
        parts.append(
            f'<line x1="{x:.1f}" y1="4" x2="{x:.1f}" y2="{height - 16}" stroke="#c0392b" '
            f'stroke-width="2" stroke-dasharray="6 4"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{height - 3}" text-anchor="middle" fill="#c0392b">'
            f"目标 target {_num(target, 0)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
@page { size: A4; margin: 14mm; }
body { font-family: "Noto Sans CJK SC", "Source Han Sans SC", "WenQuanYi Micro Hei", sans-serif;
       color: #222; max-width: 190mm; margin: 0 auto; font-size: 10.5pt; }
h1 { font-size: 17pt; margin: 0 0 2mm; border-bottom: 2px solid #2f6db5; padding-bottom: 2mm; }
h2 { font-size: 12.5pt; margin: 6mm 0 2mm; color: #2f6db5; }
.sub { color: #555; margin: 0 0 4mm; }
.kpis { display: flex; flex-wrap: wrap; gap: 3mm; }
.kpi { border: 1px solid #ccd; border-radius: 2mm; padding: 2mm 3mm; min-width: 36mm; }
.kpi b { display: block; font-size: 15pt; }
table { border-collapse: collapse; width: 100%; margin: 2mm 0; }
th, td { border-bottom: 1px solid #dde; padding: 1.2mm 2mm; text-align: left; }
th { background: #eef2f8; font-weight: 600; font-size: 9.5pt; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.up { color: #1e8449; } .down { color: #c0392b; }
ul.gaps li { margin-bottom: 1mm; }
small.def { display: block; color: #666; font-size: 7.5pt; margin-top: 0.5mm; }
td.plan { color: #555; font-size: 7.5pt; max-width: 38mm; }
footer { margin-top: 6mm; color: #666; font-size: 8.5pt; border-top: 1px solid #ccd; padding-top: 2mm; }
"""


def render_html(d: BulletinData, generated: datetime | None = None) -> str:
    r = d.region
    code = r["region_code"]
    month_zh = f"{d.month.year}年{d.month.month}月"
    month_en = d.month.strftime("%B %Y")
    same = next((x for x in d.defined if x["region_code"] == code and x["definition"] == r["target_definition"]), r)
    progress = same["robot_density"] / r["target"] if same["robot_density"] is not None and r["target"] else None
    target_def = html.escape(str(r["target_definition"]))
    notes = {
        "robot_density": definition_note(r),
        "verified_density": definition_note(r),
        "target": f'<small class="def" data-definition="{target_def}">目标口径 target in: {target_def}</small>',
        "utilisation": plan_note(r),
        "target_progress": definition_note(same)
        + (
            ""
            if same["definition"] == r["target_definition"]
            else '<small class="def">口径不同 definitions differ</small>'
        ),
    }
    kpis = [
        ("robot_density", "机器人密度 Robot density", _num(r["robot_density"]), r["robot_density"]),
        (
            "target",
            "目标 Target",
            _num(r["target"], 0) + (f" ({r['target_due']:%Y-%m-%d})" if r["target"] else ""),
            r["target"],
        ),
        ("target_progress", "目标完成度 Progress", _pct(progress), progress),
        ("verified_density", "核验密度 Verified density", _num(r["verified_density"]), r["verified_density"]),
        ("coverage", "覆盖率 Coverage", _pct(r["coverage"]), r["coverage"]),
        ("utilisation", "利用率 Utilisation", _pct(r["utilisation"]), r["utilisation"]),
        ("domestic_share", "国产品牌占比 Domestic brands", _pct(r["domestic_share"]), r["domestic_share"]),
        ("robot_count", "机器人 Robots", f"{r['robot_count']:,}", r["robot_count"]),
        ("employee_count", "从业人员 Employees", f"{r['employee_count']:,}", r["employee_count"]),
    ]
    kpi_html = "".join(
        f'<div class="kpi">{html.escape(label)}<b data-key="{key}" data-region="{code}" '
        f'data-value="{"" if v is None else v!r}">{html.escape(text)}</b>{notes.get(key, "")}</div>'
        for key, label, text, v in kpis
    )
    defined_rows = "".join(
        "<tr>"
        f"<td>{html.escape(x['region_name'])} {html.escape(x['region_name_en'])}</td>"
        f"<td>{html.escape(x['definition_title_zh'])}<br>{html.escape(x['definition_title'])}</td>"
        + _cell(f"density_{x['definition']}", x["region_code"], x["robot_density"], _num(x["robot_density"]))
        + _cell(
            f"participating_{x['definition']}",
            x["region_code"],
            x["participating_density"],
            _num(x["participating_density"]),
        )
        + _cell(
            f"employment_coverage_{x['definition']}",
            x["region_code"],
            x["employment_coverage"],
            _pct(x["employment_coverage"]),
        )
        + f"<td>{definition_note(x)}</td></tr>"
        for x in d.defined
    )
    cities = d.children
    city_rows = "".join(
        "<tr>"
        f"<td>{html.escape(c['region_name'])} {html.escape(c['region_name_en'])}</td>"
        + _cell("robot_count", c["region_code"], c["robot_count"], f"{c['robot_count']:,}")
        + _cell("employee_count", c["region_code"], c["employee_count"], f"{c['employee_count']:,}")
        + _cell("robot_density", c["region_code"], c["robot_density"], _num(c["robot_density"]))
        + _cell("verified_density", c["region_code"], c["verified_density"], _num(c["verified_density"]))
        + _cell("coverage", c["region_code"], c["coverage"], _pct(c["coverage"]))
        + _cell("utilisation", c["region_code"], c["utilisation"], _pct(c["utilisation"]))
        + _plan_cell("plan", c["region_code"], c.get("plan"))
        + _cell("domestic_share", c["region_code"], c["domestic_share"], _pct(c["domestic_share"]))
        + "</tr>"
        for c in cities
    )
    density_chart = bar_chart_svg(
        [(f"{c['region_name']} {c['region_name_en']}", c["robot_density"]) for c in cities], target=r["target"]
    )
    util_chart = bar_chart_svg(
        [(f"{c['region_name']} {c['region_name_en']}", c["utilisation"]) for c in cities], percent=True
    )
    movers = []
    for c in [r, *cities]:
        p = d.previous.get(c["region_code"])
        if p and p["robot_density"] is not None and c["robot_density"] is not None:
            movers.append((c["robot_density"] - p["robot_density"], c, p))
    movers.sort(key=lambda m: (-abs(m[0]), m[1]["region_code"]))
    mover_rows = (
        "".join(
            "<tr>"
            f"<td>{html.escape(c['region_name'])} {html.escape(c['region_name_en'])}</td>"
            f'<td class="num">{_num(p["robot_density"])}</td><td class="num">{_num(c["robot_density"])}</td>'
            f'<td class="num {"up" if delta > 0 else "down" if delta < 0 else ""}" data-key="density_change" '
            f'data-region="{c["region_code"]}" data-value="{delta!r}">{delta:+.1f}</td>'
            "</tr>"
            for delta, c, p in movers
        )
        or '<tr><td colspan="4">–</td></tr>'
    )
    industry_rows = "".join(
        "<tr>"
        f"<td>{html.escape(i['industry_code'])} {html.escape(i['industry_name'])} "
        f"{html.escape(i['industry_name_en'])}</td>"
        + _cell("industry_density", i["industry_code"], i["robot_density"], _num(i["robot_density"]))
        + _cell("industry_robots", i["industry_code"], i["robot_count"], f"{i['robot_count']:,}")
        + _cell("industry_utilisation", i["industry_code"], i["utilisation"], _pct(i["utilisation"]))
        + _plan_cell("industry_plan", i["industry_code"], i.get("plan"))
        + "</tr>"
        for i in d.industries
        if i["industry_code"] != "*"
    )
    gaps = (
        "".join(f'<li>{html.escape(zh)}<br><span lang="en">{html.escape(en)}</span></li>' for zh, en in d.gaps)
        or "<li>无 None.</li>"
    )
    generated = generated or datetime.now().astimezone()
    name = f"{r['region_name']} {r['region_name_en']}"
    return f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8">
<title>{html.escape(name)} 机器人密度月报 Robot density bulletin {month_en}</title>
<style>{_CSS}</style></head>
<body>
<h1>{html.escape(r["region_name"])}工业机器人密度月报 · {month_zh}</h1>
<p class="sub">{html.escape(r["region_name_en"])} industrial robot density bulletin · {month_en}
 · 地区代码 region {code} · 统计期 period {d.month.isoformat()} – {(d.period_end.date()).isoformat()}</p>
<section><h2>总体 Overview</h2><div class="kpis">{kpi_html}</div></section>
<section><h2>各市密度与目标 Density by city against the target</h2>
{density_chart}
<table><thead><tr><th>城市 City</th><th>机器人 Robots</th><th>从业人员 Employees</th>
<th>密度 Density</th><th>核验密度 Verified</th><th>覆盖率 Coverage</th><th>利用率 Utilisation</th>
<th>计划时间 Planned time</th><th>国产占比 Domestic</th></tr></thead>
<tbody>{city_rows}</tbody></table>{definition_note(r)}</section>
<section><h2>其他口径 Other definitions (official employment statistics)</h2>
<table><thead><tr><th>地区 Region</th><th>口径 Definition</th><th>密度 Density</th>
<th>参与企业密度 Participating</th><th>就业覆盖率 Employment coverage</th><th>来源 Source</th></tr></thead>
<tbody>{defined_rows or '<tr><td colspan="6">未导入官方统计 No official statistics imported.</td></tr>'}</tbody>
</table></section>
<section><h2>变化 Movers (vs. previous month)</h2>
<table><thead><tr><th>地区 Region</th><th>上月 Previous</th><th>本月 This month</th><th>变化 Change</th></tr></thead>
<tbody>{mover_rows}</tbody></table></section>
<section><h2>利用率 Utilisation by city</h2>{util_chart}{plan_note(r)}</section>
<section><h2>分行业 By industry</h2>
<table><thead><tr><th>行业 Industry</th><th>密度 Density</th><th>机器人 Robots</th><th>利用率 Utilisation</th>
<th>计划时间 Planned time</th></tr>
</thead><tbody>{industry_rows}</tbody></table>{definition_note(r)}</section>
<section><h2>数据缺口 Data gaps</h2><ul class="gaps">{gaps}</ul></section>
<footer>密度（口径 participating）= 在用登记机器人数 / 参与企业从业人员数 × 10,000；其他口径见“其他口径”一节；
核验密度只计本月有实际运行记录的机器人；
覆盖率 = 上报数据的登记机器人占比；利用率 = 计划时间内的运行时间之和 / 计划时间之和（即 ISO 22400-2 可用率），
计划时间按企业班次日历，无日历的企业按全天候（24/7），每个利用率旁注明。<br>
Density (definition participating) = registered robots in operation per 10,000 employees of the participating
factories; other definitions are under "Other definitions"; verified density counts only robots
whose telemetry shows real work in the month; coverage = share of registered robots that reported; utilisation =
EXECUTING time inside the planned time / planned time, summed over the robots (= ISO 22400-2 availability); planned
time follows each factory's shift calendar, 24/7 where it has none, as stated next to every utilisation.
Generated {generated:%Y-%m-%d %H:%M %Z} by RoboDensity.
</footer>
</body></html>
"""


# ----------------------------------------------------------------------------- files


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium(args: list[str], timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with a fresh profile; raises FileNotFoundError when it is not installed."""
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError("chromium")
    with tempfile.TemporaryDirectory(prefix="robodensity-chromium-") as profile:
        return subprocess.run(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )


def print_pdf(html_path: Path, pdf_path: Path) -> bool:
    """Print ``html_path`` to ``pdf_path`` with headless Chromium; False when Chromium is missing or fails."""
    try:
        res = chromium(["--no-pdf-header-footer", f"--print-to-pdf={pdf_path}", html_path.resolve().as_uri()])
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0 and pdf_path.is_file() and pdf_path.stat().st_size > 0


def write_bulletin(conn: psycopg.Connection, region: str, month: str, out: Path, pdf: bool = True) -> list[Path]:
    """Write the bulletin HTML to ``out`` (and ``out`` with .pdf when Chromium is available); returns paths."""
    page = render_html(bulletin_data(conn, region, month))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    written = [out]
    if pdf:
        pdf_path = out.with_suffix(".pdf")
        if print_pdf(out, pdf_path):
            written.append(pdf_path)
    return written
