"""The console's schedules and triggers: listed on the workflow page, edited here, each
change through execution.schedules and execution.triggers and audited."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from console.forms import ScheduleForm, TriggerForm
from console.tenancy import tenant_required, writer_required
from execution import quotas, schedules, triggers
from execution.models import Schedule, ScheduleFire, Workflow
from tenants.audit import request_actor

RECENT_FIRES = 10


def workflow_automation(workflow: Workflow) -> dict:
    """What the workflow page shows of its schedules, their recent fires and its triggers."""
    return {
        "schedules": list(workflow.schedules.order_by("name")),
        "recent_fires": list(
            ScheduleFire.objects.filter(schedule__workflow=workflow)
            .select_related("schedule")
            .order_by("-fire_at", "-id")[:RECENT_FIRES]
        ),
        "triggers": list(workflow.triggers.order_by("event_type")),
        "trigger_form": TriggerForm(),
    }


def get_workflow(request, name: str) -> Workflow:
    return get_object_or_404(Workflow.objects.for_tenant(request.tenant), name=name)


def get_schedule(request, workflow: Workflow, name: str) -> Schedule:
    return get_object_or_404(workflow.schedules.all(), name=name)


def workflow_page(workflow: Workflow, anchor: str):
    response = redirect("workflow_detail", name=workflow.name)
    response["Location"] += f"#{anchor}"
    return response


@tenant_required
def schedule_edit(request, name, schedule=None):
    """GET the form (with the schedule's recent fires); POST creates or replaces."""
    workflow = get_workflow(request, name)
    workflow.tenant = request.tenant
    existing = get_schedule(request, workflow, schedule) if schedule else None
    initial = ScheduleForm.initial_for(existing) if existing else {}
    limit = request.tenant.quota.payload_bytes
    form = ScheduleForm(request.POST or None, initial=initial, payload_limit=limit)
    if existing:
        form.fields["name"].disabled = True
    if request.method == "POST":
        if not request.membership.can_write:
            return render(request, "console/forbidden.html", status=403)
        if form.is_valid() and save(request, workflow, form):
            return workflow_page(workflow, "schedules")
    fires = existing.fires.order_by("-fire_at")[:50] if existing else []
    context = {"workflow": workflow, "form": form, "schedule": existing, "fires": fires}
    status = 422 if form.errors else 200
    return render(request, "console/schedule_edit.html", context, status=status)


def save(request, workflow: Workflow, form: ScheduleForm) -> bool:
    try:
        saved, _ = schedules.save_schedule(
            workflow, form.cleaned_data["name"], form.spec(), actor=request_actor(request)
        )
    except schedules.BadField as exc:
        form.add_error(exc.field, str(exc))
        return False
    except (schedules.NameTaken, quotas.QuotaExceeded) as exc:
        form.add_error(None, str(exc))
        return False
    messages.success(request, f"Saved schedule {saved.name}.")
    return True


@writer_required
@require_POST
def schedule_pause(request, name, schedule, action):
    if action not in ("pause", "resume"):
        raise Http404("no such action")
    workflow = get_workflow(request, name)
    found = get_schedule(request, workflow, schedule)
    schedules.set_paused(found, action == "pause", actor=request_actor(request))
    return workflow_page(workflow, "schedules")


@writer_required
@require_POST
def schedule_delete(request, name, schedule):
    workflow = get_workflow(request, name)
    found = get_schedule(request, workflow, schedule)
    schedules.delete_schedule(found, actor=request_actor(request))
    messages.success(request, f"Deleted schedule {found.name}.")
    return workflow_page(workflow, "schedules")


@writer_required
@require_POST
def trigger_add(request, name):
    workflow = get_workflow(request, name)
    workflow.tenant = request.tenant
    form = TriggerForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Not an event type: {form.errors['event_type'][0]}")
        return workflow_page(workflow, "triggers")
    event_type = form.cleaned_data["event_type"]
    try:
        triggers.add_trigger(workflow, event_type, actor=request_actor(request))
    except quotas.QuotaExceeded as exc:
        messages.error(request, str(exc))
    return workflow_page(workflow, "triggers")


@writer_required
@require_POST
def trigger_delete(request, name, event_type):
    workflow = get_workflow(request, name)
    trigger = get_object_or_404(workflow.triggers.all(), event_type=event_type)
    triggers.delete_trigger(trigger, actor=request_actor(request))
    return workflow_page(workflow, "triggers")
