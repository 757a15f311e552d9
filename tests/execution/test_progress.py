"""Progress events: numbered on the instance row, stored, and sent after the commit."""

import pytest
from django.db import transaction
from django.utils import timezone

from execution import workflows
from execution.models import Instance, ProgressEvent
from execution.progress import reserve_and_store
from tests.factories import WAITER, make_tenant, upload


@pytest.fixture
def instance(transactional_db):
    acme = make_tenant("acme", "alice")
    wf = upload(acme, "waiter", WAITER).workflow
    return workflows.start_instance(wf)[0]


def stored(instance):
    return list(
        ProgressEvent.objects.filter(instance=instance).order_by("seq").values_list("seq", "type")
    )


def test_events_are_numbered_after_the_last_and_fields_set_by_the_same_update(instance):
    first = instance.last_seq
    now = timezone.now()
    with transaction.atomic():
        events = reserve_and_store(
            instance,
            [("instance.status", {"status": "running"}), ("note", {"n": 2})],
            status="running",
            updated_at=now,
            output={"x": [1]},
        )
    assert [e.seq for e in events] == [first + 1, first + 2] and all(e.pk for e in events)
    assert instance.last_seq == first + 2
    row = Instance.objects.get(pk=instance.pk)
    assert (row.status, row.updated_at, row.output, row.last_seq) == (
        "running",
        now,
        {"x": [1]},
        first + 2,
    )
    assert stored(instance)[-2:] == [(first + 1, "instance.status"), (first + 2, "note")]
    assert ProgressEvent.objects.get(instance=instance, seq=first + 2).data == {"n": 2}


def test_fields_alone_reserve_nothing(instance):
    before = stored(instance)
    assert reserve_and_store(instance, [], finished_at=None, lease_owner="w") == []
    assert stored(instance) == before
    assert Instance.objects.get(pk=instance.pk).lease_owner == "w"


def test_an_instance_that_is_gone_is_an_error(instance):
    Instance.objects.filter(pk=instance.pk).delete()
    with pytest.raises(Instance.DoesNotExist):
        reserve_and_store(instance, [("note", {})])
