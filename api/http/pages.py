"""Hosted pages for the e-mailed password-reset link (issue 12): HTML rendered by the service
(Jinja templates in ``templates/``), no script, working without JavaScript.

``/ui/password/reset``   "Set a new password": the link's ``userID``, ``code`` and ``orgID``
                         (the default ``IDENTITY_PUBLIC_URL/ui/password/reset?…`` link), the
                         organization's password rules, and a form that changes the password
                         through ``passwords.change_password`` (the code branch, the API's own
                         function); on success ``changed``
``/ui/password/forgot``  "Forgot password": a login name; the reset e-mail with the default
                         link (``passwords.request_password_reset_by_login_name``), and ``sent``
                         whether or not the account exists

As ``routes.py``: decode the form, one domain call, render. The domain's errors become
sentences in one place (``_SENTENCES``), with the status ``api.http.errors`` gives them.
Every answer under ``/ui/`` (errors and unknown paths too, through ``page_exception``) is a
page with ``PAGE_HEADERS``: a Content-Security-Policy that allows nothing but this page's
own style and forms posting to this origin, no referrer (the code is in the link), no
caching. The code read from the link goes into a hidden field, never into another link.
Forms are checked against cross-site posts by ``api.http.csrf``. None of these routes is in
the OpenAPI document: they are pages, not API operations.
"""

from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.template.config import TemplateConfig
from markupsafe import Markup

from api import wire
from api.domain import passwords, policies
from api.domain.policies import Policy
from api.errors import (
    CodeExpired,
    CodeInvalid,
    CodeNotFound,
    InvalidArgument,
    NotFound,
    OrganizationNotFound,
    PasswordBreached,
    PasswordNoLowercase,
    PasswordNoNumber,
    PasswordNoSymbol,
    PasswordNoUppercase,
    PasswordReused,
    PasswordTooCommon,
    PasswordTooShort,
    PasswordUnchanged,
    PermissionDenied,
    PolicyViolation,
    RateLimited,
    RequestInvalid,
    ServiceError,
    Unavailable,
    UserLocked,
    UserNotActive,
    UserNotFound,
)
from api.http import csrf
from api.http.errors import (
    MethodNotAllowed,
    RequestTooLarge,
    RouteNotFound,
    error_headers,
    http_service_error,
    http_status,
)
from api.http.routes import Req

PREFIX = "/ui"
TEMPLATES = Path(__file__).parent / "templates"
_CSS = (TEMPLATES / "pages.css").read_text("utf-8")
# The one inline style, allowed by its hash: no other style, script, image, font or frame.
_CSS_HASH = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}

# The longest values a form or link may carry (the contract's limits: ``api.wire``).
_MAX_ID = 200
_MAX_CODE = 20
_MAX_LOGIN_NAME = 500


def is_page(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined
    )
    return TemplateConfig(instance=JinjaTemplateEngine(engine_instance=environment))


# --- the pages' own errors (what only a form has) -----------------------------------------


class FormRefused(PermissionDenied):
    """No form token for this browser's cookie, a stale one, or a cross-site post."""

    default_message = "form refused"


class LinkIncomplete(InvalidArgument):
    default_message = "the link lacks its user or code"


class PasswordMissing(InvalidArgument):
    default_message = "no new password"


class PasswordsDiffer(InvalidArgument):
    default_message = "the two passwords differ"


class LoginNameMissing(InvalidArgument):
    default_message = "no login name"


class LoginNameTooLong(InvalidArgument):
    default_message = "login name too long"


# --- errors in plain words: the one table ---------------------------------------------------

