"""Issue 12: the hosted reset pages (``api.http.pages``) over HTTP, in process.

The "set a new password" page of the e-mailed link and the "forgot password" page: their
security headers, the rules they show, the domain's errors in plain words, the same answer
for a login name that exists and one that does not, the limits, the refusal of a forged post
(a page, never a 5xx) and friendly pages for broken links and unknown paths. The browser
test (``tests/test_reset_pages_browser.py``) runs the same pages in Chromium end to end.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from html import unescape
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from api.http import pages
from api.settings import Settings
from tests.change_password_support import expire_code
from tests.support import STRONG_PASSWORD, Human, World, bearer, world_with

NEW_PASSWORD = "Fresh!Passw0rd-42"


@pytest.fixture
async def pworld(make_settings: Callable[..., Settings]) -> AsyncIterator[World]:
    """A world with Redis keys of its own, so that one test's limits never touch another's
    (the test client's address is the same in every test)."""
    async with world_with(_isolated(make_settings)) as w:
        yield w


def _isolated(make_settings: Callable[..., Settings], **overrides: Any) -> Settings:
    base = make_settings()
    return make_settings(
        redis_prefix=f"{base.redis_prefix}pages-{uuid.uuid4().hex[:8]}:", **overrides
    )


async def _user(world: World, **kwargs: Any) -> tuple[str, Human, str]:
    org_id, admin = await world.admin()
    user = await world.human(admin, org_id, **kwargs)
    return admin, user, org_id


def _link(user: Human, code: str) -> str:
    return "/ui/password/reset?" + urlencode(
        {"userID": user.user_id, "code": code, "orgID": user.org_id}
    )


def _hidden(html: str, name: str) -> str:
    match = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)">', html)
    assert match, html
    return unescape(match.group(1))


def _text(html: str) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


