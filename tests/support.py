"""Test helpers that build the world a test needs: organizations, tokens, users, sessions.

Organizations and machine tokens are made as the CLI makes them (there is no HTTP endpoint
for them); users and sessions go through HTTP like any client's.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
from litestar.testing import AsyncTestClient

from api.db import init_connection
from api.domain import orgs
from api.domain.context import Context, close_context, open_context
from api.http.app import create_app
from api.settings import Settings

STRONG_PASSWORD = "Str0ng!Passw0rd"
# The address the test SMTP sink (the ``sink`` fixture) refuses with 550.
REFUSED_ADDRESS = "nobody@refused.example"
_counter = itertools.count(1)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(
    response: httpx.Response, status: int, code: int, error_id: str | None, message: str
) -> None:
    """The contract's error body, exactly."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code, body
    if error_id is None:
        assert body["message"] == message, body
        assert not body.get("details"), body
    else:
        assert body["message"] == f"{message} ({error_id})", body
        detail = body["details"][0]
        assert detail["@type"] == "type.googleapis.com/zitadel.v1.ErrorDetail", body
        assert detail["id"] == error_id, body
        assert detail["message"] == message, body


@dataclass
class Human:
    user_id: str
    username: str
    password: str | None
    org_id: str
    email: str


@dataclass
class World:
    client: Any
    settings: Settings
    conn: asyncpg.Connection[Any] | None = None
    context: Context | None = None
    _orgs: list[str] = field(default_factory=list)

    async def open(self) -> None:
        self.conn = await asyncpg.connect(self.settings.database_url)
        await init_connection(self.conn)
        self.context = await open_context(self.settings, max_size=2)

    async def close(self) -> None:
        if self.context is not None:
            await close_context(self.context)
        if self.conn is not None:
            await self.conn.close()

    @property
    def ctx(self) -> Context:
        """The domain's context on the test's stores (as the CLI has it)."""
        assert self.context is not None
        return self.context

    @property
    def db(self) -> asyncpg.Connection[Any]:
        assert self.conn is not None
        return self.conn

    async def org(self, name: str | None = None) -> str:
        org = await orgs.create_org(ctx=self.ctx, name=name or f"org-{uuid.uuid4().hex[:8]}")
        self._orgs.append(org.id)
        return org.id

    async def token(self, org_id: str, role: str) -> str:
        """A machine user with ``role`` in ``org_id`` and its PAT (as ``identity token create``)."""
        _, token = await orgs.create_machine_token(ctx=self.ctx, org_id=org_id, role=role)
        return token

    async def human(
        self,
        token: str,
        org_id: str,
        *,
        password: str | None = STRONG_PASSWORD,
        change_required: bool = False,
        username: str | None = None,
        email: str | None = None,
        **extra: Any,
    ) -> Human:
        n = next(_counter)
        username = username or f"user{n}-{uuid.uuid4().hex[:6]}"
        email = email if email is not None else f"{username}@example.com"
        body: dict[str, Any] = {
            "username": username,
            "organization": {"orgId": org_id},
            "profile": {"givenName": "Given", "familyName": f"Family{n}"},
            "email": {"email": email, "isVerified": True},
            **extra,
        }
        if password is not None:
            body["password"] = {"password": password, "changeRequired": change_required}
        response = await self.client.post("/v2/users/human", json=body, headers=bearer(token))
        assert response.status_code == 201, response.text
        return Human(response.json()["userId"], username, password, org_id, email)

    async def login(self, user: Human | str, password: str | None = None) -> tuple[str, str]:
        """Log in through ``POST /v2/sessions``; return (session id, session token)."""
        login_name = user.username if isinstance(user, Human) else user
        secret = (
            password
            if password is not None
            else (user.password if isinstance(user, Human) else None)
        )
        response = await self.client.post(
            "/v2/sessions",
            json={"checks": {"user": {"loginName": login_name}, "password": {"password": secret}}},
        )
        assert response.status_code == 201, response.text
        body = response.json()
        return body["sessionId"], body["sessionToken"]

    async def try_login(self, login_name: str, password: str) -> httpx.Response:
        response: httpx.Response = await self.client.post(
            "/v2/sessions",
            json={
                "checks": {"user": {"loginName": login_name}, "password": {"password": password}}
            },
        )
        return response

    async def set_password(self, token: str, user_id: str, body: dict[str, Any]) -> httpx.Response:
        response: httpx.Response = await self.client.post(
            f"/v2/users/{user_id}/password", json=body, headers=bearer(token)
        )
        return response

    async def reset_code(self, token: str, user_id: str) -> str:
        response = await self.client.post(
            f"/v2/users/{user_id}/password_reset", json={"returnCode": {}}, headers=bearer(token)
        )
        assert response.status_code == 200, response.text
        code: str = response.json()["verificationCode"]
        return code

    async def admin(self) -> tuple[str, str]:
        """A new organization and an ORG_OWNER token for it."""
        org_id = await self.org()
        return org_id, await self.token(org_id, "ORG_OWNER")


@asynccontextmanager
async def world_with(settings: Settings) -> AsyncIterator[World]:
    """A world on its own app built from ``settings`` (real stores; no relay runs)."""
    app = create_app(settings)
    async with AsyncTestClient(app=app) as client:
        world = World(client, settings)
        await world.open()
        try:
            yield world
        finally:
            await world.close()
