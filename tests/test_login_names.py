"""Login names across organizations (issue 10): a login name whose text after its last "@" is
an organization's domain resolves in that organization only, and a username may not end in
another organization's domain, so no organization can take another's login names."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from api.domain import users
from api.errors import UsernameDomainReserved
from tests.support import STRONG_PASSWORD, Human, World, assert_error, bearer

RESERVED = ("COMMAND-SFd21", "Domain is already reserved and cannot be used")
NOT_FOUND = ("COMMAND-SAF4f", "User could not be found")


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _org(world: World) -> tuple[str, str, str]:
    """A new organization: its id, its domain and an ORG_OWNER token."""
    org_id, owner = await world.admin()
    domain: str = await world.db.fetchval("SELECT domain FROM organizations WHERE id = $1", org_id)
    return org_id, domain, owner


async def _add_human(world: World, token: str, org_id: str, **fields: Any) -> httpx.Response:
    body: dict[str, Any] = {
        "organization": {"orgId": org_id},
        "profile": {"givenName": "Alice", "familyName": "Example"},
        "email": {"email": f"{_unique('mail')}@example.com", "isVerified": True},
        "password": {"password": STRONG_PASSWORD},
        **fields,
    }
    response: httpx.Response = await world.client.post(
        "/v2/users/human", json=body, headers=bearer(token)
    )
    return response


async def _session_user(world: World, login_name: str) -> str:
    """Log in with ``login_name``; the id of the user the new session belongs to (read with
    the session's own token)."""
    session_id, token = await world.login(login_name, STRONG_PASSWORD)
    response = await world.client.get(f"/v2/sessions/{session_id}", headers=bearer(token))
    assert response.status_code == 200, response.text
    user_id: str = response.json()["session"]["factors"]["user"]["id"]
    return user_id


async def _assert_no_user(world: World, login_name: str) -> None:
    response = await world.try_login(login_name, STRONG_PASSWORD)
    assert_error(response, 404, 5, *NOT_FOUND)


async def _force_username(world: World, user_id: str, username: str) -> None:
    """Give a user a username the API refuses: a row as it could be written before the fix."""
    await world.db.execute("UPDATE users SET username = $2 WHERE id = $1", user_id, username)


@pytest.mark.parametrize("case", ["same", "upper"])
async def test_username_in_another_organizations_domain_is_refused(world: World, case: str) -> None:
    org_a, _, owner_a = await _org(world)
    _, domain_b, _ = await _org(world)
    username = f"alice@{domain_b}"
    if case == "upper":
        username = username.upper()
    before = await world.db.fetchval("SELECT count(*) FROM users WHERE org_id = $1", org_a)

    response = await _add_human(world, owner_a, org_a, username=username)

    assert_error(response, 400, 3, *RESERVED)
    # Nothing was written: no user, no event.
    assert await world.db.fetchval("SELECT count(*) FROM users WHERE org_id = $1", org_a) == before
    added = await world.db.fetchval(
        "SELECT count(*) FROM events WHERE resource_owner = $1 AND event_type = 'user.human.added'",
        org_a,
    )
    assert added == 0


async def test_email_as_default_username_in_another_organizations_domain_is_refused(
    world: World,
) -> None:
    """Without a username the e-mail address is the username: the same rule applies."""
    org_a, _, owner_a = await _org(world)
    _, domain_b, _ = await _org(world)
    response = await _add_human(
        world, owner_a, org_a, email={"email": f"alice@{domain_b}", "isVerified": True}
    )
    assert_error(response, 400, 3, *RESERVED)


async def test_machine_user_in_another_organizations_domain_is_refused(world: World) -> None:
    """The rule is the insert's, for every kind of user."""
    org_a, _, _ = await _org(world)
    _, domain_b, _ = await _org(world)
    with pytest.raises(UsernameDomainReserved):
        await users.create_machine_user(
            ctx=world.ctx, org_id=org_a, role="ORG_OWNER", username=f"robot@{domain_b}"
        )


async def test_qualified_login_resolves_in_the_domains_organization_only(world: World) -> None:
    org_a, domain_a, owner_a = await _org(world)
    org_b, domain_b, owner_b = await _org(world)
    alice_b = await world.human(owner_b, org_b, username="alice")
    # A's user with B's login name as its username, as A's admin could make it before the fix.
    rogue = await world.human(owner_a, org_a, username=_unique("rogue"))
    await _force_username(world, rogue.user_id, f"alice@{domain_b}")

    assert await _session_user(world, f"alice@{domain_b}") == alice_b.user_id
    assert await _session_user(world, f"ALICE@{domain_b.upper()}") == alice_b.user_id
    # A's user still logs in by its own preferred login name ("username@A's domain").
    assert await _session_user(world, f"alice@{domain_b}@{domain_a}") == rogue.user_id


async def test_qualified_login_never_falls_back_to_another_organization(world: World) -> None:
    """B has no alice: "alice@<B's domain>" is not A's user either."""
    org_a, domain_a, owner_a = await _org(world)
    _, domain_b, _ = await _org(world)
    rogue = await world.human(owner_a, org_a, username=_unique("rogue"))
    await _force_username(world, rogue.user_id, f"alice@{domain_b}")

    await _assert_no_user(world, f"alice@{domain_b}")
    assert await _session_user(world, f"alice@{domain_b}@{domain_a}") == rogue.user_id


async def test_bare_username_in_another_organization_does_not_block_qualified_login(
    world: World,
) -> None:
    org_a, domain_a, owner_a = await _org(world)
    org_b, domain_b, owner_b = await _org(world)
    name = _unique("alice")
    alice_b = await world.human(owner_b, org_b, username=name)
    assert await _session_user(world, name) == alice_b.user_id  # unique: the bare name works

    alice_a = await world.human(owner_a, org_a, username=name)

    assert await _session_user(world, f"{name}@{domain_b}") == alice_b.user_id
    assert await _session_user(world, f"{name}@{domain_a}") == alice_a.user_id
    # The bare name is now ambiguous: not found, as before (it must be qualified).
    await _assert_no_user(world, name)


async def test_username_with_a_domain_of_no_organization_logs_in_bare_and_qualified(
    world: World,
) -> None:
    org_b, domain_b, owner_b = await _org(world)
    username = f"{_unique('alice')}@example.com"
    alice = await world.human(owner_b, org_b, username=username, email=username)

    assert await _session_user(world, username) == alice.user_id
    assert await _session_user(world, username.upper()) == alice.user_id
    assert await _session_user(world, f"{username}@{domain_b}") == alice.user_id
    read = await world.client.get(f"/v2/users/{alice.user_id}", headers=bearer(owner_b))
    assert read.json()["user"]["preferredLoginName"] == f"{username}@{domain_b}"


async def test_username_ending_in_its_own_organizations_domain(world: World) -> None:
    org_a, domain_a, owner_a = await _org(world)
    name = _unique("bob")
    username = f"{name}@{domain_a}"
    response = await _add_human(world, owner_a, org_a, username=username)
    assert response.status_code == 201, response.text
    bob_id = response.json()["userId"]

    # Resolved in A: no user "bob-…" there, so the whole name is the username.
    assert await _session_user(world, username) == bob_id
    assert await _session_user(world, f"{username}@{domain_a}") == bob_id

    # Once A also has the user "bob-…", "bob-…@<A's domain>" is that user's preferred login
    # name and wins; the other still logs in by its own preferred login name.
    plain = await world.human(owner_a, org_a, username=name)
    assert await _session_user(world, username) == plain.user_id
    assert await _session_user(world, f"{username}@{domain_a}") == bob_id


async def test_organization_created_after_the_username_takes_the_login_name(
    world: World,
) -> None:
    """The rule holds for the organizations that exist when the user is made; an organization
    made later with that domain takes the login name over (``docs/DECISIONS.md``)."""
    org_a, domain_a, owner_a = await _org(world)
    future = _unique("future")
    username = f"carol@{future}.localhost"
    carol_a: Human = await world.human(owner_a, org_a, username=username, email=username)
    assert await _session_user(world, username) == carol_a.user_id

    org_c = await world.org(future)
    domain_c = await world.db.fetchval("SELECT domain FROM organizations WHERE id = $1", org_c)
    assert domain_c == f"{future}.localhost"

    await _assert_no_user(world, username)  # resolves in the new organization only
    assert await _session_user(world, f"{username}@{domain_a}") == carol_a.user_id
    carol_c = await world.human(await world.token(org_c, "ORG_OWNER"), org_c, username="carol")
    assert await _session_user(world, username) == carol_c.user_id
