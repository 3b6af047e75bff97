"""Indexes for tables of millions of sessions: the paths that must not grow with the table.

Non-atomic: on PostgreSQL every index is built with ``CREATE INDEX CONCURRENTLY``, which
does not block writes to a big table while it builds but cannot run inside a
transaction. On other databases the same indexes are created plainly and the trigram
indexes (PostgreSQL's ``pg_trgm``) are skipped.
"""

from django.contrib.postgres.operations import (
    AddIndexConcurrently,
    RemoveIndexConcurrently,
    TrigramExtension,
)
from django.db import migrations, models
from django.db.migrations.operations import AddIndex, RemoveIndex

#: ``search`` is ``icontains`` on title and id; Django writes it on PostgreSQL as
#: ``UPPER("col"::text) LIKE UPPER(%s)``, so the trigram indexes are on that expression.
TRIGRAM_INDEXES = {
    "session_title_trgm": "title",
    "session_id_trgm": "id",
}


class AddIndexConcurrentlyOnPostgres(AddIndexConcurrently):
    """``CREATE INDEX CONCURRENTLY`` on PostgreSQL, a plain ``AddIndex`` elsewhere."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        return AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        return AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)


class RemoveIndexConcurrentlyOnPostgres(RemoveIndexConcurrently):
    """``DROP INDEX CONCURRENTLY`` on PostgreSQL, a plain ``RemoveIndex`` elsewhere."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        return RemoveIndex.database_forwards(
            self, app_label, schema_editor, from_state, to_state
        )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        return RemoveIndex.database_backwards(
            self, app_label, schema_editor, from_state, to_state
        )


class TrigramExtensionOnPostgres(TrigramExtension):
    """``CREATE EXTENSION pg_trgm`` on PostgreSQL; nothing elsewhere, either way."""

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)


def add_trigram_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table = schema_editor.quote_name(apps.get_model("bulkops", "Session")._meta.db_table)
    for name, column in TRIGRAM_INDEXES.items():
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {schema_editor.quote_name(name)} "
            f"ON {table} USING gin "
            f"((UPPER({schema_editor.quote_name(column)}::text)) gin_trgm_ops)"
        )
    # Statistics of the indexed expressions: what lets the planner choose between the
    # trigram index (a rare word) and walking created_at (a common one).
    schema_editor.execute(f"ANALYZE {table}")


def remove_trigram_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in TRIGRAM_INDEXES:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {schema_editor.quote_name(name)}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("bulkops", "0005_operation_pause_and_item_previous_status"),
    ]

    operations = [
        TrigramExtensionOnPostgres(),
        AddIndexConcurrentlyOnPostgres(
            model_name="session",
            index=models.Index(
                fields=["owner", "status", "deleted_at"], name="session_owner_status_del"
            ),
        ),
        RemoveIndexConcurrentlyOnPostgres(model_name="session", name="session_owner_status"),
        AddIndexConcurrentlyOnPostgres(
            model_name="session",
            index=models.Index(
                fields=["created_at", "-id"],
                condition=models.Q(deleted_at__isnull=True),
                name="session_live_created",
            ),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="bulkoperation",
            index=models.Index(fields=["-created_at", "-id"], name="operation_created"),
        ),
        migrations.RunPython(add_trigram_indexes, remove_trigram_indexes),
    ]
