"""The product's test fixtures (users, sessions, settings isolation) for the benchmark's
tests, and ``bench``: ``manage.py bulkops_bench`` called in process.

The ``benchmarks`` app is not installed in the test settings (the product runs without
it, as deployed): the command is called through its class, and
``test_app.py`` proves what ``BULKOPS_BENCHMARKS=1`` installs.
"""

import pytest
from django.core.management import call_command

from benchmarks.management.commands import bulkops_bench
from bulkops.tests.conftest import (  # noqa: F401  (fixtures)
    _isolated_exports_and_counters,
    make_session,
    make_user,
    owner,
)


@pytest.fixture
def bench():
    """``bench(**options)``: run ``bulkops_bench`` with these options."""

    def run(**options):
        return call_command(bulkops_bench.Command(), **options)

    return run
