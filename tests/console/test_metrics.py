"""GET /metrics: who may read it, that the engine's figures move, and that every process
of the machine counts (prometheus-client's multiprocess mode)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client
from prometheus_client import values
from prometheus_client.parser import text_string_to_metric_families

from execution import dispatch, workflows
from lib import metrics
from tests.factories import upload

ROOT = Path(__file__).resolve().parents[2]
TWO_STEPS = """
def run(event, step):
    a = step.do("first", lambda: 1)
    b = step.do("second", lambda: a + 1)
    return b
"""


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(**headers) -> dict[tuple[str, frozenset], float]:
    response = Client().get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return samples(response.content.decode())


def value(scraped, name: str, **labels) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


def test_the_metrics_module_runs_in_multiprocess_mode():
    assert values.ValueClass is not values.MutexValue
    assert os.path.isdir(os.environ["PROMETHEUS_MULTIPROC_DIR"])


@pytest.mark.django_db
def test_loopback_without_a_proxy_may_read_the_metrics():
    scraped = scrape()
    assert value(scraped, "stepwell_sandbox_failures_total", kind="engine") >= 0
    assert ("stepwell_lease_recoveries_total", frozenset()) in scraped


@pytest.mark.django_db
def test_a_forwarded_request_or_another_address_is_refused_without_the_token(settings):
    settings.STEPWELL_METRICS_TOKEN = "s3cret-metrics-token"
    for headers in (
        {"HTTP_X_FORWARDED_FOR": "203.0.113.9"},
        {"REMOTE_ADDR": "10.1.2.3"},
        {"HTTP_X_FORWARDED_FOR": "127.0.0.1", "HTTP_AUTHORIZATION": "Bearer wrong"},
    ):
        response = Client().get("/metrics", **headers)
        assert response.status_code == 403
        assert "detail" in response.json()


@pytest.mark.django_db
def test_the_token_opens_the_metrics_through_a_proxy(settings):
    settings.STEPWELL_METRICS_TOKEN = "s3cret-metrics-token"
    auth = {"HTTP_AUTHORIZATION": "Bearer s3cret-metrics-token"}
    scrape(HTTP_X_FORWARDED_FOR="203.0.113.9", REMOTE_ADDR="10.1.2.3", **auth)


@pytest.mark.django_db
def test_no_token_configured_means_loopback_only(settings):
    settings.STEPWELL_METRICS_TOKEN = ""
    response = Client().get(
        "/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9", HTTP_AUTHORIZATION="Bearer "
    )
    assert response.status_code == 403


def test_the_figures_move_when_a_workflow_runs(driver, acme):
    before = scrape()
    workflow = upload(acme, "two", TWO_STEPS).workflow
    instance, _ = workflows.start_instance(workflow, payload={})
    driver.run(instance)
    Client().get("/healthz")
    after = scrape()

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    mode = acme.quota.sandbox_mode
    assert moved("stepwell_steps_total", outcome="complete", sandbox_mode=mode) == 2
    assert moved("stepwell_activations_total", outcome="ok", sandbox_mode=mode) >= 1
    assert moved("stepwell_instances_finished_total", status="complete") == 1
    assert moved("stepwell_step_duration_seconds_count", sandbox_mode=mode) == 2
    assert moved("stepwell_activation_overhead_seconds_count", sandbox_mode=mode) >= 1
    assert moved("stepwell_queue_lag_seconds_count") >= 1
    assert moved("stepwell_http_requests_total", route="healthz", method="GET", status="200") == 1


def test_running_instances_per_tenant_are_named_for_the_busiest_and_the_rest_summed(
    settings, acme, globex, no_broker
):
    settings.STEPWELL_METRICS_TOP_TENANTS = 1
    for tenant, n in ((acme, 3), (globex, 1)):
        workflow = upload(tenant, "two", TWO_STEPS).workflow
        for _ in range(n):
            workflows.start_instance(workflow, payload={})
    scraped = scrape()
    assert value(scraped, "stepwell_tenant_running_instances", tenant="acme") == 3
    assert value(scraped, "stepwell_tenant_running_instances", tenant="other") == 1
    assert value(scraped, "stepwell_tenant_running_instances", tenant="globex") == 0


@pytest.fixture
def no_broker(monkeypatch):
    monkeypatch.setattr(dispatch, "enqueue", lambda pk: None)


CHILD = """
import sys
from lib import metrics
metrics.webhook_delivered("delivered")
metrics.warm_jails_alive(3)
print("ready", flush=True)
sys.stdin.readline()
"""


@pytest.mark.django_db
def test_every_process_of_the_machine_counts_and_a_dead_one_leaves_its_live_gauges():
    before = scrape()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        alive = scrape()
    finally:
        child.stdin.close()
        child.wait(timeout=10)
    gone = scrape()

    def delivered(scraped):
        return value(scraped, "stepwell_webhook_deliveries_total", result="delivered")

    # Counters outlive their process; live gauges stop counting when it ends.
    assert delivered(alive) == delivered(before) + 1
    assert delivered(gone) == delivered(alive)
    jails = value(before, "stepwell_warm_jails")
    assert value(alive, "stepwell_warm_jails") == jails + 3
    assert value(gone, "stepwell_warm_jails") == jails


DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
METRIC_NAME = re.compile(r"\bstepwell_[a-z0-9_]+\b")


def dashboard_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert exprs, "the dashboard queries nothing"
    return {name for expr in exprs for name in METRIC_NAME.findall(expr)}


def test_every_metric_the_grafana_dashboard_uses_is_exposed(driver, acme):
    workflow = upload(acme, "two", TWO_STEPS).workflow
    driver.run(workflows.start_instance(workflow, payload={})[0])
    Client().get("/healthz")
    exposed = {name for name, _ in scrape()}
    used = dashboard_metrics()
    assert len(used) >= 14
    assert used - exposed == set()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root makes the directory for others")
def test_a_directory_root_made_goes_to_the_state_directory_owner(tmp_path):
    os.chown(tmp_path, 12345, 12345)
    made = tmp_path / "metrics"
    made.mkdir()
    metrics.share_with_state_owner(str(made))
    assert (made.stat().st_uid, made.stat().st_gid) == (12345, 12345)
