from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class TrackingConfig(AppConfig):
    name = "tracking"
    verbose_name = "Tracking"

    def ready(self) -> None:
        # Connects the request_started receiver now: imported with the first view instead, it
        # would miss that first request's start in each process, and that request's tracking
        # hit would be written at once rather than batched.
        import tracking.buffering  # noqa: F401
        from tracking import checks  # noqa: F401 (registers the system checks)
        from tracking.delivery.dkim import dkim_key_cache
        from tracking.models import ApiCredential, DkimKey, Link
        from tracking.services.accounts import credential_cache
        from tracking.services.directory import link_cache

        # Not business logic: this process forgets what it cached of a changed or deleted row.
        caches = ((ApiCredential, credential_cache), (Link, link_cache), (DkimKey, dkim_key_cache))
        for model, cache in caches:
            for signal, event in ((post_save, "saved"), (post_delete, "deleted")):
                uid = f"{model.__name__}-{event}-cache"
                signal.connect(cache.clear, model, weak=False, dispatch_uid=uid)
