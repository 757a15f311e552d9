from django.core.management.base import BaseCommand, CommandError

from tenants.secrets import ROTATE_BATCH, SecretsNotConfigured, rotate_all


class Command(BaseCommand):
    help = (
        "Re-encrypt every tenant secret with the first key of STEPWELL_SECRET_KEYS. "
        "Put the new key first, keep the old ones after it, run this, then drop them."
    )

    def add_arguments(self, parser):
        parser.add_argument("--batch", type=int, default=ROTATE_BATCH, help="rows per transaction")

    def handle(self, *args, batch: int, **options):
        if batch < 1:
            raise CommandError("--batch must be at least 1")
        try:
            count, unreadable = rotate_all(batch)
        except SecretsNotConfigured as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"re-encrypted {count} secrets with the first key")
        for row in unreadable:
            self.stderr.write(f"no key decrypts secret {row.name} of tenant {row.tenant_id}")
        if unreadable:
            raise CommandError(
                f"{len(unreadable)} secrets were left as they are: add back the key they "
                f"were encrypted with, or set them again"
            )
