"""Issue 10, item 4: nobody can spend another user's allowance, and an address's failures
are counted before the check, per IPv6 /64, for unknown login names too.

The attacks: a session of another organization sends wrong ``currentPassword``s for a victim
(403s that used to keep the victim's logins at 429); many wrong passwords sent at once that
all passed a check counting failures only afterwards; guessing login names for free; an IPv6
client rotating through the 2^64 addresses of its own network.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
from litestar.testing import transport as litestar_transport

from api.settings import Settings
from tests.rpc_support import serve
from tests.support import STRONG_PASSWORD, World, assert_error, bearer, world_with

NEW_PASSWORD = "N3w!Passw0rd-x"
running = contextmanager(serve)  # ``identity serve`` in a process of its own


def _own_prefix(make_settings: Callable[..., Settings], **overrides: Any) -> Settings:
    """Settings with a Redis prefix of the test's own: the limits below start empty."""
    return make_settings(redis_prefix=f"test-limits-{uuid.uuid4().hex[:8]}:", **overrides)


def _login_body(login_name: str, password: str) -> dict[str, Any]:
    return {"checks": {"user": {"loginName": login_name}, "password": {"password": password}}}


class _FromAddress(litestar_transport.TestClientTransport[Any]):  # type: ignore[misc]
    """The test client's transport, with the client address of the ASGI scope set."""

    def __init__(self, client: Any, ip: str) -> None:
        super().__init__(client)
        self.ip = ip

    def parse_request(self, request: httpx.Request) -> dict[str, Any]:
        scope = super().parse_request(request)
        scope["client"] = (self.ip, 40000)
        return scope


@asynccontextmanager
async def _from(world: World, ip: str) -> AsyncIterator[Any]:
    """The world's client, its requests coming from ``ip`` (the app runs in the client's
    portal, so the client itself must carry them)."""
    client = world.client
    original = client._transport
    client._transport = _FromAddress(client, ip)
    try:
        yield client
    finally:
        client._transport = original


async def test_a_refused_caller_does_not_spend_the_users_allowance(
    make_settings: Callable[..., Settings],
) -> None:
    settings = _own_prefix(make_settings, rate_verifications_per_user_per_minute=3)
    async with world_with(settings) as world:
        org_a, admin_a = await world.admin()
        victim = await world.human(admin_a, org_a)
        org_b, admin_b = await world.admin()
        intruder = await world.human(admin_b, org_b)
        _, intruder_token = await world.login(intruder)

        for _ in range(10):  # well past the victim's 3 verifications a minute
            refused = await world.set_password(
                intruder_token,
                victim.user_id,
                {"currentPassword": "Wr0ng!pass", "newPassword": {"password": NEW_PASSWORD}},
            )
            assert_error(refused, 403, 7, "AUTH-AWfge", "No matching permissions found")

        # The victim's allowance is whole: it logs in, and changes its own password.
        _, session = await world.login(victim)
        changed = await world.set_password(
            session,
            victim.user_id,
            {"currentPassword": STRONG_PASSWORD, "newPassword": {"password": NEW_PASSWORD}},
        )
        assert changed.status_code == 200, changed.text


async def test_unknown_login_names_count_against_the_address(
    make_settings: Callable[..., Settings],
) -> None:
    settings = _own_prefix(make_settings, rate_failed_verifications_per_ip_per_minute=3)
    async with world_with(settings) as world:
        org, admin = await world.admin()
        user = await world.human(admin, org)
        async with _from(world, "198.51.100.7") as guesser:
            for n in range(3):
                missing = await guesser.post("/v2/sessions", json=_login_body(f"nobody{n}", "x"))
                assert missing.status_code == 404, missing.text
            limited = await guesser.post("/v2/sessions", json=_login_body("nobody9", "x"))
            assert_error(limited, 429, 8, "LIMIT-R4te1", "Too many requests")
            assert int(limited.headers["retry-after"]) >= 1
            # Even a right password from that address waits now ...
            blocked = await guesser.post(
                "/v2/sessions", json=_login_body(user.username, STRONG_PASSWORD)
            )
            assert blocked.status_code == 429, blocked.text
        # ... while another address logs in, and a wrong name there is still a 404.
        async with _from(world, "198.51.100.8") as other:
            ok = await other.post("/v2/sessions", json=_login_body(user.username, STRONG_PASSWORD))
            assert ok.status_code == 201, ok.text
            missing = await other.post("/v2/sessions", json=_login_body("nobody", "x"))
            assert missing.status_code == 404, missing.text


