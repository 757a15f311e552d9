"""The browser console. Every view reads the current tenant from console.tenancy and
looks rows up through `for_tenant`, so another tenant's objects are a 404."""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST, require_safe
from django.views.defaults import page_not_found

from console import health, usage
from console.automation import workflow_automation
from console.forms import (
    AuditFilterForm,
    CodeForm,
    EventForm,
    RerunForm,
    RestartForm,
    StartForm,
    TokenForm,
)
from console.tenancy import (
    page_after_switch,
    switch_tenant,
    tenant_required,
    writer_required,
)
from execution import history, quotas, runs, workflows
from execution.errors import RestartRefused
from execution.models import CodeVersion, Instance, Workflow
from execution.schemas import InstanceOut, instance_out
from lib import logs
from lib.diffs import diff_lines
from tenants.audit import audit_token, filtered_log, request_actor
from tenants.memberships import memberships_of
from tenants.models import ApiToken
from tenants.staff_view import staff_view
from tenants.tokens import TokenQuotaExceeded, create_token, revoke_token

STATUSES = [s.value for s in Instance.Status]


@never_cache
def healthz(request):
    return JsonResponse({"ok": True})


@never_cache
def readyz(request):
    ready, outcome = health.readiness()
    return JsonResponse(outcome, status=200 if ready else 503)


@login_required
@require_safe
def no_tenant(request):
    if memberships_of(request.user).exists():
        return redirect("home")
    return render(request, "console/no_tenant.html")


@login_required
@require_POST
def switch(request):
    if staff_view(request.user, request.session) is not None:
        raise PermissionDenied("the staff view is read-only: leave it to switch tenants")
    if switch_tenant(request, request.POST.get("tenant", "")) is None:
        raise Http404("no such tenant")
    return redirect(page_after_switch(request))


@tenant_required
def home(request):
    recent = Instance.objects.for_tenant(request.tenant).select_related("workflow")[:8]
    return render(
        request,
        "console/home.html",
        {
            "meters": usage.meters(request.tenant),
            "limits": usage.limits(request.tenant),
            "recent": recent,
            "workflow_count": Workflow.objects.for_tenant(request.tenant).count(),
        },
    )


# Workflows and their code


def get_workflow(request, name: str) -> Workflow:
    workflows_ = Workflow.objects.for_tenant(request.tenant).select_related("current_version")
    return get_object_or_404(workflows_, name=name)


@tenant_required
def workflow_list(request):
    rows = Workflow.objects.for_tenant(request.tenant).select_related("current_version")
    return render(request, "console/workflow_list.html", {"workflows": rows})


@tenant_required
def workflow_new(request):
    return edit_code(request, None)


@tenant_required
def workflow_detail(request, name):
    return edit_code(request, get_workflow(request, name))


def edit_code(request, workflow: Workflow | None):
    """The code editor: GET shows the current code, POST saves a new version."""
    current = workflow.current_version if workflow else None
    initial = {"name": workflow.name, "description": workflow.description} if workflow else {}
    initial["code"] = current.code if current else NEW_WORKFLOW
    form = CodeForm(request.POST or None, request.FILES or None, initial=initial)
    errors = []
    if request.method == "POST":
        if not request.membership.can_write:
            return render(request, "console/forbidden.html", status=403)
        if form.is_valid():
            name = workflow.name if workflow else form.cleaned_data["name"]
            try:
                upload = workflows.upload_version(
                    request.tenant,
                    name,
                    form.cleaned_data["code"],
                    form.cleaned_data["description"],
                    actor=request_actor(request),
                )
            except workflows.CodeRejected as exc:
                errors = [e.as_dict() for e in exc.report.errors]
            else:
                say_saved(request, upload)
                return redirect("workflow_detail", name=name)
    context = {"workflow": workflow, "form": form, "errors": errors, "current": current}
    if workflow:
        context.update(workflow_automation(workflow))
    return render(request, "console/workflow_edit.html", context, status=422 if errors else 200)


def say_saved(request, upload: workflows.Upload) -> None:
    version = upload.version
    if not upload.created:
        messages.info(request, "No change: the code equals the current version.")
    elif version.status == CodeVersion.Status.APPROVED:
        messages.success(request, f"Saved version {version.sha256[:12]}.")
    else:
        messages.warning(request, f"Saved version {version.sha256[:12]}: {version.status}.")


@tenant_required
@require_POST
def workflow_validate(request):
    """Live checks for the editor; saves nothing."""
    return JsonResponse(workflows.check_code(request.POST.get("code", "")).as_dict())


@tenant_required
def workflow_versions(request, name):
    workflow = get_workflow(request, name)
    versions = list(workflow.versions.select_related("reviewed_by"))
    a, b = request.GET.get("a"), request.GET.get("b")
    if not (a and b) and len(versions) > 1:
        a, b = str(versions[1].pk), str(versions[0].pk)
    diff, old, new = [], None, None
    if a and b:
        by_id = {str(v.pk): v for v in versions}
        old, new = by_id.get(a), by_id.get(b)
        if old is None or new is None:
            raise Http404("no such version")
        diff = diff_lines(old.code, new.code, old.sha256[:12], new.sha256[:12])
    context = {"workflow": workflow, "versions": versions, "diff": diff, "old": old, "new": new}
    return render(request, "console/workflow_versions.html", context)


