from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from realtime.authentication import apikeys


class Command(BaseCommand):
    help = "Create an API key for /api/publish/*; prints the key, alone on its last line (shown once)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="who or what uses the key")

    def handle(self, *args, **options):
        try:
            row, key = apikeys.create_api_key(name=options["name"])
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.stderr.write(f"API key {row.name!r} created (prefix rk_{row.prefix}_). It is not shown again.")
        self.stdout.write(key)