_NEW_LINK = "Ask for a new link below."
_SENTENCES: dict[type[ServiceError], str] = {
    CodeInvalid: "The code in this link is not correct. Open the link from the most recent "
    "e-mail, or ask for a new one.",
    CodeExpired: f"This link has expired. {_NEW_LINK}",
    CodeNotFound: "This link can no longer be used: it was used already, a newer link "
    f"replaced it, or it was tried too many times. {_NEW_LINK}",
    UserNotFound: f"This link is not valid. {_NEW_LINK}",
    OrganizationNotFound: f"This link is not valid. {_NEW_LINK}",
    LinkIncomplete: "This link is incomplete. Open the whole link from the e-mail (some mail "
    f"programs break long links), or ask for a new one. {_NEW_LINK}",
    UserLocked: "This account is locked. Contact your administrator.",
    UserNotActive: "This account is not active. Contact your administrator.",
    PasswordTooShort: "The password is too short: use at least {min_length} characters.",
    PasswordNoLowercase: "The password needs a lower-case letter (a to z).",
    PasswordNoUppercase: "The password needs an upper-case letter (A to Z).",
    PasswordNoNumber: "The password needs a number (0 to 9).",
    PasswordNoSymbol: "The password needs a symbol: a character that is not a letter or a "
    "digit, such as ! or #.",
    PasswordTooCommon: "This password is too common and easy to guess. Choose another one.",
    PasswordBreached: "This password has appeared in a data breach. Choose another one.",
    PasswordReused: "You have used this password before. Choose one you have not used.",
    PasswordUnchanged: "The new password must differ from the current one.",
    PasswordMissing: "Enter a new password.",
    PasswordsDiffer: "The two passwords do not match. Type the same password twice.",
    RequestInvalid: "This password cannot be used: use 1 to 200 characters, without control "
    "characters.",
    LoginNameMissing: "Enter your login name.",
    LoginNameTooLong: "This is longer than any login name. Check it and try again.",
    FormRefused: "This form has expired or was not sent from this site. Check it and send "
    "it again.",
    RateLimited: "Too many attempts. Wait {wait} and try again.",
    RouteNotFound: "There is no page at this address.",
    MethodNotAllowed: "This page cannot be used that way.",
    RequestTooLarge: "The form was too large.",
    Unavailable: "The service is busy right now. Try again in a moment.",
    ServiceError: "Something went wrong on our side. Try again later.",
}
# Errors about what was typed into a field: shown beside it (else at the top of the form).
_FIELD_ERRORS: dict[type[ServiceError], str] = {
    PolicyViolation: "password",
    PasswordUnchanged: "password",
    PasswordMissing: "password",
    PasswordsDiffer: "password",
    RequestInvalid: "password",
    LoginNameMissing: "loginName",
    LoginNameTooLong: "loginName",
}


def _wait(seconds: int | None) -> str:
    minutes = math.ceil(max(1, seconds or 1) / 60)
    return "a minute" if minutes <= 1 else f"{minutes} minutes"


def sentence(error: ServiceError, policy: Policy | None = None) -> str:
    """What ``error`` means to the person at the page, in plain words (never a secret)."""
    for kind in type(error).__mro__:
        text = _SENTENCES.get(kind)
        if text is not None:
            return text.format(
                min_length=policy.min_length if policy is not None else 8,
                wait=_wait(error.retry_after),
            )
    return _SENTENCES[ServiceError]


def _field_of(error: ServiceError | None) -> str:
    if error is None:
        return ""
    for kind in type(error).__mro__:
        if kind in _FIELD_ERRORS:
            return _FIELD_ERRORS[kind]
    return ""


@dataclass(frozen=True)
class Rule:
    text: str
    unmet: bool = False


def rules(policy: Policy, failed: ServiceError | None = None) -> list[Rule]:
    """The policy's rules as the page lists them (the one that ``failed`` marked)."""
    listed: list[tuple[str, type[ServiceError] | None]] = [
        (f"At least {policy.min_length} characters", PasswordTooShort)
    ]
    if policy.has_lowercase:
        listed.append(("A lower-case letter (a to z)", PasswordNoLowercase))
    if policy.has_uppercase:
        listed.append(("An upper-case letter (A to Z)", PasswordNoUppercase))
    if policy.has_number:
        listed.append(("A number (0 to 9)", PasswordNoNumber))
    if policy.has_symbol:
        listed.append(("A symbol: a character that is not a letter or a digit", PasswordNoSymbol))
    if policy.blocklist:
        listed.append(("Not a commonly used password", PasswordTooCommon))
    if policy.history > 1:
        listed.append((f"Not one of your last {policy.history} passwords", PasswordReused))
    elif policy.history == 1:
        listed.append(("Not your current password", PasswordReused))
    return [Rule(text, failed is not None and type(failed) is kind) for text, kind in listed]


# --- rendering -----------------------------------------------------------------------------


def _secure(request: Request[Any, Any, Any]) -> bool:
    settings = request.app.state.ctx.settings
    return request.url.scheme == "https" or settings.public_url.startswith("https://")


