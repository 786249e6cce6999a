"""``Procfile``, ``compose.yaml`` and ``Dockerfile``: every command they run exists here.

Docker does not run on these machines, so compose is checked by parsing: each service's
command is resolved against the project (the ``identity`` CLI parser, the Celery CLI with
``workers.app``, ``python -m`` modules, and through ``scripts/flower`` and ``scripts/dev-only``
to the command they run), and the services, health checks and start order are the ones the
deployment needs. The image installs from ``requirements.lock``: it pins, with hashes, every
runtime dependency pyproject names, within pyproject's bounds.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shlex
import subprocess
import tomllib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml
from celery import Celery
from celery.bin.base import CLIContext
from celery.bin.celery import celery as celery_cli
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from api.cli import build_parser
from api.http.routes import ROUTES

ROOT = Path(__file__).resolve().parents[1]
APP_SERVICES = ("migrate", "api", "worker", "beat", "flower")
FLOWER = ROOT / "scripts" / "flower"
DEV_ONLY = ROOT / "scripts" / "dev-only"
PROCFILE_OF = {
    "api": "web",
    "worker": "worker",
    "relay": "relay",
    "beat": "beat",
    "flower": "flower",
    "migrate": "release",
}
_DEFAULT = re.compile(r"\$\{(\w+)(?::?[-?])([^}]*)\}")


def interpolate(text: str, given: Mapping[str, str] | None = None) -> str:
    """What compose and a shell make of ``${VAR:-default}`` with VAR unset, or with the value
    in ``given`` (``${VAR:?msg}`` unset becomes a placeholder: compose refuses to start
    without it)."""

    def value(match: re.Match[str]) -> str:
        if given and match.group(1) in given:
            return given[match.group(1)]
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


def launcher_env(**variables: str) -> dict[str, str]:
    """This process's environment without IDENTITY_* and FLOWER_*, plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDENTITY_", "FLOWER_"))}
    env.update(variables)
    return env


