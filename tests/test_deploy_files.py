"""``Procfile``, ``compose.yaml`` and ``Dockerfile``: every command they run exists here.

Docker does not run on these machines, so compose is checked by parsing: each service's
command is resolved against the project (the ``identity`` CLI parser, the Celery CLI with
``workers.app``, ``python -m`` modules), and the services, health checks and start order are
the ones the deployment needs.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex
import tomllib
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml
from celery import Celery
from celery.bin.base import CLIContext
from celery.bin.celery import celery as celery_cli

from api.cli import build_parser
from api.http.routes import ROUTES

ROOT = Path(__file__).resolve().parents[1]
APP_SERVICES = ("migrate", "api", "worker", "beat", "flower")
PROCFILE_OF = {
    "api": "web",
    "worker": "worker",
    "relay": "relay",
    "beat": "beat",
    "flower": "flower",
    "migrate": "release",
}
_DEFAULT = re.compile(r"\$\{(\w+)(?::?[-?])([^}]*)\}")


def interpolate(text: str) -> str:
    """What compose and a shell make of ``${VAR:-default}`` with VAR unset (``${VAR:?msg}``
    becomes a placeholder: compose refuses to start without it)."""

    def value(match: re.Match[str]) -> str:
        return "REQUIRED" if "?" in match.group(0) else match.group(2)

    return _DEFAULT.sub(value, text).replace("$$", "$")


def argv(command: str | list[str]) -> list[str]:
    if isinstance(command, list):
        return [interpolate(part) for part in command]
    return shlex.split(interpolate(command))


def procfile() -> dict[str, str]:
    entries: dict[str, str] = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, command = line.partition(":")
            assert sep and re.fullmatch(r"[a-z]+", name), line
            assert name not in entries, f"duplicate Procfile entry {name}"
            entries[name] = command.strip()
    return entries


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def services() -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"]
    return found


def mail_catcher() -> str:
    [name] = [n for n, s in services().items() if "mailpit" in s.get("image", "")]
    return name


# --- resolving a command -----------------------------------------------------------------------


def check_identity(args: list[str]) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["identity"] == "api.cli:main"
    try:
        build_parser().parse_args(args)
    except SystemExit as exc:
        raise AssertionError(f"identity {shlex.join(args)}: not a valid command") from exc


def check_celery(args: list[str]) -> None:
    workers = importlib.import_module("workers")
    assert isinstance(workers.app, Celery)
    obj = CLIContext(app=workers.app, no_color=True, workdir=None, quiet=True)
    try:
        ctx = celery_cli.make_context("celery", list(args), obj=obj)
        assert ctx.params["app"] == "workers", args
        with warnings.catch_warnings():  # click 8.2 deprecates protected_args, still fills it
            warnings.simplefilter("ignore", DeprecationWarning)
            pending = [*ctx.protected_args, *ctx.args]
        name, command, rest = celery_cli.resolve_command(ctx, pending)
        assert name in ("worker", "beat", "flower"), args
        assert command is not None
        sub = command.make_context(name, rest, parent=ctx)
    except click.UsageError as exc:
        raise AssertionError(f"celery {shlex.join(args)}: {exc}") from exc
    if name == "flower":  # Flower hands its options to tornado: check them there
        from flower.options import options

        for option in sub.params["tornado_argv"]:
            key = option.removeprefix("--").partition("=")[0].replace("-", "_")
            assert key in options, f"flower has no option {option}"


def check_python_module(args: list[str]) -> None:
    assert args[0] == "-m", args
    module = args[1]
    assert importlib.util.find_spec(module) is not None, module
    parser = importlib.import_module(module).build_parser()
    try:
        parser.parse_args(args[2:])
    except SystemExit as exc:
        raise AssertionError(f"python {shlex.join(args)}: bad arguments") from exc


def check_command(command: str | list[str]) -> None:
    program, *args = argv(command)
    if program == "identity":
        check_identity(args)
    elif program == "celery":
        check_celery(args)
    elif program == "python":
        check_python_module(args)
    else:
        raise AssertionError(f"unknown program {program!r} in {command!r}")


def test_a_wrong_command_is_caught() -> None:
    """The checks below can fail: each kind of mistake is refused."""
    for wrong in (
        "identity serv",
        "identity serve --hots 0.0.0.0",
        "celery -A workers wurker",
        "celery -A workers worker --loglevl=INFO",
        "celery -A workers flower --prot=5555",
        "celery -A tasks worker",
        "python -m workers.smtp_sinc",
        "gunicorn app:app",
    ):
        with pytest.raises(AssertionError):
            check_command(wrong)


# --- Procfile ----------------------------------------------------------------------------------


def test_procfile_has_every_process_and_each_command_exists() -> None:
    entries = procfile()
    assert {"release", "web", "worker", "beat", "flower"} <= set(entries)
    assert argv(entries["release"]) == ["identity", "migrate"]
    assert argv(entries["web"])[:2] == ["identity", "serve"]
    for name, command in entries.items():
        check_command(command)
        assert "--pool solo" not in command, f"{name}: the real worker uses its default pool"


# --- compose -----------------------------------------------------------------------------------


def test_compose_has_the_services() -> None:
    found = services()
    for name in ("postgres", "redis", "api", "worker", "beat", "flower", "migrate"):
        assert name in found, name
    assert found["postgres"]["image"].startswith("postgres:16")
    assert found["redis"]["image"].startswith("redis:7")
    catcher = found[mail_catcher()]
    assert any(str(p).endswith("8025") for p in catcher["ports"])


def test_compose_commands_exist_and_match_the_procfile() -> None:
    entries = procfile()
    found = services()
    for name in APP_SERVICES:
        service = found[name]
        check_command(service["command"])
        assert argv(service["command"]) == argv(entries[PROCFILE_OF[name]]), name


def test_app_services_are_built_here_and_point_at_compose_services() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    assert re.search(r"^RUN pip install \.(\s|$)", dockerfile, re.M)
    for copied in re.findall(r"^COPY (\S+)", dockerfile, re.M):
        assert (ROOT / copied).exists(), copied
    found = services()
    for name in APP_SERVICES:
        service = found[name]
        assert service["build"] == ".", name
        env = service["environment"]
        assert urlsplit(env["IDENTITY_DATABASE_URL"]).hostname == "postgres"
        assert urlsplit(env["IDENTITY_REDIS_URL"]).hostname == "redis"
        assert urlsplit(env["IDENTITY_BROKER_URL"]).hostname == "redis"
        smtp = urlsplit(env["IDENTITY_SMTP_URL"])
        assert (smtp.hostname, smtp.port) == (mail_catcher(), 1025)
        assert "IDENTITY_SECRET_KEY" in env


def test_long_running_services_have_health_checks() -> None:
    found = services()
    for name, service in found.items():
        if name == "migrate":
            assert "healthcheck" not in service and service["restart"] == "no"
            continue
        test = service["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
    api_check = " ".join(found["api"]["healthcheck"]["test"])
    assert "/readyz" in api_check
    assert any("/readyz" in route.paths for route in ROUTES)
    assert "/healthcheck" in " ".join(found["flower"]["healthcheck"]["test"])
    assert "pg_isready" in " ".join(found["postgres"]["healthcheck"]["test"])


def test_start_order() -> None:
    found = services()

    def needs(name: str) -> dict[str, str]:
        deps = found[name].get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions"
        return {dep: spec["condition"] for dep, spec in deps.items()}

    assert needs("migrate") == {"postgres": "service_healthy"}
    for name in ("api", "worker", "beat"):
        assert needs(name)["migrate"] == "service_completed_successfully", name
        assert needs(name)["redis"] == "service_healthy", name
    assert needs("api")["postgres"] == "service_healthy"
    assert needs("worker")["postgres"] == "service_healthy"
    assert needs("worker")[mail_catcher()] == "service_healthy"
    assert needs("flower")["redis"] == "service_healthy"
    valid = {"service_started", "service_healthy", "service_completed_successfully"}
    for name in found:
        for dep, condition in needs(name).items():
            assert dep in found and condition in valid, (name, dep)
            if condition == "service_healthy":
                assert "healthcheck" in found[dep], (name, dep)

    # No cycle: every service can be started after the ones it needs.
    started: set[str] = set()
    while len(started) < len(found):
        ready = {n for n in found if n not in started and set(needs(n)) <= started}
        assert ready, f"dependency cycle among {set(found) - started}"
        started |= ready