def _form_cookie(request: Request[Any, Any, Any]) -> tuple[str, Cookie]:
    """This browser's form nonce (kept if it has a good one) and the cookie that holds it."""
    secure = _secure(request)
    name = csrf.cookie_name(secure)
    nonce = request.cookies.get(name)
    if not csrf.valid_nonce(nonce):
        nonce = csrf.new_nonce()
    assert nonce is not None
    cookie = Cookie(
        key=name,
        value=nonce,
        max_age=csrf.MAX_AGE_S,
        path="/" if secure else PREFIX + "/",
        secure=secure,
        httponly=True,
        samesite="strict",
    )
    return nonce, cookie


def _render(
    request: Request[Any, Any, Any],
    name: str,
    title: str,
    *,
    error: ServiceError | None = None,
    policy: Policy | None = None,
    form: str | None = None,
    at_field: bool = True,
    **values: Any,
) -> Template:
    """A page (``form``: with a form token for that purpose and the cookie it is bound to;
    ``at_field``: an error about a field shown beside it, else at the top)."""
    context: dict[str, Any] = {
        "title": title,
        "css": Markup(_CSS),  # noqa: S704 (our own file; its hash is in the CSP)
        "error": sentence(error, policy) if error is not None else "",
        "error_field": _field_of(error) if at_field else "",
        **values,
    }
    cookies = []
    if form is not None:
        nonce, cookie = _form_cookie(request)
        context["form_token"] = csrf.token(request.app.state.ctx.settings.secret_key, nonce, form)
        cookies.append(cookie)
    headers = dict(PAGE_HEADERS)
    if error is not None:
        headers.update(error_headers(error))
    return Template(
        template_name=name,
        context=context,
        status_code=http_status(error) if error is not None else 200,
        headers=headers,
        cookies=cookies,
        media_type="text/html",
    )


def _problem(
    request: Request[Any, Any, Any], error: ServiceError, *, about_link: bool = False
) -> Template:
    titles = {
        RouteNotFound: "Page not found",
        LinkIncomplete: "This link is incomplete",
        FormRefused: "Form not accepted",
    }
    title = titles.get(type(error))
    if title is None:
        title = "This link cannot be used" if about_link else "Something went wrong"
        if isinstance(error, RateLimited):
            title = "Too many attempts"
        elif isinstance(error, Unavailable):
            title = "The service is busy"
    return _render(
        request,
        "problem.html",
        title,
        error=error,
        at_field=False,
        link_forgot="forgot" if about_link else "",
    )


def _redirect(to: str) -> Redirect:
    # Relative: the pages work under whatever prefix a proxy serves them.
    return Redirect(path=to, status_code=303, headers=dict(PAGE_HEADERS))


def page_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Any exception under ``/ui/`` (an unknown page, a wrong method, a fault): a page, never
    the API's JSON. Unexpected ones are logged as ``api.http.errors`` logs them."""
    return _problem(request, http_service_error(exc))


# --- forms -----------------------------------------------------------------------------------


def _field(form: Any, name: str, limit: int) -> str | None:
    """A single-line text field, stripped; None when it is longer than ``limit``."""
    value = form.get(name)
    text = value.strip() if isinstance(value, str) else ""
    return None if len(text) > limit else text


def _require_form(request: Request[Any, Any, Any], form: Any, purpose: str) -> None:
    """The post came from this service's form in this browser (``api.http.csrf``)."""
    if request.headers.get("sec-fetch-site", "") == "cross-site":
        raise FormRefused()
    settings = request.app.state.ctx.settings
    nonce = request.cookies.get(csrf.cookie_name(_secure(request)))
    token = form.get("form")
    if not csrf.check(
        settings.secret_keys, nonce, purpose, token if isinstance(token, str) else None
    ):
        raise FormRefused()


@dataclass(frozen=True)
class ResetLink:
    user_id: str
    code: str
    org_id: str


def _reset_link(values: Any) -> ResetLink | None:
    """The link's values (from its query, or the form's hidden fields); None if incomplete."""
    user_id = _field(values, "userID", _MAX_ID)
    code = _field(values, "code", _MAX_CODE)
    org_id = _field(values, "orgID", _MAX_ID)
    if not user_id or not code or org_id is None:
        return None
    return ResetLink(user_id, code, org_id)


async def _policy(call: Req, org_id: str) -> Policy:
    """The rules to show: the link's organization's (the change checks the user's own)."""
    if not org_id:
        return policies.default_policy(call.ctx.settings)
    return await policies.get_policy(ctx=call.ctx, org_id=org_id)


