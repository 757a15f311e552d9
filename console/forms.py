"""Console forms: code uploads, starts, events, schedules, triggers, tokens, secrets and
webhooks."""

from __future__ import annotations

import json
from datetime import timedelta

from django import forms
from django.conf import settings
from django.core.validators import RegexValidator
from django.utils import timezone

from execution.models import NAME_PATTERN, Schedule
from execution.schedules import Spec
from execution.storable import json_problem
from tenants.models import Secret
from tenants.secrets import MIN_VALUE_CHARS
from webhooks.models import EVENTS

JSON_HELP = "A JSON object."
NAME_VALIDATOR = RegexValidator(NAME_PATTERN, "letters, digits, '_', '.', '-'")


def parse_json(text: str, *, object_only: bool):
    text = (text or "").strip()
    if not text:
        return {} if object_only else None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise forms.ValidationError(f"not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    if object_only and not isinstance(value, dict):
        raise forms.ValidationError("must be a JSON object, like {}")
    problem = json_problem(value)
    if problem is not None:
        raise forms.ValidationError(f"holds {problem}, which cannot be stored")
    return value


class CodeForm(forms.Form):
    name = forms.CharField(max_length=100, validators=[NAME_VALIDATOR])
    description = forms.CharField(required=False, max_length=10_000)
    code = forms.CharField(required=False, widget=forms.Textarea, strip=False)
    file = forms.FileField(required=False, help_text="Or upload a .py file.")

    def clean(self):
        data = super().clean()
        upload = data.get("file")
        if upload:
            if not upload.name.endswith(".py"):
                raise forms.ValidationError("upload a .py file")
            try:
                data["code"] = upload.read().decode()
            except UnicodeDecodeError as exc:
                raise forms.ValidationError("the file is not UTF-8 text") from exc
        if not data.get("code", "").strip():
            raise forms.ValidationError("write some code or upload a .py file")
        return data


class ObjectPayloadForm(forms.Form):
    """A form with a JSON object `payload`, held to the tenant's payload size."""

    payload = forms.CharField(
        required=False, widget=forms.Textarea, initial="{}", help_text=JSON_HELP
    )

    def __init__(self, *args, payload_limit: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.payload_limit = payload_limit

    def clean_payload(self):
        payload = parse_json(self.cleaned_data["payload"], object_only=True)
        check_size(payload, self.payload_limit, "the payload")
        return payload


class StartForm(ObjectPayloadForm):
    key = forms.CharField(
        required=False,
        max_length=100,
        label="Instance id",
        validators=[RegexValidator(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", "letters, digits, _.:-")],
        help_text="Optional. Starting twice with the same id starts once.",
    )


class EventForm(forms.Form):
    type = forms.CharField(max_length=200, label="Event type")
    payload = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}), help_text="Any JSON value."
    )

    def __init__(self, *args, payload_limit: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.payload_limit = payload_limit

    def clean_payload(self):
        payload = parse_json(self.cleaned_data["payload"], object_only=False)
        check_size(payload, self.payload_limit, "the event payload")
        return payload


class ScheduleForm(ObjectPayloadForm):
    """A schedule as the API's PUT takes it; the cron, every and quota checks are
    execution.schedules', whose errors name these fields."""

    name = forms.CharField(max_length=100, validators=[NAME_VALIDATOR])
    cron = forms.CharField(
        required=False, max_length=200, help_text="5 fields, e.g. 0 3 * * * (03:00 daily)"
    )
    every = forms.CharField(
        required=False, max_length=50, help_text="Or an interval: 90, 5 minutes, 1 hour."
    )
    timezone = forms.CharField(max_length=64, initial="UTC", help_text="For cron.")
    overlap = forms.ChoiceField(
        choices=[
            ("skip", "Skip a fire while the previous instance runs"),
            ("allow", "Start anyway"),
        ],
        initial=Schedule.Overlap.SKIP,
    )
    paused = forms.BooleanField(required=False)

    field_order = ["name", "cron", "every", "timezone", "overlap", "paused", "payload"]

    def spec(self) -> Spec:
        data = self.cleaned_data
        return Spec(
            cron=data["cron"] or None,
            every=data["every"] or None,
            timezone=data["timezone"],
            payload=data["payload"],
            overlap=data["overlap"],
            paused=data["paused"],
        )

    @staticmethod
    def initial_for(schedule: Schedule) -> dict:
        return {
            "name": schedule.name,
            "cron": schedule.cron,
            "every": schedule.every or "",
            "timezone": schedule.time_zone,
            "overlap": schedule.overlap,
            "paused": schedule.paused,
            "payload": json.dumps(schedule.payload, indent=2),
        }


class TriggerForm(forms.Form):
    event_type = forms.CharField(max_length=100, validators=[NAME_VALIDATOR])


SHA256 = RegexValidator(r"^[0-9a-f]{64}$", "the sha256 of a version")


class RestartForm(forms.Form):
    """A restart from the console: from a step's row, or from the start."""

    from_step = forms.IntegerField(required=False, min_value=0, max_value=2**31 - 1)
    version = forms.CharField(required=False, max_length=64, validators=[SHA256])


class RerunForm(StartForm):
    version = forms.CharField(required=False, max_length=64, validators=[SHA256])


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100)
    read_only = forms.BooleanField(required=False, label="Read-only")
    expires_in_days = forms.IntegerField(
        required=False, min_value=1, max_value=3650, label="Expires in (days)"
    )

    def expires_at(self):
        days = self.cleaned_data.get("expires_in_days")
        return timezone.now() + timedelta(days=days) if days else None


def check_size(value, limit: int, what: str) -> None:
    size = len(json.dumps(value))
    if size > limit:
        raise forms.ValidationError(f"{what} is {size} bytes; the limit is {limit} bytes")


class WebhookForm(forms.Form):
    url = forms.CharField(max_length=2000, label="URL", help_text="http:// or https://")
    events = forms.MultipleChoiceField(
        choices=[(e, e) for e in EVENTS], widget=forms.CheckboxSelectMultiple
    )


class SecretForm(forms.Form):
    """A secret's name and value; the value is write-only: never rendered back."""

    name = forms.CharField(
        max_length=64,
        validators=[
            RegexValidator(Secret.NAME_PATTERN, "Capital letters, digits and _; not a digit first.")
        ],
    )
    value = forms.CharField(
        min_length=MIN_VALUE_CHARS,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
    )

    def clean_value(self) -> str:
        value = self.cleaned_data["value"]
        limit = settings.STEPWELL_MAX_SECRET_BYTES
        if len(value.encode("utf-8", "surrogatepass")) > limit:
            raise forms.ValidationError(f"The value is over the limit of {limit} bytes.")
        if "\x00" in value:
            raise forms.ValidationError("The value holds a NUL character.")
        return value


class AuditFilterForm(forms.Form):
    """The audit page's filters, from its query string; each one optional."""

    actor = forms.CharField(
        required=False,
        max_length=150,
        help_text="a user name, or a token's name or prefix",
    )
    action = forms.CharField(
        required=False,
        max_length=60,
        validators=[RegexValidator(r"^[a-z_.]+$", "letters, '_' and '.', like instance.started")],
        help_text="an action, or its start (instance.)",
    )
    since = forms.DateField(required=False, help_text="from this day (UTC)")
    until = forms.DateField(required=False, help_text="to this day, included (UTC)")
    page = forms.IntegerField(required=False, min_value=1, max_value=10_000)

    def clean(self):
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            self.add_error("until", "must not be before since")
        return data
