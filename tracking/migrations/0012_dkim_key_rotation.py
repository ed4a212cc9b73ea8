"""DKIM keys rotate with an overlap: several keys a domain (one selector each), a status in
place of the on/off switch (on: active; off: retired), at most one active key a domain."""

from django.db import migrations, models


def status_from_switch(apps, schema_editor):
    DkimKey = apps.get_model("tracking", "DkimKey")
    DkimKey.objects.filter(is_active=True).update(status="active")
    DkimKey.objects.filter(is_active=False).update(status="retired")


def switch_from_status(apps, schema_editor):
    DkimKey = apps.get_model("tracking", "DkimKey")
    DkimKey.objects.update(is_active=False)
    DkimKey.objects.filter(status="active").update(is_active=True)


class Migration(migrations.Migration):
    dependencies = [
        ("tracking", "0011_message_event_counts"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="dkimkey",
            options={"ordering": ["domain", "-created_at"], "verbose_name": "DKIM key"},
        ),
        migrations.AlterField(
            model_name="dkimkey",
            name="domain",
            field=models.CharField(max_length=253),
        ),
        migrations.AlterField(
            model_name="dkimkey",
            name="selector",
            field=models.CharField(max_length=63),
        ),
        migrations.AddField(
            model_name="dkimkey",
            name="status",
            field=models.CharField(
                choices=[
                    ("pending", "Waiting for its DNS record"),
                    ("active", "Signing"),
                    ("retiring", "Replaced: keep its DNS record a while"),
                    ("retired", "Retired: its DNS record may be removed"),
                ],
                default="pending",
                max_length=10,
            ),
        ),
        migrations.AddField(
            model_name="dkimkey",
            name="activated_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="dkimkey",
            name="retire_after",
            field=models.DateTimeField(
                blank=True,
                help_text="A replaced key's DNS record stays published until then.",
                null=True,
            ),
        ),
        migrations.RunPython(status_from_switch, switch_from_status),
        migrations.RemoveField(model_name="dkimkey", name="is_active"),
        migrations.AddConstraint(
            model_name="dkimkey",
            constraint=models.UniqueConstraint(
                fields=("domain", "selector"), name="dkim_key_selector"
            ),
        ),
        migrations.AddConstraint(
            model_name="dkimkey",
            constraint=models.UniqueConstraint(
                condition=models.Q(("status", "active")),
                fields=("domain",),
                name="dkim_key_one_active",
            ),
        ),
    ]
