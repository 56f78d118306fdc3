"""Connecting to an OPC UA server: the client, security policy, certificates, trust list, login.

The settings were checked when they loaded (:class:`core.settings.OpcUaSourceSettings`):
here every library failure becomes one SourceConnectError. A session the server refuses
(anonymous login, user name or password, this client's certificate) or a server
certificate not in ``trust_dir`` says which; it names the user, never the password.
"""

from __future__ import annotations

import asyncio
import contextlib

from asyncua import Client, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import security_policies
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions

from robodensity.core.errors import SourceConnectError
from robodensity.core.settings import OpcUaSourceSettings

POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
"""The names ``security_policy`` accepts (core.settings.SecurityPolicy) -> asyncua's classes."""

_AUTH_REFUSED = frozenset(
    {
        ua.StatusCodes.BadIdentityTokenRejected,
        ua.StatusCodes.BadIdentityTokenInvalid,
        ua.StatusCodes.BadUserAccessDenied,
        ua.StatusCodes.BadUserSignatureInvalid,
    }
)


class LoginRefused(SourceConnectError):
    """The server refused this session's identity (anonymous, user name or password)."""


async def _make_client(settings: OpcUaSourceSettings) -> Client:
    client = Client(settings.url, timeout=max(4.0, settings.watchdog_s), watchdog_intervall=settings.watchdog_s)
    client.name = client.description = "RoboDensity edge agent"
    client.application_uri = "urn:robodensity:edge"
    client.session_timeout = max(60_000, int(settings.watchdog_s * 6_000))
    if settings.username is not None:
        client.set_user(settings.username)
        password = settings.read_password()
        if password is not None:
            client.set_password(password)
    if settings.security_policy is not None:
        # OpcUaSourceSettings requires all three with a policy.
        assert settings.certificate and settings.private_key and settings.trust_dir
        store = TrustStore([settings.trust_dir], [])
        await store.load()
        options = (
            CertificateValidatorOptions.TIME_RANGE
            | CertificateValidatorOptions.TRUSTED
            | CertificateValidatorOptions.PEER_SERVER
        )
        client.certificate_validator = CertificateValidator(options, store)
        await client.set_security(
            POLICIES[settings.security_policy],
            str(settings.certificate),
            str(settings.private_key),
            mode=getattr(ua.MessageSecurityMode, settings.security_mode),
        )
    return client


async def connect(settings: OpcUaSourceSettings) -> Client:
    """A connected client. Raises SourceConnectError (LoginRefused when the login was refused)."""
    try:
        client = await _make_client(settings)
        await client.connect()
    except Exception as exc:
        if _login_refused(exc):
            raise LoginRefused(_refusal(settings, exc)) from exc
        raise SourceConnectError(_refusal(settings, exc) or settings.url) from exc
    return client


def _login_refused(exc: Exception) -> bool:
    return isinstance(exc, ua.UaStatusCodeError) and exc.code in _AUTH_REFUSED


def _refusal(settings: OpcUaSourceSettings, exc: Exception) -> str | None:
    """Why the server (or this client) refused the session, for a status code that says so.

    Names the user, never the password."""
    if not isinstance(exc, ua.UaStatusCodeError):
        return None
    code = exc.code
    name = ua.StatusCode(code).name
    if code in _AUTH_REFUSED:
        who = f"user {settings.username!r}" if settings.username is not None else "an anonymous session"
        hint = "check username and password" if settings.username is not None else "the server may need a username"
        return f"{settings.url}: authentication refused by the server for {who} ({name}); {hint}"
    if name.startswith("BadCertificate") or code == ua.StatusCodes.BadSecurityChecksFailed:
        if isinstance(exc.__cause__, ServiceError):  # raised by this client's own validator
            return f"{settings.url}: the server's certificate is not in trust_dir {settings.trust_dir} ({name})"
        return f"{settings.url}: the server refused this client's certificate {settings.certificate} ({name})"
    return None


async def disconnect(client: Client) -> None:
    """Close the session; a dead server makes close_session fail after its timeout, which is fine."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5.0):
            await client.disconnect()
