"""Security and access control of the simulated controller, as a locked-down controller has them.

``allow_anonymous=False`` refuses anonymous sessions (BadIdentityTokenRejected at
ActivateSession); ``users`` (username -> password) accepts only those user names and
passwords (BadUserAccessDenied otherwise); ``trusted_clients`` (a folder of client or CA
certificates, with ``certificate``/``private_key``) refuses at CreateSession a client whose
certificate is not trusted (BadCertificateUntrusted) or out of its validity period
(BadCertificateTimeInvalid). With ``certificate``/``private_key`` the server offers only
signed and encrypted endpoints (Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.internal_server import InternalServer
from asyncua.server.user_managers import UserManager

log = logging.getLogger(__name__)

SECURE_POLICIES = (
    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
)


class PasswordUsers(UserManager):
    """Sessions for the listed user names with their passwords, and anonymous ones if allowed.

    The server offers no X509 user identity token alongside this manager."""

    def __init__(self, users: Mapping[str, str], allow_anonymous: bool) -> None:
        self._users = {name: password.encode("utf-8") for name, password in users.items()}
        self._allow_anonymous = allow_anonymous

    def get_user(
        self,
        iserver: InternalServer,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        # ``certificate`` is the secure channel's client certificate, whatever the token.
        if username is None:  # an anonymous token (X509 tokens are not offered)
            return User(role=UserRole.User) if self._allow_anonymous else None
        expected = self._users.get(username)
        given = (password or "").encode("utf-8")
        if expected is None or not hmac.compare_digest(expected, given):
            log.info("refused user %r: unknown user name or wrong password", username)
            return None
        return User(role=UserRole.User, name=username)


async def client_validator(folder: Path) -> CertificateValidator:
    """Validity period and trust (directly, or through a CA in ``folder``) of client certificates."""
    if not any(p.is_file() and p.suffix.lower() in (".pem", ".der") for p in folder.iterdir()):
        raise ValueError(f"trusted_clients {folder} holds no certificate (.pem, .der)")
    store = TrustStore([folder], [])
    await store.load()
    options = CertificateValidatorOptions.TIME_RANGE | CertificateValidatorOptions.TRUSTED
    return CertificateValidator(options | CertificateValidatorOptions.PEER_CLIENT, store)


@dataclass(frozen=True)
class Access:
    """Who may connect: the controller's security settings, checked on creation."""

    certificate: Path | None = None
    private_key: Path | None = None
    allow_anonymous: bool = True
    users: Mapping[str, str] | None = None
    trusted_clients: Path | None = None

    def __post_init__(self) -> None:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("give both certificate and private_key, or neither")
        if not self.allow_anonymous and self.users is None:
            raise ValueError("allow_anonymous=False needs users, or nobody could log in")
        if self.users is not None and any(not name for name in self.users):
            raise ValueError("users must not have an empty user name")
        if self.trusted_clients is not None:
            if self.certificate is None:
                raise ValueError("trusted_clients needs certificate and private_key: an insecure client sends none")
            if not self.trusted_clients.is_dir():
                raise ValueError(f"trusted_clients {self.trusted_clients} is not a folder")

    def user_manager(self) -> UserManager | None:
        """The user manager for ``Server(user_manager=...)``; None: asyncua's (anyone)."""
        return None if self.users is None else PasswordUsers(self.users, self.allow_anonymous)

    async def apply(self, server: Server) -> None:
        """Identity tokens, security policies and the client certificate check of an initialised server."""
        if self.users is not None:
            tokens: list[type] = [ua.UserNameIdentityToken]
            if self.allow_anonymous:
                tokens.insert(0, ua.AnonymousIdentityToken)
            server.set_identity_tokens(tokens)
        if self.certificate is None or self.private_key is None:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
            return
        await server.load_certificate(str(self.certificate))
        await server.load_private_key(str(self.private_key))
        server.set_security_policy(list(SECURE_POLICIES))
        if self.trusted_clients is not None:
            server.set_certificate_validator(await client_validator(self.trusted_clients))
