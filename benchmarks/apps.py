from django.apps import AppConfig


class BenchmarksConfig(AppConfig):
    """The benchmark as a Django app: its commands (``bulkops_bench``, ``seed_scale``),
    no models, no URLs. Installed only on demand (``BULKOPS_BENCHMARKS=1``, see
    project/settings.py): the product never needs it."""

    name = "benchmarks"
    verbose_name = "Benchmarks"