@tenant_required
def workflow_start(request, name):
    workflow = get_workflow(request, name)
    limit = request.tenant.quota.payload_bytes
    form = StartForm(request.POST or None, payload_limit=limit)
    if request.method == "POST":
        if not request.membership.can_write:
            return render(request, "console/forbidden.html", status=403)
        if form.is_valid():
            try:
                quotas.check_start(request.tenant)
                instance, _ = workflows.start_instance(
                    workflow,
                    payload=form.cleaned_data["payload"],
                    key=form.cleaned_data["key"] or None,
                    rate=True,  # held to the starts per minute quota, as the API's starts
                    actor=request_actor(request),
                )
            except workflows.StartError as exc:
                form.add_error(None, str(exc))
            else:
                return redirect("instance_detail", key=instance.key)
    return render(request, "console/workflow_start.html", {"workflow": workflow, "form": form})


# Instances


def get_instance(request, key: str) -> Instance:
    rows = Instance.objects.for_tenant(request.tenant).select_related(
        "workflow", "version", "parent"
    )
    instance = get_object_or_404(rows, key=key)
    logs.bind(instance=instance.pk, instance_key=instance.key)
    # The request's tenant, whose quota the page reads anyway: expires_at (its JSON) then
    # reads neither the tenant nor its quota again.
    instance.tenant = request.tenant
    return instance


@tenant_required
def instance_list(request):
    status = request.GET.get("status", "")
    rows = Instance.objects.for_tenant(request.tenant).select_related("workflow", "version")
    if status in STATUSES:
        rows = rows.filter(status=status)
    workflow = request.GET.get("workflow", "")
    if workflow:
        rows = rows.filter(workflow__name=workflow)
    context = {"instances": rows[:100], "status": status, "statuses": STATUSES}
    template = "console/_instance_rows.html" if request.GET.get("partial") else None
    return render(request, template or "console/instance_list.html", context)


def instance_json(instance: Instance) -> dict:
    data = InstanceOut.model_validate(instance_out(instance)).model_dump(mode="json")
    return {**data, "seq": instance.last_seq}


@tenant_required
def instance_detail(request, key):
    instance = get_instance(request, key)
    limit = request.tenant.quota.payload_bytes
    approved = instance.workflow.versions.filter(status=CodeVersion.Status.APPROVED)
    context = {
        "instance": instance,
        "data": instance_json(instance),
        "event_form": EventForm(payload_limit=limit),
        "rerun_form": RerunForm(
            payload_limit=limit, initial={"payload": json.dumps(instance.payload, indent=2)}
        ),
        "runs": history.runs_page(instance, before=None, limit=50)["items"],
        "versions": [
            {"sha256": v.sha256, "created_at": v.created_at.isoformat()}
            for v in approved.only("sha256", "created_at")[:50]
        ],
        "can_write": request.membership.can_write,
    }
    return render(request, "console/instance_detail.html", context)


@tenant_required
@require_safe
def instance_history(request, key):
    """A run's history as the API gives it (`?run=N` for an earlier one); `?download=1`
    saves it as a file."""
    instance = get_instance(request, key)
    run = request.GET.get("run") or None
    if run is not None and not (run.isdigit() and len(run) < 10):
        raise Http404("no such run")
    found = history.history_of(instance, None if run is None else int(run))
    if found is None:
        raise Http404("no such run")
    response = JsonResponse(found, json_dumps_params={"indent": 2})
    if request.GET.get("download"):
        name = f"{instance.key}.run{found['run']}.history.json"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@tenant_required
def instance_data(request, key):
    return JsonResponse(instance_json(get_instance(request, key)))


def wants_json(request) -> bool:
    return request.headers.get("x-requested-with") == "fetch"


def answer(request, instance: Instance, ok: bool, message: str, status: int = 200):
    if wants_json(request):
        return JsonResponse({"ok": ok, "detail": message}, status=status)
    (messages.success if ok else messages.error)(request, message)
    return redirect("instance_detail", key=instance.key)


@writer_required
@require_POST
def instance_event(request, key):
    instance = get_instance(request, key)
    form = EventForm(request.POST, payload_limit=request.tenant.quota.payload_bytes)
    if not form.is_valid():
        return answer(request, instance, False, form_problems(form), status=400)
    try:
        quotas.check_event(request.tenant)
    except quotas.QuotaExceeded as exc:
        return answer(request, instance, False, str(exc), status=429)
    workflows.send_event(
        instance,
        form.cleaned_data["type"],
        form.cleaned_data["payload"],
        actor=request_actor(request),
    )
    return answer(request, instance, True, f"Sent event {form.cleaned_data['type']!r}.", 202)


