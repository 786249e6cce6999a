"""E-mail over SMTP, configured by one URL.

``smtp://host:port`` (plain), ``smtp://user:pass@host:587?starttls=true`` (STARTTLS and
login), ``smtps://user:pass@host:465`` (implicit TLS).
"""

from __future__ import annotations

import asyncio
import email.charset
import email.errors
import email.generator
import email.utils
import functools
import hashlib
import hmac
import io
import logging
import re
import smtplib
import ssl
from collections.abc import Callable
from email.message import EmailMessage, Message
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.policy import Compat32
from email.utils import formatdate
from html import escape
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from api.domain.notifications import (
    MESSAGE_INVALID,
    PASSWORD_CHANGED,
    PASSWORD_RESET,
    DeliverBatch,
    Notice,
)
from api.settings import Settings

log = logging.getLogger("identity.mail")


def message_id(settings: Settings, outbox_id: int) -> str:
    """The same Message-ID for every sending of one outbox row: a second copy (a worker
    killed between the SMTP server's acceptance and the mail journal, docs/DECISIONS.md) is
    the same message to mail systems that collapse duplicates. Keyed with the secret key, so
    rows of another deployment (or database) never share one."""
    digest = hmac.new(
        settings.secret_key.encode(), f"message-id:{outbox_id}".encode(), hashlib.sha256
    ).hexdigest()[:24]
    domain = settings.mail_from.rpartition("@")[2].strip(" >") or "identity.localhost"
    return f"<outbox-{outbox_id}.{digest}@{domain}>"


# A plain ASCII address, nothing a header could be split or misread by (no space, CR/LF,
# comma, quote, angle bracket, parenthesis): what the domain stores (``api.domain.emails``
# validates and turns international domains into their ASCII form).
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")


class _PlainFolding(Compat32):
    """compat32, but a header that fits on its line as it is, in printable ASCII, is written
    as it is without compat32's ``Header`` class: what compat32 writes for it too
    (``tests/test_mail_batches.py`` compares whole messages), at a fraction of the cost
    (that class took about three quarters of the time to write an e-mail out)."""

    def _as_is(self, name: str, value: object) -> str | None:
        limit = self.max_line_length
        if (
            isinstance(value, str)
            and limit
            and value.isascii()
            and value.isprintable()
            and len(name) + 2 + len(value) <= limit
        ):
            return f"{name}: {value}{self.linesep}"
        return None

    def fold(self, name: str, value: Any) -> str:
        as_is = self._as_is(name, value)
        return as_is if as_is is not None else super().fold(name, value)

    def fold_binary(self, name: str, value: Any) -> bytes:
        as_is = self._as_is(name, value)
        return as_is.encode("ascii") if as_is is not None else super().fold_binary(name, value)


PLAIN_FOLDING = _PlainFolding()
_UTF8_QP = email.charset.Charset("utf-8")
_UTF8_QP.body_encoding = email.charset.QP


def build_message(
    *, settings: Settings, to: str, subject: str, text: str, html: str, outbox_id: int
) -> Message:
    """A multipart/alternative e-mail (text, then HTML).

    Most messages take the ``email`` package's legacy (compat32) classes: the sender, the
    subject and the date are ours and plain, and the address is checked plain here, so the
    modern API's header parsing, which cost the worker about a millisecond of its ~3.5 per
    e-mail (``bench/README.md``), checks nothing more. Anything else (a non-ASCII sender, an
    address that is not plain) takes ``EmailMessage``, which encodes what needs encoding and
    refuses what cannot be a header (``ValueError``: the row's ``message-invalid``)."""
    headers = (
        ("From", settings.mail_from),
        ("To", to),
        ("Subject", subject),
        ("Date", formatdate(usegmt=True)),  # RFC 5322 requires it; spam filters check
        ("Message-ID", message_id(settings, outbox_id)),
        ("X-Identity-Outbox-Id", str(outbox_id)),
    )
    plain_headers = _plain_header(settings.mail_from) and _plain_header(subject)
    if plain_headers and _PLAIN_ADDRESS.fullmatch(to):
        plain = MIMEMultipart("alternative", policy=PLAIN_FOLDING)
        for name, value in headers:
            plain[name] = value
        for body, subtype in ((text, "plain"), (html, "html")):
            part = MIMENonMultipart("text", subtype, policy=PLAIN_FOLDING)
            part.set_payload(body, _body_charset(body))
            del part["MIME-Version"]  # once, on the message
            plain.attach(part)
        return plain
    message = EmailMessage()
    for name, value in headers:
        message[name] = value
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


