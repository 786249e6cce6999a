"""Reset-link URL templates: ``{{.UserID}}``, ``{{.Code}}`` and ``{{.OrgID}}`` placeholders,
as ZITADEL's ``sendLink.urlTemplate``. Checked when a reset is requested, rendered (values
URL-encoded) by the worker that sends the e-mail.

A template decides where the user's code goes, so it is an attack surface: someone holding a
stolen session could have the real user e-mailed a genuine link that hands the code to them.
Hence: ``http``/``https`` only, no user info, no placeholder before the path, and the origin
must be trusted. A caller acting on itself may use only the configured origins
(``IDENTITY_RESET_LINK_ORIGINS``, default the origin of ``IDENTITY_PUBLIC_URL``); a caller
with ``user.write`` (an administrator's application) may also use any ``https`` origin.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from urllib.parse import quote, urlsplit

from api.errors import UrlTemplateInvalid

_PLACEHOLDER = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")
_PLACEHOLDERS = frozenset({"UserID", "Code", "OrgID"})
_SCHEMES = frozenset({"http", "https"})


def render_url_template(template: str, *, user_id: str, code: str, org_id: str) -> str:
    values = {"UserID": user_id, "Code": code, "OrgID": org_id}
    return _PLACEHOLDER.sub(lambda m: quote(values[m.group(1)], safe=""), template)


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` in lower case ("" if ``url`` has none)."""
    parts = urlsplit(url.strip())
    if not parts.scheme or not parts.netloc:
        return ""
    return f"{parts.scheme}://{parts.netloc}".lower()


def validate_url_template(
    template: str, *, trusted_origins: Collection[str], any_https: bool
) -> None:
    """Known placeholders only, a well-formed ``http(s)`` URL whose origin holds no
    placeholder and no user info, and an origin the caller may send codes to: one of
    ``trusted_origins``, or (``any_https``) any ``https`` one."""
    if any(name not in _PLACEHOLDERS for name in _PLACEHOLDER.findall(template)):
        raise UrlTemplateInvalid()
    rest = _PLACEHOLDER.sub("", template)
    if "{{" in rest or "}}" in rest or any(c.isspace() or ord(c) < 32 for c in template):
        raise UrlTemplateInvalid()
    parts = urlsplit(template)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES or not parts.hostname:
        raise UrlTemplateInvalid()
    # "https://trusted.example@evil.example/" names evil.example; a placeholder in the host
    # would send the code to whoever owns the domain it makes.
    if "@" in parts.netloc or "{" in parts.netloc or "%" in parts.netloc:
        raise UrlTemplateInvalid()
    try:
        parts.port  # noqa: B018 (a bad port raises)
    except ValueError:
        raise UrlTemplateInvalid() from None
    origin = f"{scheme}://{parts.netloc.lower()}"
    if origin in {o.lower() for o in trusted_origins}:
        return
    if any_https and scheme == "https":
        return
    raise UrlTemplateInvalid()
