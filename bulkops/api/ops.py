"""Operators' endpoints: ``/healthz`` (can this process serve?) and ``/metrics``
(Prometheus text format). Both show aggregates and states only — no user data, no
error text — so they are safe to expose; ``BULKOPS_METRICS_TOKEN`` (when set) guards
``/metrics`` with ``Authorization: Bearer <token>``."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from bulkops.conf import bulkops_settings
from bulkops.engine.queue import queue_stats
from bulkops.selectors import operation_metrics


def _queue_state() -> dict | None:
    """The queue's state (``queue_stats``), or None when the database does not answer:
    reading it is the database check (no separate ``SELECT 1`` round trip)."""
    try:
        return queue_stats()
    except Exception:
        return None


def _redis_state() -> str:
    if not getattr(settings, "REDIS_URL", None):
        return "not_configured"
    try:
        from django_redis import get_redis_connection

        get_redis_connection("default").ping()
        return "ok"
    except Exception:
        return "error"


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database (and Redis, when configured) answer, else 503; with the
    queue's state (how long the oldest task has waited, when a worker last finished
    one: a worker that stopped shows as a growing age)."""
    queue = _queue_state()
    redis = _redis_state()
    healthy = queue is not None and redis != "error"
    body = {
        "status": "ok" if healthy else "unavailable",
        "database": "ok" if queue is not None else "error",
        "redis": redis,
        "queue": queue,
    }
    return JsonResponse(body, status=200 if healthy else 503)


class OperationsCollector:
    """Reads the database on each scrape: every server answers the same (no
    per-process counters to add up)."""

    def collect(self):
        facts = operation_metrics()
        queue = queue_stats()
        by_status = GaugeMetricFamily(
            "bulkops_operations", "Bulk operations by status.", labels=["status"]
        )
        for status, count in facts["operations"].items():
            by_status.add_metric([status], count)
        yield by_status
        yield CounterMetricFamily(
            "bulkops_items_processed",
            "Items processed by retained operations (rate() gives items/s).",
            value=facts["items_processed"],
        )
        yield from _gauges(
            ("bulkops_queue_ready_tasks", "Tasks waiting for a worker.", queue["ready"]),
            ("bulkops_queue_oldest_ready_age_seconds", "Age of the oldest waiting task.",
             queue["oldest_ready_age_seconds"]),
            ("bulkops_worker_last_finished_age_seconds", "Since a worker last finished a task.",
             queue["last_finished_age_seconds"]),
            ("bulkops_oldest_pending_operation_age_seconds", "Age of the oldest pending operation.",
             facts["oldest_pending_age_seconds"]),
            ("bulkops_stalest_heartbeat_age_seconds", "Heartbeat age of the stalest running "
             "operation (its worker beats every chunk).", facts["stalest_heartbeat_age_seconds"]),
        )  # fmt: skip


def _gauges(*specs):
    for name, documentation, value in specs:
        yield GaugeMetricFamily(name, documentation, value=0.0 if value is None else value)


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    token = bulkops_settings.METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return JsonResponse({"detail": "A metrics token is required."}, status=401)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OperationsCollector())
    return HttpResponse(generate_latest(registry), content_type="text/plain; version=0.0.4")