@writer_required
@require_POST
def instance_control(request, key, action):
    if action not in workflows.CONTROLS:
        raise Http404("no such action")
    instance = get_instance(request, key)
    try:
        workflows.control(instance, action, request_actor(request))
    except workflows.StateConflict as exc:
        return answer(request, instance, False, str(exc), status=409)
    except quotas.QuotaExceeded as exc:
        return answer(request, instance, False, str(exc), status=429)
    return answer(request, instance, True, f"{action.title()}d.")


@writer_required
@require_POST
def instance_restart(request, key):
    """The API's restart, from the Restart button (from the start, on the same version)
    or a step's "restart from here" (from that step, on the version chosen)."""
    instance = get_instance(request, key)
    form = RestartForm(request.POST)
    if not form.is_valid():
        return answer(request, instance, False, form_problems(form), status=400)
    try:
        runs.restart(
            instance,
            from_step=form.cleaned_data["from_step"] or 0,
            version_sha=form.cleaned_data["version"] or None,
            actor=request_actor(request),
        )
    except RestartRefused as exc:
        return answer(request, instance, False, str(exc), status=400)
    except workflows.StateConflict as exc:
        return answer(request, instance, False, str(exc), status=409)
    except quotas.QuotaExceeded as exc:
        return answer(request, instance, False, str(exc), status=429)
    return answer(request, instance, True, "Restarted.")


@writer_required
@require_POST
def instance_rerun(request, key):
    """The API's rerun: a new instance of the same workflow, then its page."""
    instance = get_instance(request, key)
    form = RerunForm(request.POST, payload_limit=request.tenant.quota.payload_bytes)
    if not form.is_valid():
        return answer(request, instance, False, form_problems(form), status=400)
    try:
        started, _ = runs.rerun(
            instance,
            key=form.cleaned_data["key"] or None,
            payload=form.cleaned_data["payload"],
            version_sha=form.cleaned_data["version"] or None,
            actor=request_actor(request),
        )
    except workflows.StartError as exc:  # QuotaExceeded included
        return answer(request, instance, False, str(exc), status=409)
    if wants_json(request):
        url = reverse("instance_detail", args=[started.key])
        return JsonResponse({"ok": True, "detail": f"Started {started.key}.", "url": url})
    return redirect("instance_detail", key=started.key)


def form_problems(form) -> str:
    return "; ".join(m for errs in form.errors.values() for m in errs)


# API tokens


@tenant_required
def token_list(request):
    form = TokenForm(request.POST or None)
    created = None
    if request.method == "POST":
        if not request.membership.can_write:
            return render(request, "console/forbidden.html", status=403)
        if form.is_valid():
            try:
                created = make_token(request, form)
            except TokenQuotaExceeded as exc:
                form.add_error(None, str(exc))
            else:
                form = TokenForm()
    tokens = ApiToken.objects.filter(tenant=request.tenant).select_related("created_by")
    context = {"form": form, "tokens": tokens, "created": created}
    return render(request, "console/tokens.html", context)


@transaction.atomic
def make_token(request, form: TokenForm) -> str:
    token, raw = create_token(
        request.tenant,
        form.cleaned_data["name"],
        created_by=request.user,
        expires_at=form.expires_at(),
        read_only=form.cleaned_data["read_only"],
    )
    audit_token("token.created", token, **request_actor(request))
    return raw


@writer_required
@require_POST
def token_revoke(request, pk):
    token = get_object_or_404(ApiToken.objects.filter(tenant=request.tenant), pk=pk)
    with transaction.atomic():
        revoke_token(token)
        audit_token("token.revoked", token, **request_actor(request))
    messages.success(request, f"Revoked {token.name}.")
    return redirect(reverse("tokens"))


NEW_WORKFLOW = """\
def run(event, step):
    name = event.payload.get("name", "world")
    greeting = step.do("greet", lambda: f"hello, {name}")
    step.sleep("pause", "1 second")
    return {"greeting": greeting}
"""


def not_found(request, exception=None):
    """API clients get JSON with a `detail`, browsers the usual page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": f"no route for {request.path}"}, status=404)
    return page_not_found(request, exception)


# Audit log (owners only: it names who did what in the tenant)


AUDIT_PAGE_SIZE = 50


@tenant_required
def audit_log(request):
    """Filtered by actor, action and days (query string); pages of AUDIT_PAGE_SIZE,
    newest first, without counting the whole log (it holds every start)."""
    if request.membership.role != request.membership.Role.OWNER:
        return render(request, "console/forbidden.html", status=403)
    form = AuditFilterForm(request.GET)
    if not form.is_valid():
        context = {"form": form, "entries": []}
        return render(request, "console/audit_log.html", context, status=400)
    filters = {k: v for k, v in form.cleaned_data.items() if k != "page" and v}
    page = form.cleaned_data["page"] or 1
    start = (page - 1) * AUDIT_PAGE_SIZE
    entries = list(filtered_log(request.tenant, **filters)[start : start + AUDIT_PAGE_SIZE + 1])
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "form": form,
        "entries": entries[:AUDIT_PAGE_SIZE],
        "page": page,
        "previous_page": page - 1 if page > 1 else None,
        "next_page": page + 1 if len(entries) > AUDIT_PAGE_SIZE else None,
        "query": query.urlencode(),
    }
    return render(request, "console/audit_log.html", context)
