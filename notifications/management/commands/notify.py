from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from notifications import services
from notifications.models import Level


class Command(BaseCommand):
    help = "Send a notification to users, groups or everyone; prints the recipient count."

    def add_arguments(self, parser):
        parser.add_argument("--user", action="append", default=[], metavar="NAME", help="repeatable")
        parser.add_argument("--group", action="append", default=[], metavar="NAME", help="repeatable")
        parser.add_argument("--all", action="store_true", help="every active user")
        parser.add_argument("--title", required=True)
        parser.add_argument("--body", default="")
        parser.add_argument("--level", default=Level.INFO, choices=Level.values)
        parser.add_argument("--url", default="")

    def handle(self, *args, **options):
        if not (options["user"] or options["group"] or options["all"]):
            raise CommandError("name recipients with --user, --group or --all")
        try:
            users = services.users_named(options["user"]) if options["user"] else None
            sent = services.notify(
                users=users,
                groups=options["group"],
                everyone=options["all"],
                **services.content_of(options),
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        if "InMemory" in settings.CHANNEL_LAYERS["default"]["BACKEND"]:
            # Stored, but a server in another process will not hear the push.
            self.stderr.write("REDIS_URL is not set: sockets get this on their next resume, not live.")
        self.stdout.write(str(len(sent)))
