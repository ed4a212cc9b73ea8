"""Retention (tracking/services/retention.py): when a message's content was deleted, and an
index of the messages whose content is still kept, oldest first. On a large PostgreSQL table
the index build holds writes for its duration: see docs/operations.md."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('tracking', '0013_delivery_transport'),
    ]

    operations = [
        migrations.AddField(
            model_name='message',
            name='content_purged_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name='message',
            index=models.Index(condition=models.Q(('content_purged_at__isnull', True)), fields=['receive_date'], name='msg_content_kept'),
        ),
    ]