def assert_headers(response: httpx.Response) -> None:
    """The strict headers of every answer under ``/ui/``."""
    csp = response.headers["content-security-policy"]
    for directive in (
        "default-src 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ):
        assert directive in csp, csp
    assert re.search(r"style-src 'sha256-[A-Za-z0-9+/=]+'", csp), csp
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"


def assert_page(response: httpx.Response, status: int) -> str:
    """An HTML page with the strict headers, whatever its status."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html"), response.headers
    assert_headers(response)
    html = response.text
    assert '<html lang="en">' in html
    assert "<script" not in html
    assert not re.findall(r'(?:src|href)="(?:https?:)?//', html), "nothing from elsewhere"
    return html


async def _submit_reset(
    world: World, link: str, password: str, confirm: str | None = None
) -> httpx.Response:
    page = await world.client.get(link)
    html = assert_page(page, 200)
    form = {name: _hidden(html, name) for name in ("form", "userID", "code", "orgID")} | {
        "password": password,
        "confirm": password if confirm is None else confirm,
    }
    response: httpx.Response = await world.client.post(
        "/ui/password/reset", data=form, follow_redirects=False
    )
    return response


async def test_the_link_shows_the_rules_with_strict_headers_and_hides_the_code(
    pworld: World,
) -> None:
    admin, user, _ = await _user(pworld)
    code = await pworld.reset_code(admin, user.user_id)
    response = await pworld.client.get(_link(user, code))
    html = assert_page(response, 200)
    text = _text(html)
    assert "Set a new password" in text
    for rule in (
        "At least 8 characters",
        "A lower-case letter",
        "An upper-case letter",
        "A number",
        "A symbol",
        "Not a commonly used password",
    ):
        assert rule in text, text
    # The code travels on in a hidden field only: in no link, and the form posts to a path
    # without a query.
    assert _hidden(html, "code") == code
    assert code not in " ".join(re.findall(r'(?:href|action)="([^"]*)"', html))
    assert 'action="reset"' in html
    # Accessible: labels for the fields, the rules linked to the password field.
    assert '<label for="password">' in html and 'id="password"' in html
    assert 'aria-describedby="rules"' in html
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui/" in cookie


async def test_the_rules_are_the_organizations(pworld: World) -> None:
    admin, user, org_id = await _user(pworld)
    from api.domain import policies

    await policies.set_policy(
        ctx=pworld.ctx, org_id=org_id, updates={"min_length": 12, "has_symbol": False, "history": 3}
    )
    code = await pworld.reset_code(admin, user.user_id)
    text = _text(assert_page(await pworld.client.get(_link(user, code)), 200))
    assert "At least 12 characters" in text
    assert "A symbol" not in text
    assert "Not one of your last 3 passwords" in text


async def test_a_weak_password_is_refused_in_plain_words_then_a_strong_one_is_set(
    pworld: World,
) -> None:
    admin, user, _ = await _user(pworld)
    code = await pworld.reset_code(admin, user.user_id)
    link = _link(user, code)

    weak = await _submit_reset(pworld, link, "Short1!")
    html = assert_page(weak, 400)
    assert "The password is too short: use at least 8 characters." in _text(html)
    assert 'aria-invalid="true"' in html
    assert 'aria-describedby="password-error rules"' in html
    assert re.search(r'role="alert" id="password-error"', html)
    assert "(not met)" in html
    assert "Short1!" not in html  # a typed password is never sent back

    no_symbol = await _submit_reset(pworld, link, "Longenough12")
    assert "The password needs a symbol" in _text(assert_page(no_symbol, 400))
    differ = await _submit_reset(pworld, link, NEW_PASSWORD, confirm=NEW_PASSWORD + "x")
    assert "The two passwords do not match" in _text(assert_page(differ, 400))
    common = await _submit_reset(pworld, link, "Password1!")
    assert "too common" in _text(assert_page(common, 400))

    # A weak password spends neither the code nor a try: the same link works.
    done = await _submit_reset(pworld, link, NEW_PASSWORD)
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "changed"
    assert_headers(done)
    changed = await pworld.client.get("/ui/password/changed")
    assert "Your new password is set" in _text(assert_page(changed, 200))
    assert (await pworld.try_login(user.username, NEW_PASSWORD)).status_code == 201
    assert (await pworld.try_login(user.username, STRONG_PASSWORD)).status_code == 400

    # The link is spent.
    again = await _submit_reset(pworld, link, "Another!Passw0rd")
    assert "can no longer be used" in _text(assert_page(again, 400))


async def test_wrong_and_expired_codes_say_so(pworld: World, settings: Settings) -> None:
    admin, user, _ = await _user(pworld)
    code = await pworld.reset_code(admin, user.user_id)
    wrong = "ZZZZZZ" if code != "ZZZZZZ" else "YYYYYY"
    response = await _submit_reset(pworld, _link(user, wrong), NEW_PASSWORD)
    text = _text(assert_page(response, 400))
    assert "The code in this link is not correct" in text
    assert 'href="forgot"' in response.text

    await expire_code(pworld.settings, user.user_id)
    expired = await _submit_reset(pworld, _link(user, code), NEW_PASSWORD)
    assert "This link has expired. Ask for a new link below." in _text(assert_page(expired, 400))
    assert (await pworld.try_login(user.username, STRONG_PASSWORD)).status_code == 201


async def test_too_many_tries_are_a_rate_limit_page(make_settings: Callable[..., Settings]) -> None:
    settings = _isolated(make_settings, rate_verifications_per_user_per_minute=2)
    async with world_with(settings) as world:
        admin, user, _ = await _user(world)
        code = await world.reset_code(admin, user.user_id)
        for _ in range(2):
            await _submit_reset(world, _link(user, "ZZZZZ9"), NEW_PASSWORD)
        limited = await _submit_reset(world, _link(user, code), NEW_PASSWORD)
        assert "Too many attempts. Wait a minute and try again." in _text(assert_page(limited, 429))
        assert int(limited.headers["retry-after"]) >= 1


async def test_a_forged_post_is_refused_with_a_page(pworld: World) -> None:
    admin, user, _ = await _user(pworld)
    code = await pworld.reset_code(admin, user.user_id)
    fields = {
        "userID": user.user_id,
        "code": code,
        "orgID": user.org_id,
        "password": NEW_PASSWORD,
        "confirm": NEW_PASSWORD,
    }
    refused = "This form has expired or was not sent from this site"

    # Another site's form: no cookie, no token.
    pworld.client.cookies.clear()
    forged = await pworld.client.post("/ui/password/reset", data=fields, follow_redirects=False)
    assert refused in _text(assert_page(forged, 403))

    # A token taken from the page, but sent without the cookie of the browser it was made for.
    page = await pworld.client.get(_link(user, code))
    token = _hidden(page.text, "form")
    cookies = dict(pworld.client.cookies)
    pworld.client.cookies.clear()
    stolen = await pworld.client.post(
        "/ui/password/reset", data=fields | {"form": token}, follow_redirects=False
    )
    assert refused in _text(assert_page(stolen, 403))
    pworld.client.cookies.clear()
    for name, value in cookies.items():
        pworld.client.cookies.set(name, value, path="/ui/")

    # The right cookie and token, but a cross-site post as the browser marks it; then a
    # token of the other form; then a doctored one.
    cross = await pworld.client.post(
        "/ui/password/reset",
        data=fields | {"form": token},
        headers={"Sec-Fetch-Site": "cross-site"},
        follow_redirects=False,
    )
    assert refused in _text(assert_page(cross, 403))
    forgot_token = _hidden((await pworld.client.get("/ui/password/forgot")).text, "form")
    for bad in (forgot_token, token[:-2] + "AA", "1." + token.split(".", 1)[1], "", "x" * 500):
        other = await pworld.client.post(
            "/ui/password/reset", data=fields | {"form": bad}, follow_redirects=False
        )
        assert refused in _text(assert_page(other, 403)), bad

    # Nothing changed, and the code is still good for the real form.
    assert (await pworld.try_login(user.username, STRONG_PASSWORD)).status_code == 201
    assert (await _submit_reset(pworld, _link(user, code), NEW_PASSWORD)).status_code == 303


async def test_broken_links_and_unknown_pages_are_friendly_pages(pworld: World) -> None:
    _, user, _ = await _user(pworld)
    incomplete = "This link is incomplete"
    for query in ("", f"?userID={user.user_id}", "?code=ABCDEF", "?userID=&code=&orgID="):
        response = await pworld.client.get("/ui/password/reset" + query)
        assert incomplete in _text(assert_page(response, 400)), query
    too_long = await pworld.client.get(_link(user, "A" * 21))
    assert incomplete in _text(assert_page(too_long, 400))
    unknown_org = await pworld.client.get(
        "/ui/password/reset?" + urlencode({"userID": user.user_id, "code": "ABCDEF", "orgID": "x"})
    )
    assert "This link is not valid" in _text(assert_page(unknown_org, 404))
    # An unknown user is a wrong code: the pages tell nothing of which user IDs exist.
    nobody = await _submit_reset(
        pworld,
        "/ui/password/reset?" + urlencode({"userID": "nobody", "code": "ABCDEF"}),
        NEW_PASSWORD,
    )
    assert "The code in this link is not correct" in _text(assert_page(nobody, 400))

    nowhere = await pworld.client.get("/ui/nowhere")
    assert "There is no page at this address" in _text(assert_page(nowhere, 404))
    wrong_method = await pworld.client.put("/ui/password/reset")
    assert_page(wrong_method, 405)
    for body in (b"", b"{}", b"\xff\xfe", b"userID=a&code=b&orgID=" + b"%ZZ" * 10):
        odd = await pworld.client.post(
            "/ui/password/reset",
            content=body,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert odd.status_code < 500, (body, odd.text)
        assert 'role="alert"' in assert_page(odd, odd.status_code), body
    json_body = await pworld.client.post("/ui/password/forgot", json={"loginName": "x"})
    assert "This form has expired" in _text(assert_page(json_body, 403))
    # The API keeps its JSON errors.
    api = await pworld.client.get("/v2/nowhere")
    assert api.headers["content-type"].startswith("application/json")


async def _forgot(world: World, login_name: str) -> httpx.Response:
    page = await world.client.get("/ui/password/forgot")
    html = assert_page(page, 200)
    assert '<label for="loginName">' in html
    response: httpx.Response = await world.client.post(
        "/ui/password/forgot",
        data={"form": _hidden(html, "form"), "loginName": login_name},
        follow_redirects=False,
    )
    return response


async def _reset_rows(world: World, user_id: str) -> int:
    count: int = await world.db.fetchval(
        "SELECT count(*) FROM outbox WHERE aggregate_id = $1 AND task LIKE '%reset%'", user_id
    )
    return count


async def test_forgot_answers_the_same_whether_or_not_the_account_exists(pworld: World) -> None:
    _, user, _ = await _user(pworld)
    floor = pworld.settings.reset_request_min_duration_s
    answers = []
    for login_name in (user.username, f"nobody-{uuid.uuid4().hex[:8]}", f"{user.username}@x.y"):
        started = time.monotonic()
        response = await _forgot(pworld, login_name)
        elapsed = time.monotonic() - started
        assert elapsed >= floor, (login_name, elapsed)
        assert response.status_code == 303, response.text
        answers.append((response.headers["location"], response.content))
        assert_headers(response)
    assert len(set(answers)) == 1, answers
    sent = await pworld.client.get("/ui/password/sent")
    assert "If the login name belongs to an account" in _text(assert_page(sent, 200))
    # Only the real account got its e-mail (an outbox row with the default link).
    assert await _reset_rows(pworld, user.user_id) == 1
    row = await pworld.db.fetchrow(
        "SELECT payload FROM outbox WHERE aggregate_id = $1 AND task LIKE '%reset%'",
        user.user_id,
    )
    payload = row["payload"] if isinstance(row["payload"], dict) else json.loads(row["payload"])
    assert payload["urlTemplate"] == pworld.settings.reset_url_template


async def test_forgot_with_a_preferred_login_name_and_for_an_inactive_user(
    pworld: World,
) -> None:
    admin, user, org_id = await _user(pworld)
    domain = await pworld.db.fetchval("SELECT domain FROM organizations WHERE id = $1", org_id)
    assert (await _forgot(pworld, f"{user.username.upper()}@{domain}")).status_code == 303
    assert await _reset_rows(pworld, user.user_id) == 1
    inactive = await pworld.human(admin, org_id)
    deactivated = await pworld.client.post(
        f"/v2/users/{inactive.user_id}/deactivate", headers=bearer(admin)
    )
    assert deactivated.status_code == 200, deactivated.text
    assert (await _forgot(pworld, inactive.username)).status_code == 303
    assert await _reset_rows(pworld, inactive.user_id) == 0
    empty = await _forgot(pworld, "   ")
    assert "Enter your login name." in _text(assert_page(empty, 400))


async def test_forgot_is_limited_per_login_name_and_per_address(
    make_settings: Callable[..., Settings],
) -> None:
    settings = _isolated(
        make_settings,
        rate_reset_requests_per_login_name_per_hour=2,
        rate_reset_requests_per_ip_per_hour=4,
        reset_request_min_duration_s=0.0,
    )
    async with world_with(settings) as world:
        _, user, _ = await _user(world)
        for _ in range(2):
            assert (await _forgot(world, user.username)).status_code == 303
        limited = await _forgot(world, user.username)
        html = assert_page(limited, 429)
        assert re.search(r"Too many attempts\. Wait \d+ minutes and try again\.", _text(html))
        assert int(limited.headers["retry-after"]) > 60
        assert f'value="{user.username}"' in html  # the name stays in the field
        # An unknown name is limited the same way (the limit tells nothing of the account).
        unknown = f"nobody-{uuid.uuid4().hex[:8]}"
        assert (await _forgot(world, unknown)).status_code == 303
        assert (await _forgot(world, unknown)).status_code == 303
        # ... and the address allows four (the refused one was given back): a fifth is refused.
        assert (await _forgot(world, f"other-{uuid.uuid4().hex[:8]}")).status_code == 429
        assert await _reset_rows(world, user.user_id) == 2


async def test_pages_are_not_api_operations(pworld: World) -> None:
    document = (await pworld.client.get("/schema/openapi.json")).json()
    assert not [path for path in document["paths"] if path.startswith("/ui")]
    assert pages.is_page("/ui/password/reset") and not pages.is_page("/uix")


def test_form_tokens_are_bound_to_the_cookie_the_form_and_the_time() -> None:
    from api.http import csrf

    key, previous = "k" * 40, "p" * 40
    nonce = csrf.new_nonce()
    now = time.time()
    token = csrf.token(key, nonce, "reset", now)
    assert csrf.check([key], nonce, "reset", token, now)
    assert not csrf.check([key], csrf.new_nonce(), "reset", token, now)  # another browser
    assert not csrf.check([key], nonce, "forgot", token, now)  # another form
    assert not csrf.check([key], None, "reset", token, now)
    assert not csrf.check(["other" * 8], nonce, "reset", token, now)
    assert csrf.check([key], nonce, "reset", token, now + csrf.MAX_AGE_S - 1)
    assert not csrf.check([key], nonce, "reset", token, now + csrf.MAX_AGE_S + 1)  # stale
    future = csrf.token(key, nonce, "reset", now + 3600)
    assert not csrf.check([key], nonce, "reset", future, now)
    # A key rotation keeps the forms already shown working.
    old = csrf.token(previous, nonce, "reset", now)
    assert csrf.check([key, previous], nonce, "reset", old, now)