def flower_dry_run(env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """``scripts/flower`` with ``FLOWER_DRY_RUN=1``: prints the command it would run."""
    return subprocess.run(
        [str(FLOWER)],
        env={**env, "FLOWER_DRY_RUN": "1"},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


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


def check_flower(args: list[str], env: Mapping[str, str] | None) -> None:
    """What ``scripts/flower`` runs in ``env`` (this environment if None) is a valid command."""
    assert not args, f"scripts/flower takes no arguments: {args}"
    ran = flower_dry_run(launcher_env() if env is None else env)
    assert ran.returncode == 0, ran.stderr
    program, *rest = shlex.split(ran.stdout)
    assert program == "celery", ran.stdout
    check_celery(rest)


def check_command(command: str | list[str], env: Mapping[str, str] | None = None) -> None:
    """``env``: the environment the command gets (only ``scripts/flower`` reads it)."""
    program, *args = argv(command)
    if program == "identity":
        check_identity(args)
    elif program == "celery":
        check_celery(args)
    elif program == "python":
        check_python_module(args)
    elif program == "scripts/flower":
        check_flower(args, env)
    elif program == "scripts/dev-only":
        assert os.access(DEV_ONLY, os.X_OK), DEV_ONLY
        assert args, command
        check_command(args, env)
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
        "scripts/flowr",
        "scripts/flower --address=0.0.0.0",
        "scripts/dev-only python -m workers.smtp_sinc",
        "scripts/dev-only",
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
        # The service's environment, as compose makes it when the variables it requires are set.
        env = {
            k: interpolate(str(v), {"FLOWER_BASIC_AUTH": "admin:pw"})
            for k, v in service["environment"].items()
        }
        check_command(service["command"], launcher_env(**env))
        assert argv(service["command"]) == argv(entries[PROCFILE_OF[name]]), name


def test_app_services_are_built_here_and_point_at_compose_services() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    for sources in re.findall(r"^COPY (.+) \S+$", dockerfile, re.M):
        for copied in sources.split():
            assert (ROOT / copied).exists(), copied
    # Every dependency from the lock, hashes checked; then the project alone.
    locked = re.search(
        r"^RUN pip install --require-hashes -r requirements\.lock$", dockerfile, re.M
    )
    project = re.search(
        r"^RUN pip install --no-deps --no-build-isolation \.(\s|$)", dockerfile, re.M
    )
    assert locked and project and locked.start() < project.start(), dockerfile
    assert "pip check" in dockerfile[project.start() :]
    assert re.search(r"^COPY scripts/flower ", dockerfile, re.M)  # compose's flower runs it
    found = services()
    for name in APP_SERVICES:
        service = found[name]
        assert service["build"] == ".", name
        env = service["environment"]
        assert urlsplit(env["IDENTITY_DATABASE_URL"]).hostname == "postgres"
        assert urlsplit(env["IDENTITY_REDIS_URL"]).hostname == "redis"
        assert urlsplit(env["IDENTITY_BROKER_URL"]).hostname == "redis"
        smtp = urlsplit(interpolate(env["IDENTITY_SMTP_URL"]))
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


# --- dependencies and the lock -----------------------------------------------------------------

# Releases with known vulnerabilities that pyproject's bounds must exclude.
VULNERABLE = {
    "cryptography": "44.0.0",  # its wheels' OpenSSL: CVE-2024-12797
    "aiosmtpd": "1.4.5",  # CVE-2024-34083 (1.4.4 and older also CVE-2024-27305)
}


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirements(section: str) -> list[Requirement]:
    """``runtime``, ``build`` or an extra's name, from pyproject.toml."""
    data = pyproject()
    if section == "runtime":
        found = data["project"]["dependencies"]
    elif section == "build":
        found = data["build-system"]["requires"]
    else:
        found = data["project"]["optional-dependencies"][section]
    return [Requirement(r) for r in found]


def names(reqs: list[Requirement]) -> set[str]:
    return {canonicalize_name(r.name) for r in reqs}


Pins = dict[str, tuple[Version, list[str]]]


def parse_lock(text: str) -> Pins:
    """A lock file's pinned names -> (version, its sha256 hashes)."""
    pinned: Pins = {}
    for entry in re.split(r"\n(?=\S)", text):
        if entry.startswith("#") or not entry.strip():
            continue
        match = re.match(r"([A-Za-z0-9._-]+)==([^\s;\\]+)", entry)
        assert match, f"not a pin: {entry.splitlines()[0]}"
        name = canonicalize_name(match.group(1))
        assert name not in pinned, f"{name} pinned twice"
        pinned[name] = (Version(match.group(2)), re.findall(r"--hash=sha256:([0-9a-f]{64})", entry))
    return pinned


def lock() -> Pins:
    return parse_lock((ROOT / "requirements.lock").read_text())


def lock_problems(pinned: Pins) -> list[str]:
    """What is wrong with ``pinned`` as the image's lock: empty when nothing."""
    problems = [f"{name}: no hash" for name, (_, hashes) in pinned.items() if not hashes]
    # The image's processes: the runtime dependencies, Flower (ops), tracing (otel) and the
    # build backend.
    for section in ("runtime", "ops", "otel", "build"):
        for req in requirements(section):
            name = canonicalize_name(req.name)
            if name not in pinned:
                problems.append(f"{req.name} ({section}) is not pinned")
            elif not req.specifier.contains(pinned[name][0], prereleases=True):
                problems.append(f"{name}=={pinned[name][0]} is outside pyproject's {req}")
    # Development tools stay out of the image.
    problems += [f"{name} (dev) is pinned" for name in names(requirements("dev")) & set(pinned)]
    return problems


def test_the_lock_pins_every_runtime_dependency_within_pyprojects_bounds() -> None:
    pinned = lock()
    assert len(pinned) > 30  # the transitive closure, not only the direct dependencies
    problems = lock_problems(pinned)
    assert not problems, f"regenerate requirements.lock with the command at its top: {problems}"


def test_the_lock_check_catches_a_missing_stale_or_unhashed_pin() -> None:
    pinned = lock()
    doctored = dict(pinned)
    del doctored["flower"]
    doctored["cryptography"] = (Version("44.0.0"), pinned["cryptography"][1])
    doctored["celery"] = (pinned["celery"][0], [])
    doctored["honcho"] = (Version("2.0.0"), ["0" * 64])
    assert sorted(lock_problems(doctored)) == [
        "celery: no hash",
        "cryptography==44.0.0 is outside pyproject's cryptography>=44.0.1",
        "flower (ops) is not pinned",
        "honcho (dev) is pinned",
    ]
    assert parse_lock("# header\nFoo_Bar==1.2 \\\n    --hash=sha256:" + "a" * 64 + "\n") == {
        "foo-bar": (Version("1.2"), ["a" * 64])
    }


def test_vulnerable_releases_are_excluded() -> None:
    every = [r for s in ("runtime", "ops", "dev", "build") for r in requirements(s)]
    for name, bad in VULNERABLE.items():
        [req] = [r for r in every if canonicalize_name(r.name) == name]
        assert not req.specifier.contains(bad, prereleases=True), f"{req} allows {name} {bad}"
    pinned = lock()
    assert pinned["cryptography"][0] >= Version("44.0.1")


def test_operations_and_development_tools_are_extras() -> None:
    runtime = names(requirements("runtime"))
    assert not runtime & {"flower", "honcho", "aiosmtpd"}, runtime
    assert "flower" in names(requirements("ops"))
    assert {"honcho", "aiosmtpd"} <= names(requirements("dev"))
    # scripts/test and CI install `.[test]`: the smoke test runs honcho, Flower and the sink.
    [itself] = [r for r in requirements("test") if r.name == pyproject()["project"]["name"]]
    assert {"ops", "dev"} <= itself.extras


def test_web_binds_this_host_unless_told_and_workers_have_their_own_names() -> None:
    """Issue 12: the Procfile's API listens where the README says (IDENTITY_HOST, 127.0.0.1
    by default), and two workers started from it do not share one Celery node name."""
    entries = procfile()
    assert "--host" not in argv(entries["web"])  # from IDENTITY_HOST (api.settings: 127.0.0.1)
    from api.settings import Settings

    assert Settings().host == "127.0.0.1"
    worker = entries["worker"]
    hostname = next(a for a in shlex.split(worker) if a.startswith("--hostname="))
    # honcho gives each process its own PORT; %h is the machine (a container in compose).
    assert "${PORT" in hostname and hostname.endswith("@%h"), hostname
