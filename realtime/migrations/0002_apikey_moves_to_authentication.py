"""The ApiKey model now belongs to realtime.authentication; its table stays.

Its content type moves with it, so the permissions granted on API keys and
the admin's history of them carry over.
"""

from django.db import migrations


def move_content_type(apps, schema_editor):
    content_types = apps.get_model("contenttypes", "ContentType")
    if not content_types.objects.filter(app_label="authentication", model="apikey").exists():
        content_types.objects.filter(app_label="realtime", model="apikey").update(app_label="authentication")


def move_content_type_back(apps, schema_editor):
    content_types = apps.get_model("contenttypes", "ContentType")
    content_types.objects.filter(app_label="authentication", model="apikey").update(app_label="realtime")


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("realtime", "0001_initial"),
        ("authentication", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[migrations.DeleteModel(name="ApiKey")]),
        migrations.RunPython(move_content_type, move_content_type_back),
    ]
