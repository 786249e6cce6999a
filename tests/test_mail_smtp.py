"""E-mail over SMTP as ``IDENTITY_SMTP_URL`` says: STARTTLS and login, or implicit TLS.

Real aiosmtpd servers with a certificate for 127.0.0.1 signed by a CA made here; the client
trusts that CA only through ``smtp_ca_file``. The password is random and never printed.
"""

from __future__ import annotations

import datetime
import hmac
import ipaddress
import secrets
import smtplib
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from api.settings import Settings
from tests.workers_support import free_port
from workers import mail

USER = "mailer"
PASSWORD = secrets.token_urlsafe(16)  # never printed: tests compare it, never show it


@dataclass
class Pki:
    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA and a server certificate for 127.0.0.1 and localhost, signed by it."""
    directory = tmp_path_factory.mktemp("smtp-pki")
    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    signs_certificates = x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("identity test SMTP CA"))
        .issuer_name(_name("identity test SMTP CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(signs_certificates, critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    pki = Pki(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    pki.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


@dataclass
class Received:
    message: EmailMessage
    login: bytes | None
    tls: bool


@dataclass
class Server:
    """What the SMTP server saw: the logins it accepted and refused, the messages."""

    messages: list[Received] = field(default_factory=list)
    logins: list[bytes] = field(default_factory=list)
    refused: list[bytes] = field(default_factory=list)
    port: int = 0

    def authenticator(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        good = auth_data.login == USER.encode() and hmac.compare_digest(
            auth_data.password, PASSWORD.encode()
        )
        (self.logins if good else self.refused).append(auth_data.login)
        return AuthResult(success=good, handled=False, auth_data=auth_data if good else None)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        tls = server.transport.get_extra_info("ssl_object") is not None
        login = session.auth_data.login if session.authenticated else None
        self.messages.append(Received(parsed, login, tls))
        return "250 OK"


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    """Start an aiosmtpd server with these SMTP options on a free port; stopped at teardown."""
    controllers: list[Controller] = []

    def start(**options: Any) -> Server:
        server = Server(port=free_port())
        controller = Controller(
            server, hostname="127.0.0.1", port=server.port, authenticator=server.authenticator,
            **options,
        )  # fmt: skip
        controller.start()
        controllers.append(controller)
        return server

    yield start
    for controller in controllers:
        controller.stop()


def message(settings: Settings, to: str = "alice@example.com") -> Message:
    return mail.password_changed_message(settings=settings, to=to, name="Alice", outbox_id=7)


def starttls_server(serve: Callable[..., Server], pki: Pki) -> Server:
    return serve(tls_context=pki.server_context(), require_starttls=True, auth_require_tls=True)


def test_starttls_and_login(
    serve: Callable[..., Server], pki: Pki, make_settings: Callable[..., Settings]
) -> None:
    server = starttls_server(serve, pki)
    settings = make_settings(
        smtp_url=f"smtp://{USER}:{PASSWORD}@127.0.0.1:{server.port}?starttls=true",
        smtp_ca_file=str(pki.ca_file),
        smtp_timeout_s=5.0,
    )
    mail.send(settings, message(settings))

    [got] = server.messages
    assert got.message["To"] == "alice@example.com"
    assert got.message["X-Identity-Outbox-Id"] == "7"
    assert got.login == USER.encode() and got.tls
    assert server.logins == [USER.encode()] and server.refused == []


def test_starttls_with_a_wrong_password_is_refused(
    serve: Callable[..., Server], pki: Pki, make_settings: Callable[..., Settings]
) -> None:
    server = starttls_server(serve, pki)
    settings = make_settings(
        smtp_url=f"smtp://{USER}:wrong-password@127.0.0.1:{server.port}?starttls=true",
        smtp_ca_file=str(pki.ca_file),
        smtp_timeout_s=5.0,
    )
    with pytest.raises(smtplib.SMTPAuthenticationError):
        mail.send(settings, message(settings))
    assert server.refused and set(server.refused) == {USER.encode()}  # smtplib tries each mechanism
    assert server.messages == [] and server.logins == []


def test_without_starttls_the_server_refuses(
    serve: Callable[..., Server], pki: Pki, make_settings: Callable[..., Settings]
) -> None:
    """The URL does not ask for STARTTLS: no login over plain text, no mail."""
    server = starttls_server(serve, pki)
    for url in (
        f"smtp://{USER}:{PASSWORD}@127.0.0.1:{server.port}",
        f"smtp://{USER}:{PASSWORD}@127.0.0.1:{server.port}?starttls=false",
        f"smtp://127.0.0.1:{server.port}",  # no login either: 530 Must issue STARTTLS
    ):
        settings = make_settings(smtp_url=url, smtp_ca_file=str(pki.ca_file), smtp_timeout_s=5.0)
        with pytest.raises(smtplib.SMTPException):
            mail.send(settings, message(settings))
    assert server.messages == [] and server.logins == [] and server.refused == []


def test_an_untrusted_certificate_is_refused(
    serve: Callable[..., Server], pki: Pki, make_settings: Callable[..., Settings]
) -> None:
    """Without ``smtp_ca_file`` the private CA is not trusted: the password is never sent."""
    server = starttls_server(serve, pki)
    settings = make_settings(
        smtp_url=f"smtp://{USER}:{PASSWORD}@127.0.0.1:{server.port}?starttls=true",
        smtp_timeout_s=5.0,
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        mail.send(settings, message(settings))
    assert server.messages == [] and server.logins == [] and server.refused == []


def test_the_ca_file_is_trusted_besides_the_system_cas(
    pki: Pki, make_settings: Callable[..., Settings]
) -> None:
    system = ssl.create_default_context().get_ca_certs()  # 0 on a machine without CAs
    context = mail.tls_context(make_settings(smtp_ca_file=str(pki.ca_file)))
    ours = pki.ca_file.read_text()
    assert ours in [ssl.DER_cert_to_PEM_cert(der) for der in context.get_ca_certs(binary_form=True)]
    assert len(context.get_ca_certs()) == len(system) + 1
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_implicit_tls_and_login(
    serve: Callable[..., Server], pki: Pki, make_settings: Callable[..., Settings]
) -> None:
    # aiosmtpd 1.4 counts only STARTTLS as TLS for ``auth_require_tls``; over SMTPS the
    # whole connection is TLS already (``Received.tls`` checks it), so it must be off.
    server = serve(ssl_context=pki.server_context(), auth_require_tls=False)
    settings = make_settings(
        smtp_url=f"smtps://{USER}:{PASSWORD}@127.0.0.1:{server.port}",
        smtp_ca_file=str(pki.ca_file),
        smtp_timeout_s=5.0,
    )
    mail.send(settings, message(settings, "bob@example.com"))
    [got] = server.messages
    assert got.message["To"] == "bob@example.com"
    assert got.login == USER.encode() and got.tls

    wrong = make_settings(
        smtp_url=f"smtps://{USER}:nope@127.0.0.1:{server.port}", smtp_ca_file=str(pki.ca_file)
    )
    with pytest.raises(smtplib.SMTPAuthenticationError):
        mail.send(wrong, message(wrong))
    untrusted = make_settings(smtp_url=settings.smtp_url, smtp_timeout_s=5.0)
    with pytest.raises(ssl.SSLCertVerificationError):
        mail.send(untrusted, message(untrusted))
    assert len(server.messages) == 1 and set(server.refused) == {USER.encode()}


LINK = "https://login.example.com/ui/v2/login/password/set?userId=163840&code=K7QX2M&orgId=1"


@pytest.mark.parametrize(
    ("mail_from", "to", "modern"),
    [
        # Plain sender and address: the email package's legacy classes (no header parsing).
        ("Accounts <accounts@example.org>", "ada.lovelace+reset@example.com", False),
        # A sender that needs encoding, an address that is not plain: EmailMessage.
        ("Identität <accounts@example.org>", "ada.lovelace+reset@example.com", True),
        ("Accounts <accounts@example.org>", '"ada lovelace"@example.com', True),
    ],
)
def test_both_ways_of_building_an_email_arrive_the_same(
    serve: Callable[..., Server],
    make_settings: Callable[..., Settings],
    mail_from: str,
    to: str,
    modern: bool,
) -> None:
    """The cheap way (``mail.build_message``'s compat32 classes) and the modern one give a
    receiver the same message: headers, a text and an HTML part with the name and the link
    intact (quoted-printable for non-ASCII, 7bit otherwise)."""
    server = serve()
    settings = make_settings(smtp_url=f"smtp://127.0.0.1:{server.port}", mail_from=mail_from)
    built = mail.password_reset_message(
        settings=settings, to=to, name="Ada Lövelace", link=LINK, code="K7QX2M", outbox_id=12
    )
    assert isinstance(built, EmailMessage) is modern

    mail.send(settings, built)

    [got] = server.messages
    received = got.message
    assert str(received["From"]) == mail_from
    assert received["To"].addresses[0].addr_spec == to
    assert received["Subject"] == "Reset your password"
    assert received["Message-ID"] == mail.message_id(settings, 12)
    assert received["X-Identity-Outbox-Id"] == "12"
    assert received["Date"].datetime is not None
    assert received.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in received.iter_parts()] == [
        "text/plain",
        "text/html",
    ]
    text = received.get_body(("plain",))
    html = received.get_body(("html",))
    assert text is not None and html is not None
    assert "Hello Ada Lövelace," in text.get_content()
    assert LINK in text.get_content() and "K7QX2M" in text.get_content()
    assert LINK.replace("&", "&amp;") in html.get_content()
    assert received.get_all("MIME-Version") == ["1.0"]


def test_an_ascii_email_is_7bit() -> None:
    settings = Settings()
    built = mail.password_changed_message(
        settings=settings, to="alan@example.com", name="Alan", outbox_id=3
    )
    raw = built.as_bytes()
    assert raw.isascii()
    assert raw.count(b"Content-Transfer-Encoding: 7bit") == 2
