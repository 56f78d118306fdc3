"""The demo's whole path on a tiny province: simulators -> edge -> broker -> collector -> metrics.

The printed numbers are checked against the simulator's own registry and ground truth.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from robodensity.app.demo import run_demo
from robodensity.core.settings import load_settings
from robodensity.core.wire import State
from robodensity.simulators.province import CitySpec, ProvinceSpec
from robodensity.storage.db import connect

pytestmark = pytest.mark.slow

SPEC = ProvinceSpec(
    cities=(CitySpec("320100", "南京市", "Nanjing", 2), CitySpec("320500", "苏州市", "Suzhou", 2)),
    robots=16,
    opcua_share=0.5,
)


def test_the_demo_reports_what_the_simulated_province_holds(broker_url: str, tmp_path: Path) -> None:
    # No database configured: the demo starts its own, and keep=True leaves it running.
    settings = load_settings(broker={"url": broker_url})
    schema = f"demo_{uuid.uuid4().hex[:8]}"
    result = run_demo(settings, tmp_path, SPEC, seed=11, hours=4, replay_s=6, schema=schema, keep=True)
    assert result.kept is not None
    try:
        with connect(result.db_url, schema) as conn:  # still running after run_demo returned
            (n,) = conn.execute("SELECT count(*) FROM density WHERE region_code = '320000'").fetchone() or (0,)
            assert n >= 2  # the shift's density and the bulletin month's
    finally:
        result.kept.stop()
        result.kept.remove()
    province = result.province
    assert {f.protocol for f in province.factories} == {"opcua", "mqtt"}
    by_region = {row["region_code"]: row for row in result.rows}
    assert set(by_region) == {"320000", "320100", "320500"}

    for code, row in by_region.items():
        factories = [f for f in province.factories if code in (f.region, province.code)]
        robots = [r for r in province.robots if any(r.factory == f.id for f in factories)]
        employees = sum(f.employees for f in factories)
        assert row["robot_count"] == len(robots)
        assert row["employee_count"] == employees
        assert row["robot_density"] == pytest.approx(len(robots) / employees * 10_000)
        assert row["coverage"] == pytest.approx(1.0)
        truth = [result.truth[r.key] for r in robots]
        expected = np.mean([t[State.EXECUTING] / sum(t.values()) for t in truth])
        assert abs(row["utilisation"] - expected) < 0.02, (code, row["utilisation"], expected)

    assert by_region["320000"]["target"] == 500
    assert result.dashboards and all(json.loads(p.read_text()) for p in result.dashboards if p.suffix == ".json")
    # The bulletin sits next to the dashboards: the province's month to date, in Chinese and English.
    assert result.bulletin == tmp_path / "bulletin.html"
    page = result.bulletin.read_text(encoding="utf-8")
    assert "机器人密度" in page and "Robot density" in page
    assert 'data-key="robot_count" data-region="320000" data-value="16"' in page
