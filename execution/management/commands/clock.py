import signal

from django.core.management.base import BaseCommand

from execution.clock import run_forever


class Command(BaseCommand):
    help = "Run the clock: wake sleeping instances, retry due steps, recover expired leases."

    def add_arguments(self, parser):
        parser.add_argument("--interval", type=float, default=None, help="seconds between sweeps")

    def handle(self, *args, interval=None, **options):
        stopping = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stopping.append(True))
        run_forever(interval, stop=lambda: bool(stopping))
