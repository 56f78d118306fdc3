"""Build every dashboard's JSON model and write it, with Grafana's provisioning files, to a folder.

Layout written by ``write_dashboards(out)``::

    out/departments/robodensity-national.json      one folder per audience
    out/departments/robodensity-province.json
    out/departments/robodensity-drilldown.json
    out/factories/robodensity-factory.json
    out/operators/robodensity-fleet.json
    out/provisioning/datasources/robodensity.yaml  copy into Grafana's provisioning folder
    out/provisioning/dashboards/robodensity.yaml   (deploy/grafana/provisioning holds the same)
    out/provisioning/alerting/robodensity.yaml     the alert rules (dashboards/alerts.py)

Mount ``out`` at ``DASHBOARDS_ROOT`` in the Grafana container.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from robodensity.core.errors import ConfigError
from robodensity.dashboards import drilldown, factory, fleet, national, province
from robodensity.dashboards.alerts import alert_rules_yaml
from robodensity.dashboards.provision import FOLDERS, Folder, dashboards_yaml, datasource_yaml

DASHBOARD_MODULES: tuple[ModuleType, ...] = (national, province, drilldown, factory, fleet)


def to_json(obj: Any) -> dict[str, Any]:
    """An SDK model as plain JSON data (dicts, lists, str, numbers)."""
    data: dict[str, Any] = json.loads(json.dumps(obj, cls=JSONEncoder, sort_keys=True))
    return data


def build_all() -> dict[str, dict[str, Any]]:
    """uid -> dashboard JSON model, for every dashboard."""
    out: dict[str, dict[str, Any]] = {}
    for module in DASHBOARD_MODULES:
        model = to_json(module.build())
        _number_panels(model)
        if model["uid"] in out:
            raise ValueError(f"duplicate dashboard uid {model['uid']}")
        out[model["uid"]] = model
    return out


def _number_panels(model: dict[str, Any]) -> None:
    """Stable panel ids 1, 2, ... in layout order (Grafana needs them unique within a dashboard)."""
    n = 0
    for panel in model.get("panels", []):
        n += 1
        panel["id"] = n
        for inner in panel.get("panels", []):
            n += 1
            inner["id"] = n


def folder_of(uid: str) -> Folder:
    for module in DASHBOARD_MODULES:
        if uid == module.UID:
            return FOLDERS[module.FOLDER]
    raise KeyError(uid)


def write_dashboards(out: Path) -> list[Path]:
    """Write every dashboard JSON and the provisioning files under ``out``; returns the paths written."""
    out = Path(out)
    paths: list[Path] = []
    for uid, model in build_all().items():
        path = out / folder_of(uid).key / f"{uid}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(model, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
        paths.append(path)
    for rel, text in (
        ("provisioning/datasources/robodensity.yaml", datasource_yaml()),
        ("provisioning/dashboards/robodensity.yaml", dashboards_yaml()),
        ("provisioning/alerting/robodensity.yaml", alert_rules_yaml()),
    ):
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def read_dashboards(folder: Path) -> dict[str, dict[str, Any]]:
    """uid -> dashboard JSON model, read back from ``folder`` as ``write_dashboards`` laid it out.

    ConfigError names the file (and line) of anything that is not one of our dashboards.
    """
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder; write it with `robodensity dashboards build --out {folder}`")
    known = {module.UID for module in DASHBOARD_MODULES}
    models: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*/*.json")):
        try:
            model = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{exc.lineno}: not JSON: {exc.msg}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from None
        uid = model.get("uid") if isinstance(model, dict) else None
        if not isinstance(uid, str) or uid not in known:
            raise ConfigError(f"{path}:1: uid: {uid!r} is not one of our dashboards ({', '.join(sorted(known))})")
        models[uid] = model
    if not models:
        raise ConfigError(f"{folder}: no dashboard JSON under {folder}/<folder>/; run `robodensity dashboards build`")
    return models