def _reset_form(
    request: Request[Any, Any, Any],
    link: ResetLink,
    policy: Policy,
    error: ServiceError | None = None,
) -> Template:
    return _render(
        request,
        "reset.html",
        "Set a new password",
        error=error,
        policy=policy,
        form="reset",
        rules=rules(policy, error),
        user_id=link.user_id,
        code=link.code,
        org_id=link.org_id,
    )


# What is wrong with the link itself (its user, its code): answered with a page that offers a
# new link rather than the form again.
_LINK_ERRORS = (CodeInvalid, CodeExpired, CodeNotFound, NotFound)
_PAGE: dict[str, Any] = {"include_in_schema": False, "media_type": "text/html"}


@get(f"{PREFIX}/password/reset", name="page-reset", **_PAGE)
async def reset_page(request: Request[Any, Any, Any], call: Req) -> Response[Any]:
    link = _reset_link(request.query_params)
    if link is None:
        return _problem(request, LinkIncomplete(), about_link=True)
    try:
        policy = await _policy(call, link.org_id)
    except (NotFound, Unavailable) as error:
        return _problem(request, error, about_link=True)
    return _reset_form(request, link, policy)


@post(f"{PREFIX}/password/reset", name="page-reset-submit", status_code=200, **_PAGE)
async def reset_submit(request: Request[Any, Any, Any], call: Req) -> Response[Any]:
    form = await request.form()
    link = _reset_link(form)
    if link is None:
        return _problem(request, LinkIncomplete(), about_link=True)
    try:
        policy = await _policy(call, link.org_id)
    except (NotFound, Unavailable) as error:
        return _problem(request, error, about_link=True)
    try:
        _require_form(request, form, "reset")
        password, confirm = form.get("password"), form.get("confirm")
        if not isinstance(password, str) or not password:
            raise PasswordMissing()
        if password != confirm:
            raise PasswordsDiffer()
        data = wire.convert(
            {"newPassword": {"password": password}, "verificationCode": link.code},
            wire.SetPasswordRequest,
        )
        await passwords.change_password(
            ctx=call.ctx,
            principal=passwords.code_holder(link.user_id),
            user_id=link.user_id,
            new_password=data.new_password.password,
            verification_code=data.verification_code,
            client_ip=call.client_ip,
        )
    except UserNotFound:
        # As a wrong code: without a token, the page must not tell which user IDs exist.
        return _problem(request, CodeInvalid(), about_link=True)
    except _LINK_ERRORS as error:  # the form cannot help: a new link can
        return _problem(request, error, about_link=True)
    except ServiceError as error:
        return _reset_form(request, link, policy, error)
    return _redirect("changed")


@get(f"{PREFIX}/password/changed", name="page-changed", **_PAGE)
async def changed_page(request: Request[Any, Any, Any]) -> Response[Any]:
    return _render(request, "changed.html", "Your password is changed")


def _forgot_form(
    request: Request[Any, Any, Any], login_name: str = "", error: ServiceError | None = None
) -> Template:
    return _render(
        request,
        "forgot.html",
        "Forgot your password?",
        error=error,
        form="forgot",
        login_name=login_name,
    )


@get(f"{PREFIX}/password/forgot", name="page-forgot", **_PAGE)
async def forgot_page(request: Request[Any, Any, Any]) -> Response[Any]:
    return _forgot_form(request)


@post(f"{PREFIX}/password/forgot", name="page-forgot-submit", status_code=200, **_PAGE)
async def forgot_submit(request: Request[Any, Any, Any], call: Req) -> Response[Any]:
    form = await request.form()
    login_name = _field(form, "loginName", _MAX_LOGIN_NAME)
    try:
        _require_form(request, form, "forgot")
        if login_name is None:
            raise LoginNameTooLong()
        if not login_name:
            raise LoginNameMissing()
        await passwords.request_password_reset_by_login_name(
            ctx=call.ctx, login_name=login_name, client_ip=call.client_ip
        )
    except ServiceError as error:
        return _forgot_form(request, login_name or "", error)
    return _redirect("sent")


@get(f"{PREFIX}/password/sent", name="page-sent", **_PAGE)
async def sent_page(request: Request[Any, Any, Any]) -> Response[Any]:
    return _render(request, "sent.html", "Check your e-mail")


PAGES = [reset_page, reset_submit, changed_page, forgot_page, forgot_submit, sent_page]
