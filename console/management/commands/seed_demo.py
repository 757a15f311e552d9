"""The demo data of `make run`: superuser admin, tenant demo owned by user demo, and
its example workflow. In console, which may import both tenants and execution.

Idempotent. Passwords come from DEMO_ADMIN_PASSWORD / DEMO_USER_PASSWORD, or are
generated once and kept in var/demo_logins.txt (mode 0600), so every run prints
the same logins.
"""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from execution.models import CodeVersion, Workflow
from execution.workflows import CodeRejected, upload_version
from tenants.models import Membership, Quota, Tenant

HELLO_WORKFLOW = """\
def run(event, step):
    name = event.payload.get("name", "world")
    greeting = step.do("greet", lambda: f"hello, {name}")
    step.sleep("pause", "2 seconds")
    shout = step.do("shout", lambda: greeting.upper() + "!")
    return {"greeting": greeting, "shout": shout}
"""

LOGINS = {"admin": "DEMO_ADMIN_PASSWORD", "demo": "DEMO_USER_PASSWORD"}


class Command(BaseCommand):
    help = "Create the demo superuser `admin` and tenant `demo` (owner `demo`); print the logins."

    def handle(self, *args, **options):
        path = Path(settings.VAR_DIR) / "demo_logins.txt"
        passwords = demo_passwords(path)
        with transaction.atomic():
            ensure_user("admin", passwords["admin"], superuser=True)
            owner = ensure_user("demo", passwords["demo"])
            tenant = ensure_demo_tenant(owner)
        uploaded = upload_hello(tenant, self.stderr)
        self.stdout.write(
            "==> demo logins (generated ones are kept in {}):\n"
            "    superuser           admin / {}\n"
            "    tenant demo, owner  demo / {}{}".format(
                path,
                passwords["admin"],
                passwords["demo"],
                "\n    example workflow    hello (two steps and a sleep)" if uploaded else "",
            )
        )


def demo_passwords(path: Path) -> dict[str, str]:
    """The password of each demo login: its env variable, or one generated once and saved."""
    saved = {}
    if path.exists():
        for line in path.read_text().splitlines():
            user, _, password = line.partition(" ")
            if password:
                saved[user] = password
    generated = {user: saved.get(user) or secrets.token_urlsafe(12) for user in LOGINS}
    if generated != saved:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.writelines(f"{user} {password}\n" for user, password in generated.items())
    path.chmod(0o600)
    return {user: os.environ.get(var) or generated[user] for user, var in LOGINS.items()}


def ensure_user(username: str, password: str, *, superuser: bool = False):
    """Create the user, or bring it back to the demo password and flags if it drifted."""
    user, created = get_user_model().objects.get_or_create(username=username)
    changed = created or not user.check_password(password)
    if changed:
        user.set_password(password)
    flags = {"is_active": True, "is_staff": superuser, "is_superuser": superuser}
    for field, value in flags.items():
        if getattr(user, field) != value:
            setattr(user, field, value)
            changed = True
    if changed:
        user.save()
    return user


def ensure_demo_tenant(owner) -> Tenant:
    tenant, _ = Tenant.objects.get_or_create(slug="demo", defaults={"name": "Demo"})
    Quota.objects.get_or_create(tenant=tenant)
    Membership.objects.update_or_create(
        tenant=tenant, user=owner, defaults={"role": Membership.Role.OWNER}
    )
    return tenant


def upload_hello(tenant: Tenant, stderr) -> bool:
    """Upload the example workflow, unless its current version already is this one."""
    current = Workflow.objects.filter(
        tenant=tenant, name="hello", current_version__sha256=CodeVersion.hash_code(HELLO_WORKFLOW)
    )
    if current.exists():
        return True  # uploading again would touch updated_at
    try:
        upload_version(tenant, "hello", HELLO_WORKFLOW, description="Two steps and a sleep.")
    except CodeRejected as e:
        stderr.write(f"the example workflow was rejected: {e.report}")
        return False
    return True
