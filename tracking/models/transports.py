"""What the delivery transports keep beside messages: ESP webhooks refused, counted."""

from __future__ import annotations

from django.db import models
from django.db.models import F
from django.utils import timezone


class EspWebhookRefusal(models.Model):
    """How many ESP webhook posts were refused, per ESP and reason (a bad signature, an
    unknown message id, a replay): a count to alert on, never a 500 to the ESP."""

    esp = models.CharField(max_length=50)
    reason = models.CharField(max_length=50)
    count = models.PositiveBigIntegerField(default=0)
    last_at = models.DateTimeField(default=timezone.now)
    last_detail = models.CharField(max_length=500, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["esp", "reason"], name="esp_refusal_unique")]

    def __str__(self) -> str:
        return f"{self.esp} {self.reason}: {self.count}"

    @classmethod
    def count_one(cls, *, esp: str, reason: str, detail: str = "") -> None:
        now = timezone.now()
        row, _ = cls.objects.get_or_create(esp=esp[:50], reason=reason[:50])
        cls.objects.filter(pk=row.pk).update(
            count=F("count") + 1, last_at=now, last_detail=detail[:500]
        )
