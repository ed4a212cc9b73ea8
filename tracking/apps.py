from django.apps import AppConfig
from django.core import checks
from django.db.models.signals import post_delete, post_migrate, post_save


class TrackingConfig(AppConfig):
    name = "tracking"
    verbose_name = "Tracking"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        import tracking.checks  # noqa: F401 (registers the system checks)
        import tracking.delivery.esp_events  # noqa: F401 (receives the ESPs' tracking events)
        from tracking import buffering, schedules, worker
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
        # Now, not with the first view's import: that would miss the first request's start in
        # each process, and its tracking hit would be written at once rather than batched.
        buffering.connect_request_signals()
        # The worker's schedules follow the code at every migrate; its resident loops start
        # with each worker process.
        post_migrate.connect(
            schedules.schedules_sync_after_migrate, sender=self, dispatch_uid="schedules-sync"
        )
        post_spawn.connect(worker.loops_start, dispatch_uid="worker-loops-start")
        checks.register(worker.check_worker_count)
