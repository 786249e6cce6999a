"""E-mail addresses: the one rule for the addresses the service stores and the ones it mails.

An address is one mailbox, ``local@domain``, checked by ``email-validator`` (syntax only, no
DNS): no display name, no quoted local part, no IP literal, an ASCII local part (as ZITADEL's
rule; a domain may be internationalized), and none of the characters that would make it
more than one address or more than one header line (``,``, spaces, CR, LF). ``a@x, evil@y``
is refused, so is ``a@example.com\\r\\nBcc: evil@y``.

Special-use domains (RFC 6761) are refused as the library refuses them (``.local``,
``.invalid``, ``.onion``, ``.arpa``), except ``test`` and ``localhost`` and their
subdomains: organizations' domains are ``<name>.localhost`` in development and in the tests,
and the development SMTP sink accepts anything. ``example.com`` and friends are ordinary.

``normalize`` is what a new user's address goes through (``EmailInvalid``, a 400, when it is
refused); ``mail_address`` is what the mailer sends to: the same rule, so a row stored
before the rule existed is recognised as undeliverable instead of failing every attempt.
"""

from __future__ import annotations

import re

from email_validator import EmailNotValidError, ValidatedEmail, validate_email

from api.errors import EmailInvalid

# RFC 5321's limit on a path, which email-validator checks on the address it is given.
MAX_LENGTH = 254
# ``x.localhost`` is checked as ``x.test`` (the special-use name the library can be told to
# allow), then given its own name back: same labels, same rules.
_LOCALHOST = re.compile(r"(?i)(?<=[@.])localhost\Z")


def _validated(address: str) -> ValidatedEmail | None:
    if len(address) > MAX_LENGTH:
        return None
    checked, on_localhost = _LOCALHOST.subn("test", address)
    try:
        result = validate_email(
            checked,
            check_deliverability=False,  # no DNS: syntax only
            test_environment=True,  # "test" and "*.test" (and so "localhost", see above)
            allow_smtputf8=False,
            allow_display_name=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_empty_local=False,
        )
    except EmailNotValidError:
        return None
    if on_localhost:
        for name in ("normalized", "ascii_email", "domain", "ascii_domain"):
            value = getattr(result, name)
            if value is not None:
                setattr(result, name, value[: -len("test")] + "localhost")
    return result


def normalize(address: str) -> str:
    """The address as it is stored (domain in lower case, Unicode NFC), or ``EmailInvalid``."""
    result = _validated(address)
    if result is None:
        raise EmailInvalid()
    normalized: str = result.normalized
    return normalized


def mail_address(address: str) -> str | None:
    """The address to put in ``To`` and ``RCPT TO`` (an internationalized domain in its ASCII
    form, so no SMTPUTF8 is needed), or None when no e-mail can ever be sent to it."""
    result = _validated(address)
    if result is None or result.ascii_email is None:
        return None
    ascii_email: str = result.ascii_email
    return ascii_email
