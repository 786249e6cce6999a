"""Reset-link URL templates: ``{{.UserID}}``, ``{{.Code}}`` and ``{{.OrgID}}`` placeholders,
as ZITADEL's ``sendLink.urlTemplate``. Checked when a reset is requested, rendered by the
worker that sends the e-mail."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from api.errors import UrlTemplateInvalid

_PLACEHOLDER = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")
_PLACEHOLDERS = frozenset({"UserID", "Code", "OrgID"})
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")


def render_url_template(template: str, *, user_id: str, code: str, org_id: str) -> str:
    values = {"UserID": user_id, "Code": code, "OrgID": org_id}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def validate_url_template(template: str) -> None:
    """Known placeholders only, and the rendered result must be a URL."""
    if any(name not in _PLACEHOLDERS for name in _PLACEHOLDER.findall(template)):
        raise UrlTemplateInvalid()
    rest = _PLACEHOLDER.sub("", template)
    if "{{" in rest or "}}" in rest or any(c.isspace() or ord(c) < 32 for c in template):
        raise UrlTemplateInvalid()
    parts = urlsplit(render_url_template(template, user_id="1", code="ABC123", org_id="2"))
    if not _SCHEME.match(parts.scheme or ""):
        raise UrlTemplateInvalid()
    if parts.scheme.lower() in ("http", "https") and not parts.hostname:
        raise UrlTemplateInvalid()
    if not (parts.netloc or parts.path):
        raise UrlTemplateInvalid()
