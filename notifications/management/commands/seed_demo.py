"""Demo users, rooms and live topics for `make run`. Safe to run twice."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from chat.services import seed_demo_rooms
from live.services import seed_demo_topics

DEMO_PASSWORD = "demo-pass-123"  # noqa: S105 - demo data for local runs, printed on purpose
DEMO_USERS = [("alice", True), ("bob", False), ("carol", False), ("dave", False)]
DEMO_GROUP = "staff-demo"


class Command(BaseCommand):
    help = "Create demo users, rooms and live topics, and print the demo logins."

    @transaction.atomic
    def handle(self, *args, **options):
        User = get_user_model()
        group, _ = Group.objects.get_or_create(name=DEMO_GROUP)
        for username, is_admin in DEMO_USERS:
            user, created = User.objects.get_or_create(
                username=username, defaults={"email": f"{username}@example.com"}
            )
            if created:
                user.set_password(DEMO_PASSWORD)
            user.is_staff = user.is_superuser = is_admin
            user.is_active = True
            user.save()
            if username in ("alice", "bob"):
                user.groups.add(group)
        rooms = seed_demo_rooms()
        seed_demo_topics()
        self.stdout.write(f"Demo logins (password for all: {DEMO_PASSWORD}):")
        for username, is_admin in DEMO_USERS:
            self.stdout.write(f"  {username}{'  (admin)' if is_admin else ''}")
        self.stdout.write("Chat rooms: " + ", ".join(f"/chat/{room.slug}/" for room in rooms))
        self.stdout.write("Live board: /live/ (public topics stocks.*; `manage.py demo_ticker` moves them)")
