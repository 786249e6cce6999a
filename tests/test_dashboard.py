"""The Grafana dashboard and the monitoring profile (issue 12): every series the dashboard
queries is one the service exports (read from a live ``/metrics`` after a change), Prometheus
scrapes the API's port, and Grafana and Prometheus listen on this host only."""

from __future__ import annotations

import json
import re

import yaml

from tests.support import STRONG_PASSWORD, World
from tests.test_deploy_files import ROOT, services

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "identity.json"


async def test_every_dashboard_series_is_exported(world: World) -> None:
    org_id, admin = await world.admin()
    user = await world.human(admin, org_id)
    changed = await world.set_password(
        admin, user.user_id, {"newPassword": {"password": STRONG_PASSWORD + "-dash"}}
    )
    assert changed.status_code == 200, changed.text
    exported = {
        line.split("{")[0].split(" ")[0]
        for line in (await world.client.get("/metrics")).text.splitlines()
        if line and not line.startswith("#")
    }
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bidentity_[a-z_]+\b", target["expr"])
    }
    assert len(queried) >= 8, queried
    assert queried <= exported, sorted(queried - exported)
    assert all(p["datasource"]["uid"] == "prometheus" for p in dashboard["panels"])


def test_the_monitoring_profile_scrapes_the_api_on_this_host_only() -> None:
    found = services()
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["api:8080"]
    assert prometheus["scrape_configs"][0]["metrics_path"] == "/metrics"
    for name in ("prometheus", "grafana"):
        assert found[name]["profiles"] == ["monitoring"]
        assert all(str(p).startswith("127.0.0.1:") for p in found[name]["ports"]), name
    mounts = " ".join(found["grafana"]["volumes"])
    assert "deploy/grafana/dashboards" in mounts and "deploy/grafana/provisioning" in mounts
