"""Background tasks: thin wrappers that call the service (django-tasks, database backend)."""

from django_tasks import task

from bulkops.services import operation_execute


@task()
def run_bulk_operation(operation_id: str) -> str | None:
    """Run (or resume) one bulk operation; return its final status."""
    op = operation_execute(operation_id=operation_id)
    return op.status if op is not None else None
