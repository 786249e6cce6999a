"""Flower and the mail catcher are not left open (issue 10, item 9).

Flower lists every task with its arguments and, through its API, revokes tasks and shuts
workers down; the development mail catcher keeps every e-mail, reset codes included. So:

- ``scripts/flower`` (the Procfile's and compose's Flower) listens on 127.0.0.1 unless
  ``FLOWER_ADDRESS`` says otherwise, refuses an address reachable from other machines without
  ``FLOWER_BASIC_AUTH``, and refuses ``FLOWER_UNAUTHENTICATED_API`` outside development. The
  refusals are checked with ``FLOWER_DRY_RUN=1`` (a broken guard prints a command instead of
  starting Flower); two tests start the real Flower and look at its socket and its answers.
- compose publishes Flower and the mail catcher on 127.0.0.1 only, requires
  ``FLOWER_BASIC_AUTH``, and runs the mail catcher only with the ``dev`` profile.
- the Procfile's SMTP sink runs only with ``IDENTITY_ENV=development`` (``scripts/dev-only``),
  which ``scripts/dev`` sets.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.test_deploy_files import (
    DEV_ONLY,
    FLOWER,
    flower_dry_run,
    interpolate,
    launcher_env,
    mail_catcher,
    procfile,
    services,
)
from tests.workers_support import BIN, ROOT, free_port, wait_until

START_BOUND_S = 20.0


def refused(run: subprocess.CompletedProcess[str], *words: str) -> None:
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    assert run.stdout == "", "a refused launcher printed a command"
    assert "refusing to start" in run.stderr
    for word in words:
        assert word in run.stderr, (word, run.stderr)


def command_of(run: subprocess.CompletedProcess[str]) -> list[str]:
    assert run.returncode == 0, run.stderr
    return shlex.split(run.stdout)


# --- scripts/flower ----------------------------------------------------------------------------


def test_flower_listens_on_loopback_by_default() -> None:
    for env in ({}, {"IDENTITY_ENV": "production"}, {"IDENTITY_ENV": "development"}):
        command = command_of(flower_dry_run(launcher_env(**env)))
        assert command == [
            "celery",
            "-A",
            "workers",
            "flower",
            "--address=127.0.0.1",
            "--port=5555",
        ]
    command = command_of(flower_dry_run(launcher_env(FLOWER_PORT="5600", FLOWER_ADDRESS="::1")))
    assert command[-2:] == ["--address=::1", "--port=5600"]


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "flower.example", "127.0.0.1.example"])
@pytest.mark.parametrize("env_name", ["production", "development", None])
def test_flower_on_another_address_without_a_login_is_refused(
    address: str, env_name: str | None
) -> None:
    env = launcher_env(FLOWER_ADDRESS=address)
    if env_name:
        env["IDENTITY_ENV"] = env_name
    refused(flower_dry_run(env), "FLOWER_BASIC_AUTH", f"FLOWER_ADDRESS={address}")


@pytest.mark.parametrize(
    "value", ["admin", "admin:", ":secret", "admin:secret,", ",admin:secret", "a:b,,c:d", ":"]
)
def test_a_malformed_login_does_not_count(value: str) -> None:
    env = launcher_env(IDENTITY_ENV="production", FLOWER_ADDRESS="0.0.0.0", FLOWER_BASIC_AUTH=value)
    refused(flower_dry_run(env), "FLOWER_BASIC_AUTH")


def test_flower_with_a_login_may_listen_everywhere_and_the_password_stays_off_argv() -> None:
    password = "s3cret-Pa55"
    env = launcher_env(
        IDENTITY_ENV="production",
        FLOWER_ADDRESS="0.0.0.0",
        FLOWER_BASIC_AUTH=f"admin:{password},ops:pa:ss",
    )
    run = flower_dry_run(env)
    assert command_of(run)[-2:] == ["--address=0.0.0.0", "--port=5555"]
    assert "2 user(s)" in run.stderr
    # Flower reads FLOWER_BASIC_AUTH from its environment: never on the command line or logged.
    assert password not in run.stdout + run.stderr


def test_flowers_unauthenticated_api_is_development_only() -> None:
    for value in ("true", "True", "1", "yes", "on", "maybe"):
        for env_name in ({}, {"IDENTITY_ENV": "production"}):
            env = launcher_env(FLOWER_UNAUTHENTICATED_API=value, **env_name)
            refused(flower_dry_run(env), "FLOWER_UNAUTHENTICATED_API", "development")
        env = launcher_env(FLOWER_UNAUTHENTICATED_API=value, IDENTITY_ENV="development")
        assert command_of(flower_dry_run(env))[-2] == "--address=127.0.0.1"
    for value in ("", "false", "0", "no", "off"):
        command_of(flower_dry_run(launcher_env(FLOWER_UNAUTHENTICATED_API=value)))


def test_flower_takes_no_arguments_and_a_known_environment() -> None:
    run = subprocess.run(
        [str(FLOWER), "--address=0.0.0.0"],
        env={**launcher_env(), "FLOWER_DRY_RUN": "1"},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    refused(run, "no arguments")
    refused(flower_dry_run(launcher_env(IDENTITY_ENV="staging")), "IDENTITY_ENV=staging")
    refused(flower_dry_run(launcher_env(FLOWER_PORT="5555 --address=0.0.0.0")), "FLOWER_PORT")
    refused(flower_dry_run(launcher_env(FLOWER_ADDRESS="0.0.0.0 --x")), "FLOWER_ADDRESS")


# --- the real Flower through scripts/flower ----------------------------------------------------


@contextlib.contextmanager
def running_flower(tmp_path: Path, **variables: str) -> Iterator[tuple[int, int]]:
    """scripts/flower in its own session (its broker a closed port: Flower serves anyway);
    yields (pid, port) once /healthcheck answers; the session is killed after."""
    port = free_port()
    env = launcher_env(
        IDENTITY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/1",
        FLOWER_PORT=str(port),
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        **variables,
    )
    log = tmp_path / "flower.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(FLOWER)],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def healthy() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"flower exited:\n{log.read_text(errors='replace')}")
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthcheck", timeout=1).is_success
            except httpx.HTTPError:
                return False

        wait_until(healthy, START_BOUND_S, f"flower on port {port}", 0.2)
        yield proc.pid, port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on ``port`` (from /proc/net)."""
    found = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        path = Path("/proc/net") / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port and len(address) == width:
                raw = bytes.fromhex(address)
                # /proc/net prints each 32-bit word in host (little-endian) order.
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                family = socket.AF_INET if width == 8 else socket.AF_INET6
                found.add(socket.inet_ntop(family, words))
    return found


