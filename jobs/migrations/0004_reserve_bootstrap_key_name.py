from django.db import migrations, models

import jobs.models


def rename_stored_bootstrap_keys(apps, schema_editor):
    """A stored key named like the API_KEY setting's key shared its identity: give it a name of its own."""
    ApiKey = apps.get_model("jobs", "ApiKey")
    for key in ApiKey.objects.filter(name__iexact="bootstrap"):
        key.name = f"{key.name}-{key.prefix}"
        key.save(update_fields=["name"])


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0003_job_retry_cancel_permissions"),
    ]

    operations = [
        migrations.AlterField(
            model_name="apikey",
            name="name",
            field=models.CharField(max_length=100, unique=True, validators=[jobs.models.validate_api_key_name]),
        ),
        migrations.RunPython(rename_stored_bootstrap_keys, migrations.RunPython.noop),
    ]
