"""The Grafana dashboard and the monitoring profile (issue 12): every series the dashboard
queries is one the service exports (read from a live ``/metrics`` after a change, and from a
real worker's and relay's endpoints after an e-mail sent and one refused for good),
Prometheus scrapes the API, the workers and the relay, and Grafana and Prometheus listen on
this host only."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from api.settings import Settings
from tests.metrics_support import scrape, scrape_until
from tests.support import REFUSED_ADDRESS, STRONG_PASSWORD, World
from tests.test_deploy_files import ROOT, services
from tests.workers_support import free_port, stack_for
from workers.smtp_sink import MailSink

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "identity.json"


# The families the worker's and the relay's endpoints export (workers.metrics), the rest
# being the API's.
WORKER_SERIES = ("identity_task", "identity_mail_")
RELAY_SERIES = ("identity_relay_",)


@pytest.mark.slow
async def test_every_dashboard_series_is_exported(
    world: World, base_settings: Settings, sink: MailSink, tmp_path: Path
) -> None:
    org_id, admin = await world.admin()
    user = await world.human(admin, org_id)
    changed = await world.set_password(
        admin, user.user_id, {"newPassword": {"password": STRONG_PASSWORD + "-dash"}}
    )
    assert changed.status_code == 200, changed.text
    api = {
        line.split("{")[0].split(" ")[0]
        for line in (await world.client.get("/metrics")).text.splitlines()
        if line and not line.startswith("#")
    }

    # A worker and a relay with their endpoints: the change's e-mail goes out, and one to an
    # address the SMTP server refuses is given up on at once (a refusal, a dead row).
    refused = await world.human(admin, org_id, email=REFUSED_ADDRESS)
    with stack_for(base_settings, tmp_path) as stack:
        worker_port, relay_port = free_port(), free_port()
        stack.start_worker(smtp_url=sink.url, mail_max_attempts=1, worker_metrics_port=worker_port)
        stack.start_relay(relay_metrics_port=relay_port)
        changed = await world.set_password(
            admin, refused.user_id, {"newPassword": {"password": STRONG_PASSWORD + "-dash"}}
        )
        assert changed.status_code == 200, changed.text
        worker = scrape_until(
            f"http://127.0.0.1:{worker_port}/metrics",
            lambda s: (
                s.value("identity_mail_dead_total") >= 1
                and s.value("identity_mail_sent_total") >= 1
            ),
            "an e-mail sent and one given up on",
            timeout=30,
        )
        relay = scrape(f"http://127.0.0.1:{relay_port}/metrics")

    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bidentity_[a-z_]+\b", target["expr"])
    }
    assert len(queried) >= 18, queried
    exported = api | worker.names | relay.names
    assert queried <= exported, sorted(queried - exported)
    # ... each by the process that counts it.
    assert {q for q in queried if q.startswith(WORKER_SERIES)} <= worker.names
    assert {q for q in queried if q.startswith(RELAY_SERIES)} <= relay.names
    assert all(p["datasource"]["uid"] == "prometheus" for p in dashboard["panels"])


def test_the_monitoring_profile_scrapes_the_api_on_this_host_only() -> None:
    found = services()
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["api:8080"]
    assert prometheus["scrape_configs"][0]["metrics_path"] == "/metrics"
    # The workers and the relays, every replica of their service, on the ports compose gives
    # them; inside the network only (no port published on the host).
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    for job, service, variable in (
        ("identity-worker", "worker", "IDENTITY_WORKER_METRICS_PORT"),
        ("identity-relay", "relay", "IDENTITY_RELAY_METRICS_PORT"),
    ):
        [sd] = jobs[job]["dns_sd_configs"]
        assert sd["names"] == [service] and sd["type"] == "A", job
        env = found[service]["environment"]
        assert str(sd["port"]) == str(env[variable]), job
        assert env["IDENTITY_METRICS_HOST"] == "0.0.0.0"
        assert "ports" not in found[service], service
    assert Settings().metrics_host == "127.0.0.1"  # elsewhere: this host only
    assert Settings().worker_metrics_port == Settings().relay_metrics_port == 0  # off
    for name in ("prometheus", "grafana"):
        assert found[name]["profiles"] == ["monitoring"]
        assert all(str(p).startswith("127.0.0.1:") for p in found[name]["ports"]), name
    mounts = " ".join(found["grafana"]["volumes"])
    assert "deploy/grafana/dashboards" in mounts and "deploy/grafana/provisioning" in mounts
