"""Settings: one typed object, errors that name the key, the sample file stays valid."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from robodensity.errors import ConfigError
from robodensity.settings import load_settings

ROOT = Path(__file__).parent.parent


def test_a_bad_policy_names_the_key_and_the_allowed_values(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text('[[edge.opcua]]\nurl = "opc.tcp://127.0.0.1:4840"\nsecurity_policy = "None"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "edge.opcua[0].security_policy must be one of Basic256Sha256" in str(info.value)
    assert "got 'None'" in str(info.value)


def test_the_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[edge]\nagent_id = "from-file"\nfactory_id = "f9"\n')
    monkeypatch.setenv("ROBODENSITY_EDGE__AGENT_ID", "from-env")
    s = load_settings(path)
    assert (s.edge.agent_id, s.edge.factory_id) == ("from-env", "f9")


def test_a_password_never_appears_in_an_error(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[database]\nurl = "mysql://u:hunter2@db/x"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "hunter2" not in str(info.value)
    assert "database.url" in str(info.value)


def test_an_unknown_key_is_an_error_not_ignored(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("[edge]\nagent = 'x'\n")
    with pytest.raises(ConfigError, match=r"edge\.agent"):
        load_settings(path)


def test_the_sample_file_loads_with_its_commented_options_enabled(tmp_path: Path) -> None:
    text = (ROOT / "deploy" / "robodensity.example.toml").read_text()
    enabled = "\n".join(
        line[2:] if (line.startswith("# ") and "=" in line.split("#")[1]) or line.startswith("# [") else line
        for line in text.splitlines()
    )
    tomllib.loads(enabled)  # still TOML
    path = tmp_path / "all.toml"
    path.write_text(enabled)
    s = load_settings(path)
    assert s.edge.opcua[0].security_policy == "Basic256Sha256"
    assert s.edge.mqtt_json[0].state_map["RUN"].value == "EXECUTING"


def test_a_pem_key_not_named_pem_is_refused_with_the_reason(tmp_path: Path) -> None:
    key = tmp_path / "client.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n")
    path = tmp_path / "s.toml"
    path.write_text(f'[[edge.opcua]]\nurl = "opc.tcp://127.0.0.1:4840"\nprivate_key = "{key}"\n')
    with pytest.raises(ConfigError, match=r"edge\.opcua\[0\]\.private_key .*name it \*\.pem"):
        load_settings(path)
