"""Every engine log line of an activation names its tenant, instance, step and activation,
and a web request's lines its tenant and instance (lib.logs)."""

from execution import api, workflows
from lib import logs
from tests.factories import upload

TWO_STEPS = """
def run(event, step):
    a = step.do("first", lambda: 1)
    b = step.do("second", lambda: a + 1)
    return b
"""


def test_each_engine_line_of_an_activation_carries_its_ids(driver, acme, json_log):
    json_lines = json_log("execution")
    workflow = upload(acme, "two", TWO_STEPS).workflow
    instance, _ = workflows.start_instance(workflow)
    assert driver.run(instance).status == "complete"
    engine_lines = [line for line in json_lines() if line["logger"] == "execution.engine"]
    assert len(engine_lines) >= 4, engine_lines  # two activations at least, two lines each
    for line in engine_lines:
        assert line["tenant"] == acme.pk and line["instance"] == instance.pk
        assert line["instance_key"] == instance.key
        assert len(line["activation"]) == 32 and isinstance(line["step"], int)
    assert {line["step"] for line in engine_lines} >= {0, 1}
    assert logs.current() == {}


def test_an_api_request_binds_its_tenant_and_instance_and_forgets_them(
    client, acme_token, acme, monkeypatch
):
    workflow = upload(acme, "two", TWO_STEPS).workflow
    instance, _ = workflows.start_instance(workflow, key="order-1")
    seen = []
    real = api.instance_out
    monkeypatch.setattr(api, "instance_out", lambda i: seen.append(logs.current()) or real(i))
    auth = {"Authorization": f"Bearer {acme_token}"}
    assert client.get("/api/v1/instances/order-1", headers=auth).status_code == 200
    assert seen == [{"tenant": acme.pk, "instance": instance.pk, "instance_key": "order-1"}]
    assert logs.current() == {}