async def test_ipv6_addresses_are_limited_per_64(make_settings: Callable[..., Settings]) -> None:
    settings = _own_prefix(make_settings, rate_failed_verifications_per_ip_per_minute=3)
    async with world_with(settings) as world:
        org, admin = await world.admin()
        user = await world.human(admin, org)
        # Three wrong passwords, each from a different address of one /64.
        for n in range(1, 4):
            async with _from(world, f"2001:db8:1:2::{n:x}") as client:
                wrong = await client.post("/v2/sessions", json=_login_body(user.username, "Wr0ng!"))
                assert wrong.status_code == 400, wrong.text
        async with _from(world, "2001:db8:1:2:ffff:ffff:ffff:fffe") as same_net:
            limited = await same_net.post(
                "/v2/sessions", json=_login_body(user.username, STRONG_PASSWORD)
            )
            assert_error(limited, 429, 8, "LIMIT-R4te1", "Too many requests")
        # The neighbouring /64 is someone else.
        async with _from(world, "2001:db8:1:3::1") as next_net:
            ok = await next_net.post(
                "/v2/sessions", json=_login_body(user.username, STRONG_PASSWORD)
            )
            assert ok.status_code == 201, ok.text


async def test_concurrent_wrong_passwords_cannot_outrun_the_limit(
    make_settings: Callable[..., Settings],
) -> None:
    """Twenty wrong passwords at once against a real server (the in-process test client
    serves one request at a time): only the four the address may fail reach the check."""
    settings = _own_prefix(make_settings, policy_max_password_attempts=0)
    async with world_with(settings) as world:
        org, admin = await world.admin()
        user = await world.human(admin, org)
        with running(
            settings,
            server="uvicorn",
            IDENTITY_RATE_FAILED_VERIFICATIONS_PER_IP_PER_MINUTE="4",
            IDENTITY_POLICY_MAX_PASSWORD_ATTEMPTS="0",
        ) as api:
            async with httpx.AsyncClient(base_url=api.http, timeout=30) as attacker:
                answers = await asyncio.gather(
                    *(
                        attacker.post("/v2/sessions", json=_login_body(user.username, f"Wr0ng!{n}"))
                        for n in range(20)
                    )
                )
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [400] * 4 + [429] * 16, statuses
        # Only the four admitted tries reached the password check.
        checked = await world.db.fetchval(
            "SELECT failed_password_attempts FROM users WHERE id = $1", user.user_id
        )
        assert checked == 4

        # Successful checks give their reserved failure back: many right logins from one
        # address are never limited by the failure budget.
        async with _from(world, "203.0.113.51") as legit:
            for _ in range(8):
                ok = await legit.post(
                    "/v2/sessions", json=_login_body(user.username, STRONG_PASSWORD)
                )
                assert ok.status_code == 201, ok.text


async def test_a_wrong_code_keeps_its_failure_and_a_right_one_gives_it_back(
    make_settings: Callable[..., Settings],
) -> None:
    settings = _own_prefix(make_settings, rate_failed_verifications_per_ip_per_minute=2)
    async with world_with(settings) as world:
        org, admin = await world.admin()
        for _ in range(3):  # more right codes than the failure budget: none is refused
            user = await world.human(admin, org)
            code = await world.reset_code(admin, user.user_id)
            ok = await world.set_password(
                admin,
                user.user_id,
                {"verificationCode": code, "newPassword": {"password": NEW_PASSWORD}},
            )
            assert ok.status_code == 200, ok.text
        user = await world.human(admin, org)
        await world.reset_code(admin, user.user_id)
        body = {"verificationCode": "WRONG1", "newPassword": {"password": NEW_PASSWORD}}
        for _ in range(2):
            wrong = await world.set_password(admin, user.user_id, body)
            assert wrong.status_code == 400, wrong.text
        limited = await world.client.post(
            f"/v2/users/{user.user_id}/password", json=body, headers=bearer(admin)
        )
        assert_error(limited, 429, 8, "LIMIT-R4te1", "Too many requests")


async def test_passed_proofs_give_the_address_its_failures_back(
    make_settings: Callable[..., Settings],
) -> None:
    """A change whose proof passed (a reset code, the current password) gives back the
    failure its address reserved before the check (it goes back in the round trip that
    raises the user's credentials version): an address allowed two failures a minute makes
    five changes in a row, and its failures are still whole afterwards."""
    settings = _own_prefix(make_settings, rate_failed_verifications_per_ip_per_minute=2)
    async with world_with(settings) as world:
        org, admin = await world.admin()
        user = await world.human(admin, org)
        async with _from(world, "198.51.100.20") as client:
            password = STRONG_PASSWORD
            for n in range(5):
                new = f"{NEW_PASSWORD}{n}"
                if n % 2:
                    body = {"currentPassword": password, "newPassword": {"password": new}}
                else:
                    code = await world.reset_code(admin, user.user_id)
                    body = {"verificationCode": code, "newPassword": {"password": new}}
                changed = await client.post(
                    f"/v2/users/{user.user_id}/password", json=body, headers=bearer(admin)
                )
                assert changed.status_code == 200, changed.text
                password = new
            # Both failures are left: two wrong passwords answer 400, the third is refused.
            for expected in (400, 400, 429):
                wrong = await client.post(
                    f"/v2/users/{user.user_id}/password",
                    json={"currentPassword": "Wr0ng!Passw0rd", "newPassword": {"password": "x"}},
                    headers=bearer(admin),
                )
                assert wrong.status_code == expected, wrong.text