@functools.lru_cache(maxsize=8)
def _plain_header(value: str) -> bool:
    return value.isascii() and value.isprintable() and "\r" not in value and "\n" not in value


def _body_charset(body: str) -> str | email.charset.Charset:
    """7bit for ASCII text with SMTP-sized lines, else quoted-printable UTF-8 (readable, and
    safe through any relay)."""
    if body.isascii() and all(len(line) <= 998 for line in body.splitlines()):
        return "us-ascii"
    return _UTF8_QP


def password_changed_message(*, settings: Settings, to: str, name: str, outbox_id: int) -> Message:
    text = (
        f"Hello {name},\n\nthe password of your account was changed.\n"
        "If you did not change it, reset your password now and contact your administrator.\n"
    )
    html = (
        f"<p>Hello {escape(name)},</p><p>the password of your account was changed.</p>"
        "<p>If you did not change it, reset your password now and contact your "
        "administrator.</p>"
    )
    return build_message(
        settings=settings,
        to=to,
        subject="Your password was changed",
        text=text,
        html=html,
        outbox_id=outbox_id,
    )


def password_reset_message(
    *, settings: Settings, to: str, name: str, link: str, code: str, outbox_id: int
) -> Message:
    text = (
        f"Hello {name},\n\nsomeone asked to reset the password of your account.\n"
        f"Open this link to choose a new password:\n\n{link}\n\n"
        f"Or enter this code: {code}\n\nIf it was not you, ignore this e-mail.\n"
    )
    html = (
        f"<p>Hello {escape(name)},</p><p>someone asked to reset the password of your account."
        f'</p><p><a href="{escape(link)}">Choose a new password</a></p>'
        f"<p>Or enter this code: <b>{escape(code)}</b></p>"
        "<p>If it was not you, ignore this e-mail.</p>"
    )
    return build_message(
        settings=settings,
        to=to,
        subject="Reset your password",
        text=text,
        html=html,
        outbox_id=outbox_id,
    )


def compose(settings: Settings, notice: Notice) -> Message:
    """The e-mail that says what ``notice`` asks for."""
    if notice.kind == PASSWORD_CHANGED:
        return password_changed_message(
            settings=settings, to=notice.to, name=notice.name, outbox_id=notice.outbox_id
        )
    if notice.kind == PASSWORD_RESET:
        return password_reset_message(
            settings=settings,
            to=notice.to,
            name=notice.name,
            link=notice.link,
            code=notice.code,
            outbox_id=notice.outbox_id,
        )
    raise ValueError(f"no e-mail for a {notice.kind!r} notice")


def tls_context(settings: Settings) -> ssl.SSLContext:
    """The system's CAs, plus ``smtp_ca_file`` when set (e.g. a private CA of the relay).

    Not ``create_default_context(cafile=...)``: that trusts the file *instead of* the system."""
    context = ssl.create_default_context()
    if settings.smtp_ca_file:
        context.load_verify_locations(cafile=settings.smtp_ca_file)
    return context


# A refusal the server gives for this message or recipient, not for the connection: the
# rest of a batch goes on (5xx: the address or content will not do; 4xx: try again later).
_MESSAGE_REFUSALS = (
    smtplib.SMTPRecipientsRefused,
    smtplib.SMTPDataError,
    smtplib.SMTPSenderRefused,
)
# A message that cannot be written out (a header that would not survive serialization): it
# fails before anything of it is sent, the same way at every attempt.
_UNWRITABLE = (ValueError, email.errors.MessageError)


