"""Access control of the simulated controller and the edge's errors when it is refused.

Settings that cannot work are refused when they load, naming the key, before any I/O.
Real asyncua servers on free loopback ports. That the edge refuses a server whose
certificate is not in its ``trust_dir`` is tested in
``test_opcua.py::test_basic256sha256_sign_and_encrypt_with_a_trusted_server``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from robodensity.core.errors import ConfigError, SourceConnectError
from robodensity.core.settings import load_settings
from robodensity.edge.sources.opcua import LoginRefused, OpcUaSource, discover
from robodensity.edge.sources.opcua.subscribe import LOGIN_ATTEMPTS
from robodensity.simulators.opcua_controller import APPLICATION_URI, VENDOR_MAPPING_TOML, OpcUaController
from tests.certs import TestCA
from tests.test_opcua import ROBOTS, make_certificate, settings

PASSWORD = "correct horse battery staple"
WRONG = "Tr0ub4dor&3"
USERS = {"operator": PASSWORD}
shared_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def locked() -> AsyncIterator[OpcUaController]:
    """A controller that refuses anonymous sessions and knows one user."""
    async with OpcUaController(ROBOTS, name="locked", allow_anonymous=False, users=USERS) as ctl:
        yield ctl


def issue_client(ca: TestCA, folder: Path, name: str) -> tuple[Path, Path]:
    """A client certificate signed by ``ca``, with the edge's application URI (asyncua needs a SAN)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier("urn:robodensity:edge")]), False)
        .sign(ca.key, hashes.SHA256())
    )
    # asyncua reads a key as PEM only when its file name ends in .pem
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def refusal(**opcua: object) -> str:
    """The ConfigError of settings whose third [[edge.opcua]] server is ``opcua``."""
    local = {"url": "opc.tcp://127.0.0.1:4840"}
    with pytest.raises(ConfigError) as info:
        load_settings(edge={"opcua": [local, local, {k: str(v) for k, v in opcua.items()}]})
    return str(info.value)


def test_settings_refuse_what_cannot_work_naming_the_key(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path, "edge", "urn:robodensity:edge")
    empty, trust, plain_key = tmp_path / "empty", tmp_path / "trust", tmp_path / "edge.key"
    empty.mkdir()
    trust.mkdir()
    (trust / cert.name).write_bytes(cert.read_bytes())
    plain_key.write_bytes(key.read_bytes())
    remote = "opc.tcp://192.0.2.10:4840"
    secure = {"url": remote, "security_policy": "Basic256Sha256", "certificate": cert, "private_key": key,
              "trust_dir": trust}  # fmt: skip
    assert refusal(url=remote).startswith(
        "edge.opcua[2].security_policy: must be one of Basic256Sha256, Aes128_Sha256_RsaOaep, "
        f"Aes256_Sha256_RsaPss for the non-loopback url {remote}"
    )
    text = refusal(url=remote, security_policy="Basic256Sha256")
    for key_name in ("certificate", "private_key", "trust_dir"):
        assert f"edge.opcua[2].{key_name}: is required with security_policy Basic256Sha256" in text
    missing = tmp_path / "missing.pem"
    assert f"edge.opcua[2].certificate: file {missing} does not exist" in refusal(**(secure | {"certificate": missing}))
    assert f"edge.opcua[2].private_key: file {missing} does not exist" in refusal(**(secure | {"private_key": missing}))
    assert f"edge.opcua[2].private_key: {plain_key} holds a PEM key: name it *.pem" in refusal(
        **(secure | {"private_key": plain_key})
    )
    assert f"edge.opcua[2].trust_dir: folder {empty} holds no certificate" in refusal(**(secure | {"trust_dir": empty}))
    assert f"edge.opcua[2].trust_dir: {cert} is not a folder" in refusal(**(secure | {"trust_dir": cert}))
    assert f"edge.opcua[2].trust_dir: folder {missing} does not exist" in refusal(**(secure | {"trust_dir": missing}))
    text = refusal(url="opc.tcp://localhost:4840", password=PASSWORD)
    assert text.startswith("edge.opcua[2].password: is set but username is not")
    assert PASSWORD not in text
    assert f"edge.opcua[2].mapping_file: file {missing} does not exist" in refusal(
        url="opc.tcp://[::1]:4840", mapping_file=missing
    )
    # and what passes: loopback without security, a remote server with all of it
    settings = load_settings(edge={"opcua": [{"url": "opc.tcp://localhost:4840"}, secure]}).edge.opcua
    assert [s.security_policy for s in settings] == [None, "Basic256Sha256"]


def assert_no_password(exc: BaseException) -> None:
    for text in (str(exc), repr(exc), repr(exc.__cause__)):
        assert PASSWORD not in text and WRONG not in text


@shared_loop
async def test_an_anonymous_session_is_refused_with_an_authentication_error(locked: OpcUaController) -> None:
    with pytest.raises(SourceConnectError) as info:
        await discover(settings(locked.url))
    assert "authentication refused" in str(info.value)
    assert "anonymous" in str(info.value)
    assert "BadIdentityTokenRejected" in str(info.value)


