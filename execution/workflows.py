"""What tenants do to workflows and instances: upload code, start, signal, control."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from dataclasses import dataclass
from typing import NamedTuple

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from execution import dispatch, progress, quotas, twins
from execution.errors import StartError, StateConflict
from execution.lifecycle import due, notices, states
from execution.lifecycle.states import hold_of, suspension
from execution.models import CodeVersion, Event, Instance, ProgressEvent, Step, Workflow
from execution.progress import event_message, record_event
from execution.validation import ValidationReport, validate_code
from lib import logs, rows
from tenants.audit import audit, audit_entry
from tenants.models import AuditLog, Tenant
from webhooks import deliveries


class CodeRejected(Exception):
    def __init__(self, report: ValidationReport):
        super().__init__("the code is not valid")
        self.report = report


@dataclass
class Upload:
    workflow: Workflow
    version: CodeVersion
    created: bool


def check_code(code: str) -> ValidationReport:
    return validate_code(code, max_bytes=settings.STEPWELL_MAX_CODE_BYTES)


@transaction.atomic
def upload_version(
    tenant: Tenant,
    name: str,
    code: str,
    description: str | None = None,
    *,
    actor: dict | None = None,
) -> Upload:
    """Make `code` the workflow's current version; an unchanged upload makes nothing new.
    `actor` (tenants.audit.request_actor's): audit a change as `workflow.uploaded`."""
    report = check_code(code)
    if not report.ok:
        raise CodeRejected(report)
    workflow, _ = Workflow.objects.select_for_update().get_or_create(tenant=tenant, name=name)
    described = description is not None and description != workflow.description
    if described:
        workflow.description = description
    sha = CodeVersion.hash_code(code)
    version = workflow.versions.filter(sha256=sha).first()
    created = version is None
    if created:
        status = (
            CodeVersion.Status.PENDING_REVIEW
            if tenant.review_policy == Tenant.ReviewPolicy.MANUAL
            else CodeVersion.Status.APPROVED
        )
        version = CodeVersion.objects.create(
            tenant=tenant,
            workflow=workflow,
            code=code,
            status=status,
            flags=[f.as_dict() for f in report.flags],
        )
    created = created or workflow.current_version_id != version.pk
    if created or described:  # the current code again, and no new description: nothing
        workflow.current_version = version
        workflow.updated_at = timezone.now()
        workflow.save()
    if actor is not None and created:
        audit(
            "workflow.uploaded",
            tenant=tenant,
            target=workflow,
            workflow=name,
            version=version.sha256,
            status=version.status,
            **actor,
        )
    return Upload(workflow=workflow, version=version, created=created)


def start_instance(
    workflow: Workflow,
    *,
    payload: dict | None = None,
    key: str | None = None,
    version_sha: str | None = None,
    parent: Instance | None = None,
    rate: bool = False,
    fresh: bool = False,
    actor: dict | None = None,
) -> tuple[Instance, bool]:
    """Start an instance, or return the one already started with this key.

    Returns (instance, created). `rate`: hold the start to the tenant's starts per
    minute quota too (the running instances quota always applies). `fresh`: the
    caller read `workflow` and its current version in this request, so they are not
    read again. `actor` (tenants.audit.request_actor's): a tenant's start, audited as
    `instance.started` in the statement or transaction that makes the instance.
    """
    tenant = workflow.tenant
    if key:
        existing = Instance.objects.for_tenant(tenant).filter(key=key).first()
        if existing is not None:
            return existing, False
    version = pick_version(workflow, version_sha, fresh=fresh)
    instance = Instance(
        tenant=tenant, workflow=workflow, version=version, payload=payload or {}, parent=parent
    )
    if key:
        instance.key = key
    entry = started_entry(instance, actor) if actor is not None else None
    placed = may_send_itself(tenant.pk)
    try:
        # The one statement writes no webhook deliveries: with a webhook listening it
        # changes nothing, and the transaction does it all (create_instance).
        if not (twins.hand_written() and start_with_one_statement(instance, entry, placed, rate)):
            with transaction.atomic():
                create_instance(instance, placed)
                if entry is not None:
                    entry.target_id = str(instance.pk)
                    entry.created_at = instance.created_at
                    rows.insert(entry)
                # Last, just before the commit: it locks a usage row of the tenant.
                quotas.take_start(tenant, rate=rate)  # raises QuotaExceeded, a StartError
    except IntegrityError:
        # Two starts with the same key raced; the other one won.
        existing = Instance.objects.for_tenant(tenant).filter(key=key).first()
        if existing is None:
            raise
        return existing, False
    return instance, True


def started_entry(instance: Instance, actor: dict) -> AuditLog:
    """The start's audit entry; its target is the instance, whose id the insert makes."""
    return audit_entry(
        "instance.started",
        tenant=instance.tenant,
        target=instance,
        workflow=instance.workflow.name,
        instance=instance.key,
        **actor,
    )


def may_send_itself(tenant_id: int) -> bool:
    """Whether a start may mark its instance as sent (due.sendable_at_start): not inside
    a caller's transaction, whose commit may come later than the clock's resend delay
    (the clock would send the instance a second time), nor while the tenant was found
    full a moment ago (FullTenants: its check would be wasted)."""
    return not connection.in_atomic_block and not full_tenants.recently(tenant_id)


def create_instance(instance: Instance, placed: bool = False) -> None:
    """Store the new instance, due now, and its first progress event; it is sent to a
    worker after the commit (what due.make_due does, without a second UPDATE).
    `placed` (may_send_itself): it is marked as sent if a fill would send it now."""
    now = timezone.now()
    instance.created_at = instance.updated_at = now
    tenant_id = instance.tenant_id
    sent = placed and due.sendable_at_start(tenant_id, now)
    due.due_from_start(instance, now, sent=sent)
    instance.last_seq = 0  # record_event numbers the first event
    rows.insert(instance)
    record_event(instance, "instance.status", status=instance.status)
    notices.announce(instance.pk, instance.tenant_id, instance.status)
    send_after_commit(instance)


MADE, DRY, LISTENED = "made", "dry", "listened"  # what start_in_one_statement did


def start_with_one_statement(
    instance: Instance, entry: AuditLog | None, placed: bool, rate: bool
) -> bool:
    """The start as one statement; when this thread's usage row is dry (a tenant's first
    start, or its allowance used up), a count outside the caller's transaction, then the
    statement again. False when the transaction path must start it: a webhook listens
    for `instance.queued`, the start is inside a caller's transaction, or the room the
    count shared out was taken meanwhile. QuotaExceeded when the count refuses it.

    A count in a transaction of its own costs a tenant's first start a few queries
    instead of the transaction path's ORM-built ones (some 20 ms of CPU, bench/README.md)."""
    made = start_in_one_statement(instance, entry, placed)
    if made != DRY or connection.in_atomic_block:
        return made == MADE
    quotas.count_ahead(instance.tenant, rate=rate)
    return start_in_one_statement(instance, entry, placed) == MADE


def start_in_one_statement(
    instance: Instance, entry: AuditLog | None = None, placed: bool = False
) -> str:
    """create_instance and quotas.take_start as one PostgreSQL statement, with the audit
    `entry` if any: MADE; else nothing is stored or locked, and it says why: DRY, this
    thread's usage row has no allowance left (a count must come first), or LISTENED, a
    webhook of the tenant wants `instance.queued` (asked in the statement: a round trip
    less per start), and the transaction path must start it.

    One statement commits on its own: no BEGIN and COMMIT round trips, and the usage
    row is locked only while PostgreSQL runs it and flushes its commit, never while
    this process gets round to sending the next statement. `placed` (may_send_itself):
    it also marks the instance as sent when a fill would send it (due.start_place_sql),
    so that most starts need no fill statement after their commit.
    """
    now = timezone.now()
    instance.created_at = instance.updated_at = now
    # Sent if the statement finds a place (CASE in one_statement_start_sql), else NULL.
    due.due_from_start(instance, now, sent=placed)
    instance.last_seq = 1
    event = ProgressEvent(seq=1, type="instance.status", data={"status": instance.status})
    event.created_at = now
    params = [
        instance.tenant_id,
        quotas.my_shard(),
        instance.tenant_id,  # the webhooks' condition (one_statement_start_sql)
        *(due.place_params(instance.tenant_id, now).values() if placed else ()),
        *rows.values_of(instance),
        *(f.get_db_prep_save(getattr(event, f.attname), connection) for f in announced_fields()),
    ]
    if entry is not None:
        entry.created_at = now
        params += [value for f, value in audited_values(entry) if f.name != "target_id"]
    params.append(instance.tenant_id)  # the webhooks' condition again, for why nothing was made
    # Inside the caller's transaction, a savepoint: a clash of ids must not abort it.
    savepoint = transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext()
    with savepoint, rows.cursor() as cursor:
        cursor.execute(one_statement_start_sql(audited=entry is not None, placed=placed), params)
        pk, sent, listened = cursor.fetchone()
    if pk is None:
        return LISTENED if listened else DRY
    rows.saved(instance, pk)
    due.placed_at_start(instance, sent)
    if entry is not None:
        entry.target_id = str(pk)  # its own id stays unread: nothing uses it
    event.instance = instance
    message = event_message(event, instance.key)
    tenant_id = instance.tenant_id
    transaction.on_commit(lambda: progress.send(pk, tenant_id, [message]))
    send_after_commit(instance)
    return MADE


def send_after_commit(instance: Instance) -> None:
    """After the start's commit: send the instance if its start marked it as sent, else
    fill the tenant (the oldest due first)."""
    tenant_id, pk = instance.tenant_id, instance.pk
    if instance.dispatched_at is None:
        transaction.on_commit(lambda: send_due(tenant_id))
    else:
        transaction.on_commit(lambda: send_started(tenant_id, pk))


def announced_fields():
    return [ProgressEvent._meta.get_field(n) for n in ("seq", "type", "data", "created_at")]


def audited_values(entry: AuditLog) -> list:
    """(field, database value) for each column the audit entry's insert writes."""
    return list(zip(rows.insertable(AuditLog), rows.values_of(entry), strict=True))


@functools.cache
def one_statement_start_sql(*, audited: bool = False, placed: bool = False) -> str:
    """The start; `audited`: with its audit entry, whose target is the instance made,
    so that auditing a start costs no round trip (bench/load.py measures starts).
    `placed`: the new row is marked as sent if the tenant has a place for it (its
    dispatched_at value is kept then, else NULL). Returns the new id and whether it was
    marked, and whether a webhook listens for `instance.queued` (why nothing was made)."""
    qn = connection.ops.quote_name
    queued = notices.event_of(Instance.Status.QUEUED)
    queued_listened = deliveries.listening_condition("%s", f"'{queued}'")
    values = rows.typed_placeholders(Instance)
    place_cte, sources = "", "took"
    if placed:
        place_cte, sources = f", {due.start_place_sql()}", "took, place"
        values = ", ".join(
            f"CASE WHEN place.sendable THEN CAST(%s AS {f.cast_db_type(connection)}) END"
            if f.name == "dispatched_at"
            else f"CAST(%s AS {f.cast_db_type(connection)})"
            for f in rows.insertable(Instance)
        )
    names = ", ".join(qn(f.column) for f in announced_fields())
    casts = ", ".join(f"CAST(%s AS {f.cast_db_type(connection)})" for f in announced_fields())
    audit_cte = ""
    if audited:
        selected = ", ".join(
            "CAST(made.id AS varchar)"
            if f.name == "target_id"
            else f"CAST(%s AS {f.cast_db_type(connection)})"
            for f in rows.insertable(AuditLog)
        )
        audit_cte = (
            f", audited AS (INSERT INTO {qn(AuditLog._meta.db_table)} "
            f"({rows.column_list(AuditLog)}) SELECT {selected} FROM made)"
        )
    return (
        f"WITH took AS ({quotas.take_sql('running', 'starts', unless=queued_listened)})"
        f"{place_cte}, "
        f"made AS (INSERT INTO {qn(Instance._meta.db_table)} ({rows.column_list(Instance)}) "
        f"SELECT {values} FROM {sources} RETURNING id, dispatched_at), "
        f"announced AS (INSERT INTO {qn(ProgressEvent._meta.db_table)} (instance_id, {names}) "
        f"SELECT made.id, {casts} FROM made){audit_cte} "
        "SELECT (SELECT id FROM made), (SELECT dispatched_at IS NOT NULL FROM made), "
        f"CASE WHEN NOT EXISTS (SELECT 1 FROM made) THEN {queued_listened} END"
    )


class FullTenants:
    """When this process last found each tenant without a free place for an activation."""

    # A tenant found full is not filled again by starts for this long: while it is full,
    # the workers fill the places they free and the clock sweeps, so new starts wait in
    # order (oldest first) without each paying for a fill.
    MEMO_SECONDS = 0.1

    def __init__(self):
        self.lock = threading.Lock()
        self.seen: dict[int, float] = {}

    def recently(self, tenant_id: int) -> bool:
        seen = self.seen.get(tenant_id)
        return seen is not None and time.monotonic() - seen < self.MEMO_SECONDS

    def note(self, tenant_id: int, sent: int) -> None:
        with self.lock:
            if sent:
                self.seen.pop(tenant_id, None)
            else:
                self.seen[tenant_id] = time.monotonic()


full_tenants = FullTenants()


def send_started(tenant_id: int, instance_pk: int) -> None:
    """After the commit of a start that marked its instance as sent: send it (no fill:
    the tenant had no older instance due). A lost message is sent again by the clock."""
    full_tenants.note(tenant_id, 1)
    with logs.bound(tenant=tenant_id, instance=instance_pk):
        dispatch.enqueue(instance_pk)


def send_due(tenant_id: int) -> None:
    """After a start or an event commits: send the tenant's oldest due instances to the
    workers, up to its free places (due.fill), unless it was found full a moment ago."""
    if full_tenants.recently(tenant_id):
        return
    full_tenants.note(tenant_id, due.fill(tenant_id))


def workflow_for_start(tenant: Tenant, name: str) -> Workflow | None:
    """The tenant's workflow `name` with its current version, for a start: one statement
    written once (see lib.rows), reading only what a start uses."""
    with rows.cursor() as cursor:
        cursor.execute(workflow_for_start_sql(), [tenant.pk, name])
        row = cursor.fetchone()
    if row is None:
        return None
    values = iter(row)
    workflow = rows.loaded(Workflow, ("id", "name", "current_version_id"), values)
    workflow.tenant = tenant
    version = rows.loaded(CodeVersion, VERSION_FOR_START, values, tenant_id=tenant.pk)
    workflow.current_version = version if version.pk is not None else None
    return workflow


VERSION_FOR_START = ("id", "workflow_id", "sha256", "status", "status_reason")


@functools.cache
def workflow_for_start_sql() -> str:
    qn = connection.ops.quote_name
    select = [
        *rows.columns(Workflow, "w", ("id", "name", "current_version_id")),
        *rows.columns(CodeVersion, "v", VERSION_FOR_START),
    ]
    return (
        f"SELECT {', '.join(select)} FROM {qn(Workflow._meta.db_table)} w "
        f"LEFT JOIN {qn(CodeVersion._meta.db_table)} v ON v.id = w.current_version_id "
        "WHERE w.tenant_id = %s AND w.name = %s"
    )


def current_version_of(workflow: Workflow) -> CodeVersion | None:
    """The workflow's current version as stored now, with what a start reads of it: one
    statement written once (a refresh and the relation's fetch were two ORM queries,
    and composing them cost a start more than running them)."""
    with rows.cursor() as cursor:
        cursor.execute(current_version_sql(), [workflow.pk])
        row = cursor.fetchone()
    if row is None:
        return None
    return rows.loaded(CodeVersion, VERSION_FOR_START, iter(row), tenant_id=workflow.tenant_id)


@functools.cache
def current_version_sql() -> str:
    qn = connection.ops.quote_name
    return (
        f"SELECT {', '.join(rows.columns(CodeVersion, 'v', VERSION_FOR_START))} "
        f"FROM {qn(Workflow._meta.db_table)} w "
        f"JOIN {qn(CodeVersion._meta.db_table)} v ON v.id = w.current_version_id "
        "WHERE w.id = %s"
    )


def pick_version(
    workflow: Workflow, version_sha: str | None, *, fresh: bool = False
) -> CodeVersion:
    if workflow.tenant.suspended_at is not None:
        raise StartError(suspension(workflow.tenant))
    if version_sha:
        version = workflow.versions.filter(sha256=version_sha).first()
        if version is None:
            raise StartError(f"workflow {workflow.name!r} has no version {version_sha}")
    else:
        if not fresh:
            # Read it afresh: a caller's Workflow object may predate the latest upload.
            workflow.current_version = current_version_of(workflow)
        version = workflow.current_version
        if version is None:
            raise StartError(f"workflow {workflow.name!r} has no code yet")
    if not version.may_run:
        raise StartError(version.refusal())
    return version


class Sent(NamedTuple):
    event: Event
    matched: bool  # a step of the instance was waiting for its type
    ended: str  # the ended instance's status, else ""

    def detail(self) -> str:
        type_ = self.event.type
        if self.ended:
            return f"the instance has ended ({self.ended}): nothing will consume the event"
        if self.matched:
            return f"the step waiting for {type_!r} receives it"
        return f"stored: no step waits for {type_!r} now; the next wait for it receives it"


@transaction.atomic
def send_event(
    instance: Instance,
    type_: str,
    payload=None,
    *,
    rate: bool = False,
    actor: dict | None = None,
) -> Sent:
    """Store an event for the instance; a step waiting for its type is run now.
    `rate`: hold it to the tenant's events per minute quota (raises QuotaExceeded).
    `actor` (tenants.audit.request_actor's): audit it as `event.sent`."""
    tenant = instance.tenant
    instance = Instance.objects.select_for_update().get(pk=instance.pk)
    event = Event.objects.create(instance=instance, type=type_, payload=payload)
    waiting = not instance.is_terminal and (
        instance.steps.filter(
            status=Step.Status.WAITING, kind=Step.Kind.WAIT_FOR_EVENT, event_type=type_
        ).exists()
    )
    if waiting and instance.status in Instance.ACTIVE_STATUSES:
        # due.make_due, with the fill after the commit skipped while the tenant is full.
        due.make_due_at(instance, timezone.now())
        tenant_id = instance.tenant_id
        transaction.on_commit(lambda: send_due(tenant_id))
    quotas.take_event(tenant, rate=rate)
    if actor is not None:
        audit(
            "event.sent", tenant=tenant, target=instance, type=type_, instance=instance.key, **actor
        )
    return Sent(event, waiting, instance.status if instance.is_terminal else "")


def _locked(instance: Instance) -> Instance:
    return Instance.objects.select_for_update().get(pk=instance.pk)


def _one(instance: Instance):
    return Instance.objects.filter(pk=instance.pk)


@transaction.atomic
def pause(instance: Instance, reason: str = Instance.PauseReason.USER) -> Instance:
    instance = _locked(instance)
    if instance.status not in Instance.ACTIVE_STATUSES:
        raise StateConflict(f"a {instance.status} instance cannot be paused")
    states.pause(instance, reason)
    return instance


@transaction.atomic
def resume(instance: Instance) -> Instance:
    """The tenant's resume, where it stopped: refused (409) while a staff decision holds
    the instance; only staff lift theirs (lift)."""
    instance = _locked(instance)
    if instance.status != Instance.Status.PAUSED:
        raise StateConflict(f"a {instance.status} instance cannot be resumed")
    found = hold_of(instance)
    if found is not None:
        if instance.paused_reason in ("", Instance.PauseReason.USER):
            raise StateConflict(f"the instance cannot run: {found.message}")
        raise StateConflict(
            f"the instance is paused for {instance.paused_reason}, which only staff can "
            f"lift: {found.message}"
        )
    states.unpause(instance)
    return instance


@transaction.atomic
def lift(instance: Instance, reasons: tuple[str, ...]) -> bool:
    """Staff lift a pause of theirs (one of `reasons`): the instance resumes, or, while
    another decision still holds it, stays paused for that one. True if it resumed."""
    instance = _locked(instance)
    if instance.status != Instance.Status.PAUSED or instance.paused_reason not in reasons:
        return False
    found = hold_of(instance)
    if found is not None:
        if found.reason != instance.paused_reason:
            states.repause(_one(instance), reasons, found.reason)
        return False
    states.unpause(instance)
    return True


@transaction.atomic
def terminate(instance: Instance) -> Instance:
    instance = _locked(instance)
    if instance.is_terminal:
        raise StateConflict(f"a {instance.status} instance cannot be terminated")
    states.terminate(instance)
    return instance


# A tenant's controls, by the name the API and the console give them, and what the audit
# log calls each once done.
# Restart and rerun are execution.runs' (they take a step and a version), audited there.
CONTROLS = {"pause": pause, "resume": resume, "terminate": terminate}
CONTROLLED = {
    "pause": "paused",
    "resume": "resumed",
    "terminate": "terminated",
}


@transaction.atomic
def control(instance: Instance, action: str, actor: dict) -> Instance:
    """A tenant's pause, resume or terminate (raises StateConflict or
    QuotaExceeded as each does), audited with who asked in the same transaction."""
    done = CONTROLS[action](instance)
    audit(
        f"instance.{CONTROLLED[action]}",
        tenant=instance.tenant,
        target=done,
        instance=done.key,
        **actor,
    )
    return done