def send_batch(
    settings: Settings,
    messages: list[Message],
    on_accepted: Callable[[int], None] | None = None,
) -> list[str | None]:
    """Send ``messages`` over one SMTP connection; for each, None (accepted) or why it was
    refused (``smtp-550``, or ``message-invalid`` for one that cannot be written out). A
    failure of the connection itself raises; the messages accepted before it were reported
    to ``on_accepted`` (with their index), each before the next was sent."""
    outcomes: list[str | None] = []
    with _connect(settings) as client:
        client.ehlo_or_helo_if_needed()
        if client.has_extn("pipelining"):
            return _send_pipelined(client, messages, on_accepted)
        for index, message in enumerate(messages):
            try:
                client.send_message(message)
                outcomes.append(None)
                if on_accepted is not None:
                    on_accepted(index)
            except _MESSAGE_REFUSALS as exc:
                outcomes.append(f"smtp-{_reply_code(exc)}")
                client.rset()
            except _UNWRITABLE as exc:  # raised before the message's MAIL FROM
                _log_invalid(message["X-Identity-Outbox-Id"], exc)
                outcomes.append(MESSAGE_INVALID)
    return outcomes


class _Envelope(NamedTuple):
    position: int  # in the batch
    commands: bytes  # MAIL, RCPT and DATA
    content: bytes  # dot-stuffed, with the end-of-data line


def _envelope(index: int, message: Message) -> _Envelope:
    """What ``smtplib.SMTP.send_message`` would send for ``message`` (the sender from From,
    the recipients from To and Cc, the message flattened with CRLF, dots doubled); a message
    that cannot be written out raises (``_UNWRITABLE``)."""
    sender = _addresses(message["From"])[0]
    recipients = [a for f in (message["To"], message["Cc"]) if f is not None for a in _addresses(f)]
    if not recipients:
        raise ValueError("no recipient")
    with io.BytesIO() as flat:
        email.generator.BytesGenerator(flat).flatten(message, linesep="\r\n")
        content = re.sub(rb"(?m)^\.", b"..", flat.getvalue())
    if not content.endswith(b"\r\n"):
        content += b"\r\n"
    commands = [f"MAIL FROM:{smtplib.quoteaddr(sender)}"]
    commands += [f"RCPT TO:{smtplib.quoteaddr(r)}" for r in recipients]
    commands.append("DATA")
    # ASCII only (UnicodeEncodeError is a ValueError): an address that needs SMTPUTF8 is not
    # one ``api.domain.emails`` stores.
    return _Envelope(index, ("\r\n".join(commands) + "\r\n").encode("ascii"), content + b".\r\n")


@functools.lru_cache(maxsize=16)
def _parsed_addresses(field: str) -> tuple[str, ...]:
    return tuple(address for _, address in email.utils.getaddresses([field]))


def _addresses(field: object) -> tuple[str, ...]:
    """The addresses of a From, To or Cc field, as ``smtplib`` reads them; a plain address
    (every To of ours) is itself, a sender (always the same one) parsed once."""
    value = str(field)
    if _PLAIN_ADDRESS.fullmatch(value):
        return (value,)
    return _parsed_addresses(value)


def _send_pipelined(
    client: smtplib.SMTP,
    messages: list[Message],
    on_accepted: Callable[[int], None] | None,
) -> list[str | None]:
    """``send_batch`` with PIPELINING (RFC 2920), which the server advertised: a message's
    MAIL, RCPT and DATA go out in one write, after the previous message's content, so a
    message costs one round trip where ``smtplib`` makes four (each a wake-up of both sides).
    The replies are read in order; the content of a message goes out only once its DATA was
    answered 354, after the previous message's acceptance was reported to ``on_accepted``.
    ``smtplib`` has no pipelining, nor has any maintained Python SMTP client; this uses its
    public ``send`` and ``getreply``."""
    outcomes: list[str | None] = [None] * len(messages)
    envelopes: list[_Envelope] = []
    for index, message in enumerate(messages):
        try:
            envelopes.append(_envelope(index, message))
        except _UNWRITABLE as exc:  # before anything of it is sent, as without pipelining
            _log_invalid(message["X-Identity-Outbox-Id"], exc)
            outcomes[index] = MESSAGE_INVALID
    # What goes out ahead of the next envelope, and the reply it will get: the previous
    # message's content (its acceptance), or RSET after a refused envelope.
    ahead = b""
    content_of: int | None = None
    for envelope in [*envelopes, None]:
        client.send(ahead + (envelope.commands if envelope is not None else b""))
        if content_of is not None:
            code, _ = _reply(client)
            if code == 250:
                if on_accepted is not None:
                    on_accepted(content_of)
            else:
                outcomes[content_of] = f"smtp-{code}"
        elif ahead:  # RSET (or a bare end of data) after a refusal: its reply only
            _reply(client)
        ahead, content_of = b"", None
        if envelope is None:
            break
        mail, *recipients, data = [
            _reply(client)[0] for _ in range(envelope.commands.count(b"\r\n"))
        ]
        # What smtplib takes for success: 250 to MAIL, 250 or 251 to each RCPT, 354 to DATA.
        refused = [code for code in (mail,) if code != 250]
        refused += [code for code in recipients if code not in (250, 251)]
        if data == 354 and not refused:
            ahead, content_of = envelope.content, envelope.position
            continue
        outcomes[envelope.position] = f"smtp-{(refused or [data])[0]}"
        # A server that took DATA anyway gets an empty end of data; else the transaction
        # is reset for the next message.
        ahead = b".\r\n" if data == 354 else b"RSET\r\n"
    return outcomes


