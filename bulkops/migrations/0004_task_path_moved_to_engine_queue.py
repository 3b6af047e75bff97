"""The task moved from ``bulkops.tasks`` to ``bulkops.engine.queue``: queued rows of the
old path would no longer import, so they are pointed at the new one."""

from django.db import migrations

OLD = "bulkops.tasks.run_bulk_operation"
NEW = "bulkops.engine.queue.run_bulk_operation"


def forwards(apps, schema_editor):
    DBTaskResult = apps.get_model("django_tasks_database", "DBTaskResult")
    DBTaskResult.objects.filter(task_path=OLD).update(task_path=NEW)


def backwards(apps, schema_editor):
    DBTaskResult = apps.get_model("django_tasks_database", "DBTaskResult")
    DBTaskResult.objects.filter(task_path=NEW).update(task_path=OLD)


class Migration(migrations.Migration):
    dependencies = [
        ("bulkops", "0003_leaner_item_and_session_indexes"),
        ("django_tasks_database", "0021_conditional_partial_index_ordering"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
