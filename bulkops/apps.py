from django.apps import AppConfig


class BulkopsConfig(AppConfig):
    name = "bulkops"
    #: Not "Bulk operations": its models are Sessions and Bulk operations, and the
    #: breadcrumb would read "Bulk operations › Bulk operations".
    verbose_name = "Session management"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from bulkops import actions  # noqa: F401  (registers every action)
        from bulkops.engine import queue  # noqa: F401  (the task and its wake-up signal)
        from bulkops.revocation import connect

        connect()  # revoked access closes open WebSockets
