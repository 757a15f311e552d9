"""The staff side: the admin's name and look, the overview page, and any tenant's
console opened read-only, audited, with every change refused."""

from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.urls import URLPattern, get_resolver, reverse
from django.utils import timezone

from console import urls
from execution import workflows
from execution.models import CodeVersion, Instance
from tenants.models import ApiToken, AuditLog
from tests.console.conftest import ORDER_FLOW, client_for
from tests.console.test_consumers import TIMEOUT, close_code, connect, start
from tests.factories import make_token, upload


@pytest.fixture
def staff(db):
    get_user_model().objects.create_user("mod", is_staff=True)
    return client_for("mod")


@pytest.fixture
def orders(acme):
    return upload(acme, "orders", ORDER_FLOW).version


def test_the_admin_carries_stepwells_name_and_links_the_overview(staff):
    page = staff.get("/admin/").content.decode()
    assert "Stepwell staff" in page and "Django administration" not in page
    assert reverse("staff_overview") in page
    assert "admin-stepwell" in page


def test_the_overview_shows_work_per_tenant_and_the_review_queue_age(staff, orders, globex):
    now = timezone.now()
    for key, status, due in [("a", "running", None), ("b", "queued", now), ("c", "queued", now)]:
        workflows.start_instance(orders.workflow, key=key)
        Instance.objects.filter(key=key).update(status=status, next_run_at=due)
    waiting = upload(globex, "new", ORDER_FLOW).version
    CodeVersion.objects.filter(pk=waiting.pk).update(
        status="pending_review", created_at=now - timedelta(hours=2)
    )
    page = staff.get("/staff/")
    assert page.status_code == 200
    html = page.content.decode()
    row = html.split('class="tenant-acme"')[1].split("</tr>")[0]
    assert '<td class="running">1</td><td class="due">2</td>' in row
    queue = html.split('id="review-queue"')[1].split("</div></div>")[0]
    assert ">1</div>" in queue and "the oldest for 2\xa0hours" in queue
    assert "warm jails" in html and "Slowest tenants" in html


def test_people_who_are_not_staff_are_sent_to_the_staff_login(alice):
    for url in ["/staff/"]:
        response = alice.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
    assert alice.post("/staff/console/", {"tenant": "acme", "reason": "x"}).status_code == 302
    assert not AuditLog.objects.filter(action="staff.console_opened").exists()


def open_console(client, tenant="acme", reason="ticket 42: their run is stuck"):
    return client.post("/staff/console/", {"tenant": tenant, "reason": reason})


def test_staff_open_a_tenants_console_read_only_and_it_is_audited(staff, orders, acme):
    workflows.start_instance(orders.workflow, key="mine")
    assert open_console(staff)["Location"] == "/"
    entry = AuditLog.objects.get(action="staff.console_opened")
    assert (entry.tenant, entry.actor.username) == (acme, "mod")
    assert entry.reason == "ticket 42: their run is stuck"
    home = staff.get("/").content.decode()
    assert "staff, read-only" in home and "Acme" in home
    assert "orders" in staff.get("/workflows/").content.decode()
    assert staff.get("/instances/mine/").status_code == 200
    assert staff.get("/instances/mine/data/").json()["status"] == "queued"
    # acme's owners read it in their own audit log
    assert "staff.console_opened" in client_for("alice").get("/audit/").content.decode()


def test_a_console_is_opened_only_with_a_reason(staff, acme):
    assert open_console(staff, reason="")["Location"] == reverse("staff_overview")
    assert staff.get("/").status_code == 302  # no membership, no staff view
    assert not AuditLog.objects.filter(action="staff.console_opened").exists()


def test_leaving_ends_the_staff_view_and_is_audited(staff, acme):
    open_console(staff)
    assert staff.post("/staff/console/leave/")["Location"] == reverse("staff_overview")
    assert AuditLog.objects.filter(action="staff.console_left", tenant=acme).exists()
    assert staff.get("/workflows/")["Location"] == reverse("no_tenant")


def test_the_staff_view_ends_with_the_staff_flag(staff, acme):
    open_console(staff)
    get_user_model().objects.filter(username="mod").update(is_staff=False)
    assert staff.get("/workflows/")["Location"] == reverse("no_tenant")


def console_posts(**values) -> list[str]:
    """Every console URL, but the pages that answer only reads, with the arguments filled
    in."""
    skip = ("admin/", "api/", "staff/", "login/", "logout/", "healthz", "readyz", "metrics")
    skip += ("no-tenant/",)
    found = []
    for pattern in get_resolver(urls).url_patterns:
        if not isinstance(pattern, URLPattern) or str(pattern.pattern).startswith(skip):
            continue
        args = {name: values[name] for name in pattern.pattern.converters}
        found.append(reverse(pattern.name, kwargs=args))
    return found


def test_every_console_post_is_refused_in_the_staff_view(staff, orders, acme):
    instance, _ = workflows.start_instance(orders.workflow, key="mine")
    make_token(acme, "deploy")
    token = ApiToken.objects.get(name="deploy")
    open_console(staff)
    posts = console_posts(
        name="orders",
        key="mine",
        action="pause",
        pk=token.pk,
        schedule="tick",
        event_type="go",
        delivery=1,
    )
    assert len(posts) >= 12 and "/instances/mine/pause/" in posts
    form = {
        "code": ORDER_FLOW + "\n# changed\n",
        "name": "orders",
        "tenant": "acme",
        "type": "go",
        "payload": "{}",
    }
    for url in posts:
        assert staff.post(url, form).status_code == 403, url
    instance.refresh_from_db()
    token.refresh_from_db()
    assert (instance.status, token.revoked_at) == ("queued", None)
    assert orders.workflow.versions.count() == 1
    assert ApiToken.objects.filter(tenant=acme).count() == 1


def test_the_same_posts_work_for_the_tenants_own_developer(alice, orders):
    workflows.start_instance(orders.workflow, key="mine")
    assert alice.post("/instances/mine/pause/").status_code == 302
    assert Instance.objects.get(key="mine").status == "paused"


def test_the_staff_view_follows_an_instance_live_and_only_in_the_tenant_opened(
    transactional_db, acme
):
    get_user_model().objects.create_user("mod", is_staff=True)
    instance = start(acme)
    staff = client_for("mod")
    path = f"/ws/instances/{instance.key}/"
    cookie = [(b"cookie", f"sessionid={staff.cookies['sessionid'].value}".encode())]
    assert async_to_sync(close_code)(path, cookie) == 4404

    async def snapshot():
        ws = await connect(path, cookie)
        message = await ws.receive_json_from(TIMEOUT)
        await ws.disconnect()
        return message

    open_console(staff)
    assert async_to_sync(snapshot)()["instance"]["id"] == instance.key