@pytest.mark.slow
def test_real_flower_by_default_listens_on_loopback_only(tmp_path: Path) -> None:
    with running_flower(tmp_path, IDENTITY_ENV="production") as (_, port):
        assert listening_addresses(port) == {"127.0.0.1"}


@pytest.mark.slow
def test_real_flower_everywhere_wants_the_login(tmp_path: Path) -> None:
    password = "s3cret-Pa55"
    with running_flower(
        tmp_path,
        IDENTITY_ENV="production",
        FLOWER_ADDRESS="0.0.0.0",
        FLOWER_BASIC_AUTH=f"admin:{password}",
    ) as (pid, port):
        assert listening_addresses(port) == {"0.0.0.0"}
        base = f"http://127.0.0.1:{port}"
        for path in ("/", "/tasks", "/api/workers", "/api/tasks"):
            assert httpx.get(base + path, timeout=5).status_code == 401, path
            wrong = httpx.get(base + path, auth=("admin", "wrong"), timeout=5)
            assert wrong.status_code == 401, path
        assert httpx.get(base + "/", auth=("admin", password), timeout=5).status_code == 200
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        assert "flower" in cmdline and password not in cmdline


# --- compose -----------------------------------------------------------------------------------


def published(port: object) -> tuple[str, str]:
    """A compose ``ports`` entry -> (host address, host port); "" is every interface."""
    if isinstance(port, dict):
        return str(port.get("host_ip", "")), str(port.get("published", ""))
    parts = interpolate(str(port)).split("/")[0].split(":")
    if len(parts) == 3:
        return parts[0], parts[1]
    return "", parts[0] if len(parts) == 2 else ""


def test_published_port_parsing() -> None:
    assert published("127.0.0.1:5555:5555") == ("127.0.0.1", "5555")
    assert published("5555:5555") == ("", "5555")
    assert published("0.0.0.0:5555:5555") == ("0.0.0.0", "5555")
    assert published("5555") == ("", "")  # a random host port, on every interface
    assert published({"target": 5555, "published": 5555}) == ("", "5555")