@shared_loop
async def test_a_wrong_password_is_refused_and_the_right_one_finds_the_robots(locked: OpcUaController) -> None:
    for user, password in [("operator", WRONG), ("intruder", PASSWORD), ("operator", None)]:
        with pytest.raises(SourceConnectError) as info:
            await discover(settings(locked.url, username=user, password=password))
        assert "authentication refused" in str(info.value)
        assert f"user {user!r}" in str(info.value) and "BadUserAccessDenied" in str(info.value)
        assert_no_password(info.value)
    found = await discover(settings(locked.url, username="operator", password=PASSWORD))
    assert {(d.manufacturer, d.serial) for d in found} == {(r.manufacturer, r.serial) for r in ROBOTS}


@shared_loop
async def test_a_login_refused_again_and_again_becomes_a_config_error(locked: OpcUaController) -> None:
    source = OpcUaSource(settings(locked.url, username="operator", password=WRONG))
    for _ in range(LOGIN_ATTEMPTS - 1):
        with pytest.raises(LoginRefused):
            await source.__aenter__()  # what the agent's reader does on each retry
    with pytest.raises(ConfigError) as info:
        await source.__aenter__()
    assert f"refused {LOGIN_ATTEMPTS} times in a row, giving up" in str(info.value)
    assert "user 'operator'" in str(info.value) and "check username and password" in str(info.value)
    assert_no_password(info.value)


async def test_users_with_anonymous_allowed_still_check_passwords(tmp_path: Path) -> None:
    mapping = tmp_path / "vendor.toml"
    mapping.write_text(VENDOR_MAPPING_TOML, encoding="utf-8")
    async with OpcUaController(ROBOTS[:1], variant="vendor", users=USERS) as ctl:
        assert len(await discover(settings(ctl.url, mapping_file=mapping))) == 1
        with pytest.raises(SourceConnectError, match="authentication refused"):
            await discover(settings(ctl.url, mapping_file=mapping, username="operator", password=WRONG))
        found = await discover(settings(ctl.url, mapping_file=mapping, username="operator", password=PASSWORD))
        assert [d.serial for d in found] == [ROBOTS[0].serial]


async def test_an_untrusted_client_certificate_is_refused_and_a_trusted_one_works(tmp_path: Path) -> None:
    server_cert, server_key = make_certificate(tmp_path, "controller", APPLICATION_URI)
    edge_cert, edge_key = make_certificate(tmp_path, "edge", "urn:robodensity:edge")
    stranger_cert, stranger_key = make_certificate(tmp_path, "stranger", "urn:robodensity:edge")
    plant_ca = TestCA(tmp_path / "plant-ca", "Plant CA")
    fleet_cert, fleet_key = issue_client(plant_ca, tmp_path, "fleet-edge")
    trusted_clients, edge_trust, wrong_trust = tmp_path / "clients", tmp_path / "edge-trust", tmp_path / "wrong"
    for folder, cert in [(trusted_clients, edge_cert), (edge_trust, server_cert), (wrong_trust, stranger_cert)]:
        folder.mkdir()
        (folder / cert.name).write_bytes(cert.read_bytes())
    (trusted_clients / "plant-ca.pem").write_bytes(plant_ca.paths.cert.read_bytes())

    def secure(cert: Path, key: Path, trust: Path = edge_trust) -> dict[str, object]:
        return dict(security_policy="Basic256Sha256", security_mode="SignAndEncrypt", certificate=cert,
                    private_key=key, trust_dir=trust, username="operator", password=PASSWORD)  # fmt: skip

    async with OpcUaController(
        ROBOTS, certificate=server_cert, private_key=server_key, trusted_clients=trusted_clients, users=USERS
    ) as ctl:
        with pytest.raises(SourceConnectError) as info:
            await discover(settings(ctl.url, **secure(stranger_cert, stranger_key)))
        assert "the server refused this client's certificate" in str(info.value)
        assert "BadCertificateUntrusted" in str(info.value)
        assert_no_password(info.value)

        # the trusted client logs in with its password over the encrypted channel
        found = await discover(settings(ctl.url, **secure(edge_cert, edge_key)))
        assert {d.serial for d in found} == {r.serial for r in ROBOTS}
        # trusted through the CA that issued it, not by itself
        assert len(await discover(settings(ctl.url, **secure(fleet_cert, fleet_key)))) == len(ROBOTS)

        # the other direction (behaviour tested in test_opcua.py): only the message is checked here
        with pytest.raises(SourceConnectError, match="server's certificate is not in trust_dir"):
            await discover(settings(ctl.url, **secure(edge_cert, edge_key, trust=wrong_trust)))


def test_contradictory_access_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs users"):
        OpcUaController(ROBOTS, allow_anonymous=False)
    with pytest.raises(ValueError, match="empty user name"):
        OpcUaController(ROBOTS, users={"": "x"})
    with pytest.raises(ValueError, match="trusted_clients needs certificate"):
        OpcUaController(ROBOTS, trusted_clients=tmp_path)
    cert, key = tmp_path / "c.pem", tmp_path / "c.key"
    with pytest.raises(ValueError, match="not a folder"):
        OpcUaController(ROBOTS, certificate=cert, private_key=key, trusted_clients=tmp_path / "missing")
