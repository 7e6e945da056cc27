"""ApiKey, moved here from the realtime app: the state only, the table exists already."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("realtime", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="ApiKey",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("name", models.CharField(max_length=100)),
                        ("prefix", models.CharField(editable=False, max_length=16, unique=True)),
                        ("hashed_key", models.CharField(editable=False, max_length=64)),
                        ("created_at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                        ("last_used_at", models.DateTimeField(blank=True, editable=False, null=True)),
                        ("revoked_at", models.DateTimeField(blank=True, editable=False, null=True)),
                    ],
                    options={
                        "verbose_name": "API key",
                        "ordering": ["-created_at"],
                        "db_table": "realtime_apikey",
                    },
                ),
            ],
        ),
    ]
