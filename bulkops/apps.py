from django.apps import AppConfig


class BulkopsConfig(AppConfig):
    name = "bulkops"
    verbose_name = "Bulk operations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django_tasks.signals import task_enqueued

        from bulkops import actions  # noqa: F401  (registers every action)
        from bulkops.wakeup import on_task_enqueued

        task_enqueued.connect(on_task_enqueued, dispatch_uid="bulkops.wakeup")