def test_compose_publishes_flower_and_the_mail_catcher_on_this_host_only() -> None:
    found = services()
    for name in ("flower", mail_catcher()):
        ports = found[name].get("ports", [])
        assert ports, name
        for port in ports:
            assert published(port)[0] == "127.0.0.1", (name, port)
    # Only the API is published for other machines.
    for name, service in found.items():
        for port in service.get("ports", []):
            assert published(port)[0] == "127.0.0.1" or name == "api", (name, port)


def test_compose_flower_requires_a_login() -> None:
    flower = services()["flower"]
    env = flower["environment"]
    assert re.fullmatch(r"\$\{FLOWER_BASIC_AUTH:\?[^}]+\}", env["FLOWER_BASIC_AUTH"])
    assert flower["command"] == "scripts/flower"
    given = {k: interpolate(str(v), {"FLOWER_BASIC_AUTH": "admin:pw"}) for k, v in env.items()}
    assert given["IDENTITY_ENV"] == "production"
    command = command_of(flower_dry_run(launcher_env(**given)))
    assert "--address=0.0.0.0" in command  # inside the container: the published port reaches it
    # Without the login line, the same service would not start.
    del given["FLOWER_BASIC_AUTH"]
    refused(flower_dry_run(launcher_env(**given)), "FLOWER_BASIC_AUTH")


MONITORING = ("prometheus", "grafana")


def test_the_mail_catcher_is_development_only() -> None:
    found = services()
    catcher = mail_catcher()
    assert found[catcher]["profiles"] == ["dev"]
    for name, service in found.items():
        if name == catcher:
            continue
        if name in MONITORING:  # the optional Prometheus and Grafana (issue 12)
            assert service["profiles"] == ["monitoring"], name
            continue
        assert "profiles" not in service, name
        dependency = service.get("depends_on", {}).get(catcher)
        if dependency is not None:  # the worker waits for it only when the profile runs it
            assert dependency["required"] is False, name
    app_env = found["api"]["environment"]
    assert interpolate(app_env["IDENTITY_ENV"]) == "production"
    assert app_env["IDENTITY_SMTP_URL"].startswith("${IDENTITY_SMTP_URL:-")  # settable


# --- Procfile and scripts/dev ------------------------------------------------------------------


def test_procfile_runs_flower_through_the_launcher_and_the_sink_in_development_only() -> None:
    entries = procfile()
    assert entries["flower"] == "scripts/flower"
    assert shlex.split(entries["mail"])[:4] == [
        "scripts/dev-only",
        "python",
        "-m",
        "workers.smtp_sink",
    ]
    dev = (ROOT / "scripts" / "dev").read_text()
    assert re.search(r"^export IDENTITY_ENV=development$", dev, re.M)
    assert re.search(r"^setsid honcho start .*\bflower\b.*\bmail\b", dev, re.M)


def test_the_procfiles_mail_sink_refuses_to_run_outside_development(tmp_path: Path) -> None:
    (tmp_path / "scripts").symlink_to(ROOT / "scripts")
    port = free_port()
    for env_name in ({}, {"IDENTITY_ENV": "production"}, {"IDENTITY_ENV": "prod"}):
        env = launcher_env(MAIL_PORT=str(port), **env_name)
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        run = subprocess.run(
            ["/bin/sh", "-c", procfile()["mail"]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert run.returncode == 2, (run.stdout, run.stderr)
        assert "development only" in run.stderr and "IDENTITY_ENV" in run.stderr
        assert not (tmp_path / "var").exists()  # it never started: no mail directory


def test_dev_only_runs_its_command_in_development() -> None:
    def dev_only(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(DEV_ONLY), *args],
            env=launcher_env(**env),
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )

    ran = dev_only("sh", "-c", 'echo "ran $0"', "here", IDENTITY_ENV="development")
    assert (ran.returncode, ran.stdout) == (0, "ran here\n"), ran.stderr
    assert dev_only("false", IDENTITY_ENV="development").returncode == 1  # its exit status
    assert dev_only("true").returncode == 2
    assert dev_only(IDENTITY_ENV="development").returncode == 2  # no command
