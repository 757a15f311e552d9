from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from tenants.models import Membership, Quota, Tenant
from tenants.tokens import create_token


class Command(BaseCommand):
    help = "Create a tenant (or reuse an existing SLUG); optionally add an owner and make a token."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", help="display name (default: the slug)")
        parser.add_argument("--owner", metavar="USERNAME", help="an existing user to make owner")
        parser.add_argument(
            "--token",
            metavar="TOKEN_NAME",
            help="create an API token with this name; printed alone on the last line",
        )

    def handle(self, *args, slug, name=None, owner=None, token=None, **options):
        with transaction.atomic():
            tenant, created = Tenant.objects.get_or_create(
                slug=slug, defaults={"name": name or slug}
            )
            if name and tenant.name != name:
                tenant.name = name
                tenant.save(update_fields=["name"])
            Quota.objects.get_or_create(tenant=tenant)
            if owner:
                user = get_user_model().objects.filter(username=owner).first()
                if user is None:
                    raise CommandError(f"--owner: no user named {owner!r}")
                Membership.objects.update_or_create(
                    tenant=tenant, user=user, defaults={"role": Membership.Role.OWNER}
                )
        self.stdout.write(f"{'created' if created else 'reused'} tenant {tenant.slug}")
        if token:
            _, raw = create_token(tenant, token)
            self.stdout.write(raw)
