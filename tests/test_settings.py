"""Settings: one typed object, errors that read ``where: key.path: problem``, the sample file stays valid."""

from __future__ import annotations

import re
import tomllib
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from robodensity.core.errors import ConfigError
from robodensity.core.settings import DEFAULT_TIMEZONE, MqttJsonSourceSettings, Settings, load_settings

ROOT = Path(__file__).parent.parent
SAMPLE = ROOT / "deploy" / "robodensity.example.toml"


def refusal(tmp_path: Path, toml: str) -> str:
    path = tmp_path / "edge.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    text = str(info.value)
    assert "\n" not in text
    return text.removeprefix(f"{path}: ")


def test_a_bad_policy_names_the_file_the_key_and_the_allowed_values(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text('[[edge.opcua]]\nurl = "opc.tcp://127.0.0.1:4840"\nsecurity_policy = "None"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == (
        f"{path}: edge.opcua[0].security_policy: must be one of Basic256Sha256, Aes128_Sha256_RsaOaep, "
        'Aes256_Sha256_RsaPss; got "None"'
    )


def test_a_bad_broker_url_reads_path_colon_problem(tmp_path: Path) -> None:
    assert refusal(tmp_path, '[broker]\nurl = "http://x"\n') == (
        'broker.url: must be mqtt://host:port or mqtts://host:port; got "http://x"'
    )
    assert refusal(tmp_path, '[broker]\nurl = "mqtt://h:99999"\n').startswith("broker.url: must have a port 1..65535")


def test_an_error_from_the_environment_names_the_variable_not_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROBODENSITY_EDGE__BATCH_MAX_EVENTS", "lots")
    path = tmp_path / "s.toml"
    path.write_text('[edge]\nagent_id = "bad id"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value).split(" | ") == [
        f'{path}: edge.agent_id: must match ^[A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}$; got "bad id"',
        "environment ROBODENSITY_EDGE__BATCH_MAX_EVENTS: edge.batch_max_events: "
        'must be a valid integer, unable to parse string as an integer; got "lots"',
    ]


def test_an_environment_variable_that_is_not_json_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBODENSITY_EDGE__MQTT_JSON", "[{url: x}")
    with pytest.raises(ConfigError, match=r"^environment ROBODENSITY_EDGE__MQTT_JSON: edge\.mqtt_json: must be JSON"):
        load_settings()


def test_the_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[edge]\nagent_id = "from-file"\nfactory_id = "f9"\n')
    monkeypatch.setenv("ROBODENSITY_EDGE__AGENT_ID", "from-env")
    s = load_settings(path)
    assert (s.edge.agent_id, s.edge.factory_id) == ("from-env", "f9")


def test_a_password_never_appears_in_an_error(tmp_path: Path) -> None:
    text = refusal(tmp_path, '[database]\nurl = "mysql://u:hunter2@db/x"\n')
    assert "hunter2" not in text and text.startswith("database.url: must be a postgresql:// URL")
    text = refusal(tmp_path, '[broker]\nurl = "mqtt://edge:hunter2@h:1883"\n')
    assert "hunter2" not in text and 'got "mqtt://edge:***@h:1883"' in text


def test_an_unknown_key_is_an_error_not_ignored(tmp_path: Path) -> None:
    assert refusal(tmp_path, "[edge]\nagent = 'x'\n").startswith("edge.agent: is not a setting")


def test_factory_broker_credentials_are_checked_before_any_connection(tmp_path: Path) -> None:
    ca, secret, empty = tmp_path / "ca.pem", tmp_path / "pw", tmp_path / "empty"
    ca.write_text("x")
    secret.write_text("s3cret\n")
    empty.write_text("")
    src = '[[edge.mqtt_json]]\nurl = "{url}"\n{more}\n'
    plain, tls = "mqtt://10.0.0.9:1883", "mqtts://10.0.0.9:8883"
    cases = {
        f'ca_file = "{ca}"': "edge.mqtt_json[0].ca_file: is set but url mqtt://10.0.0.9:1883 has no TLS: use mqtts://",
        f'password_file = "{secret}"': "edge.mqtt_json[0].password_file: is set but username is not",
        f'username = "u"\npassword_file = "{empty}"': f"edge.mqtt_json[0].password_file: file {empty} is empty",
        f'username = "u"\npassword_file = "{tmp_path}/nope"': f"password_file: file {tmp_path}/nope does not exist",
    }
    for more, problem in cases.items():
        assert problem in refusal(tmp_path, src.format(url=plain, more=more)), more
    key = f'cert_file = "{ca}"\nkey_file = "{tmp_path}/k.pem"'
    assert f"edge.mqtt_json[0].key_file: file {tmp_path}/k.pem does not exist" in refusal(
        tmp_path, src.format(url=tls, more=key)
    )
    assert "edge.sparkplug[0].key_file: is set but cert_file is not" in refusal(
        tmp_path, f'[[edge.sparkplug]]\nurl = "{tls}"\ngroup_id = "g"\nkey_file = "{ca}"\n'
    )
    ok = MqttJsonSourceSettings(url=tls, ca_file=ca, username="u", password_file=secret)
    assert ok.read_password() == "s3cret"  # its first line, read when connecting


def test_the_time_zone_is_one_validated_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().timezone == DEFAULT_TIMEZONE == "Asia/Shanghai"
    monkeypatch.setenv("ROBODENSITY_TIMEZONE", "Asia/Urumqi")
    assert str(load_settings().zone) == "Asia/Urumqi"
    monkeypatch.setenv("ROBODENSITY_TIMEZONE", "Asia/Beijing")
    with pytest.raises(ConfigError, match=r"^environment ROBODENSITY_TIMEZONE: timezone: must be an IANA time zone"):
        load_settings()


# ------------------------------------------------------------------ the sample file


def enabled_sample() -> str:
    """The sample with every commented-out option (``# key = value``, ``# [table]``) switched on."""
    return "\n".join(
        line[2:] if (line.startswith("# ") and "=" in line.split("#")[1]) or line.startswith("# [") else line
        for line in SAMPLE.read_text().splitlines()
    )


def _strings(doc: Any) -> Iterator[tuple[str, str]]:
    """(key, value) of every string in a TOML document, at any depth."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        if isinstance(value, str):
            yield str(key), value
        else:
            yield from _strings(value)


def test_the_sample_file_loads_with_its_commented_options_enabled(tmp_path: Path) -> None:
    # The sample names files under /etc/robodensity; settings check they exist, so make them here.
    text = enabled_sample().replace("/etc/robodensity/", f"{tmp_path}/")
    for key, value in _strings(tomllib.loads(text)):
        if value.startswith(f"{tmp_path}/"):
            if key.endswith("_dir"):
                Path(value).mkdir()
                (Path(value) / "server.der").write_bytes(b"x")
            else:
                Path(value).write_text("secret\n")
    path = tmp_path / "all.toml"
    path.write_text(text)
    s = load_settings(path)
    assert s.edge.opcua[0].security_policy == "Basic256Sha256"
    assert s.edge.mqtt_json[0].state_map["RUN"].value == "EXECUTING"
    assert s.edge.mqtt_json[0].read_password() == "secret"
    assert s.edge.sparkplug[0].username == "robodensity"
    assert s.timezone == "Asia/Shanghai"


def _field_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every settings key as a path of table names and a key, walking nested sections and lists of them."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        members = [annotation, *typing.get_args(annotation)]
        section = next((m for m in members if isinstance(m, type) and issubclass(m, BaseModel)), None)
        if section is None:
            yield (*prefix, name)
        else:
            yield from _field_paths(section, (*prefix, name))


_TABLE = re.compile(r"^\[\[?([^\]]+)\]\]?\s*(#.*)?$")
_KEY = re.compile(r'^("[^"]*"|[A-Za-z0-9_-]+)\s*=')


def _sample_keys() -> dict[tuple[str, ...], bool]:
    """Each key or table of the enabled sample -> whether a comment explains it (on its line or just above)."""
    found: dict[tuple[str, ...], bool] = {}
    table: tuple[str, ...] = ()
    lines = enabled_sample().splitlines()
    for i, line in enumerate(lines):
        above = lines[i - 1] if i else ""
        explained = "#" in line.split("=", 1)[-1] or (above.startswith("# ") and "=" not in above)
        if m := _TABLE.match(line):
            table = tuple(m.group(1).split("."))
            found.setdefault(table, explained or bool(m.group(2)))
        elif m := _KEY.match(line):
            found.setdefault((*table, m.group(1).strip('"')), explained)
    return found


def test_every_setting_is_in_the_sample_file_with_a_comment() -> None:
    keys = _sample_keys()
    paths = list(_field_paths(Settings))
    assert len(paths) > 60  # the walk reached the sources' keys
    missing = [".".join(p) for p in paths if p not in keys]
    assert not missing, f"not in {SAMPLE.name}: {missing}"
    unexplained = [".".join(p) for p in paths if not keys[p]]
    assert not unexplained, f"no comment in {SAMPLE.name}: {unexplained}"