def _reply(client: smtplib.SMTP) -> tuple[int, bytes]:
    """The next reply; 421 (the server is closing the connection) fails the connection, as
    ``smtplib`` does."""
    code, text = client.getreply()
    if code == 421:
        client.close()
        raise smtplib.SMTPServerDisconnected("the server closed the connection (421)")
    return code, text


def _log_invalid(outbox_id: object, exc: BaseException) -> None:
    # The exception's type only: its text may quote the row's data.
    log.warning("outbox row %s: no e-mail can be built (%s)", outbox_id, type(exc).__name__)


def _reply_code(exc: smtplib.SMTPException) -> int:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return min((code for code, _ in exc.recipients.values()), default=550)
    return int(getattr(exc, "smtp_code", 550))


def deliverer(settings: Settings) -> DeliverBatch:
    """The domain's ``DeliverBatch`` over SMTP: compose, then send on one connection (SMTP
    blocks: off the event loop). A notice no e-mail can be composed for (e.g. a header with a
    CR/LF from a row stored before addresses were validated) is ``MESSAGE_INVALID``: the
    domain marks its row dead; the rest of the batch goes on."""

    async def deliver(
        notices: list[Notice], on_accepted: Callable[[int], None] | None = None
    ) -> list[str | None]:
        outcomes: list[str | None] = [MESSAGE_INVALID] * len(notices)
        composed: list[tuple[int, Message]] = []
        for index, notice in enumerate(notices):
            try:
                composed.append((index, compose(settings, notice)))
            except _UNWRITABLE as exc:
                _log_invalid(notice.outbox_id, exc)
        if settings.mail_task_delay_s > 0:  # fault tests kill a worker before it sends
            await asyncio.sleep(settings.mail_task_delay_s)
        if composed:
            ids = [notices[index].outbox_id for index, _ in composed]

            def accepted(position: int) -> None:
                if on_accepted is not None:
                    on_accepted(ids[position])

            messages = [m for _, m in composed]
            sent = await asyncio.to_thread(send_batch, settings, messages, accepted)
            for (index, _), outcome in zip(composed, sent, strict=True):
                outcomes[index] = outcome
        return outcomes

    return deliver


def send(settings: Settings, message: Message) -> None:
    with _connect(settings) as client:
        client.send_message(message)


def _connect(settings: Settings) -> smtplib.SMTP:
    url = urlsplit(settings.smtp_url)
    options = {k: v[-1].lower() for k, v in parse_qs(url.query).items()}
    host = url.hostname or "127.0.0.1"
    timeout = settings.smtp_timeout_s
    client: smtplib.SMTP
    if url.scheme == "smtps":
        client = smtplib.SMTP_SSL(
            host, url.port or 465, timeout=timeout, context=tls_context(settings)
        )
    else:
        client = smtplib.SMTP(host, url.port or 25, timeout=timeout)
    try:
        if url.scheme != "smtps" and options.get("starttls") in ("true", "1", "yes"):
            client.starttls(context=tls_context(settings))
        if url.username:
            client.login(unquote(url.username), unquote(url.password or ""))
    except BaseException:
        client.close()
        raise
    return client
