"""Drop the ``varchar_pattern_ops`` copies of the session and operation primary keys.

Django's PostgreSQL backend adds a second btree (``…_like``) to every ``CharField``
primary key, for case-sensitive prefix searches (``id LIKE 'abc%'``). Nothing here
searches so: the admin's and the API's id searches are ``icontains``, answered by the
trigram indexes of migration 0006, and lookups by id use the primary key. Yet every
row written (a session closed, archived or deleted; an operation created) paid for
that index too: one of the session table's eleven, never read. PostgreSQL only.
"""

from django.db import migrations

TABLES = ("bulkops_session", "bulkops_bulkoperation")


def _like_indexes(cursor, table: str) -> list[str]:
    cursor.execute(
        "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
        "AND tablename = %s AND indexdef LIKE %s",
        [table, "%(id varchar_pattern_ops)%"],
    )
    return [name for (name,) in cursor.fetchall()]


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    quote = schema_editor.quote_name
    with schema_editor.connection.cursor() as cursor:
        for table in TABLES:
            for name in _like_indexes(cursor, table):
                schema_editor.execute(f"DROP INDEX IF EXISTS {quote(name)}")


def restore(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    quote = schema_editor.quote_name
    for table in TABLES:
        name = f"{table}_id_like"
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {quote(name)} ON {quote(table)} (id varchar_pattern_ops)"
        )


class Migration(migrations.Migration):
    dependencies = [("bulkops", "0010_operation_chunks")]

    operations = [migrations.RunPython(drop, restore)]
