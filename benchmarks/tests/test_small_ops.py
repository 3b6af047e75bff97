"""bulkops_bench --small-ops: the in-process breakdown counts every statement of an
operation in exactly one phase and leaves the engine as it found it (the end-to-end
part starts server and worker processes: it is the benchmark's, not a test's)."""

import pytest

from benchmarks.small_ops import IN_PROCESS_PHASES, in_process_breakdown
from bulkops.engine import executor, operations
from bulkops.models import BulkOperation, Session

pytestmark = pytest.mark.django_db


def test_the_breakdown_runs_real_operations_and_attributes_every_statement(owner, make_session):
    originals = (operations.enqueue_operation, executor._start, executor._chunk)
    made = iter([make_session(owner).pk for _ in range(3)])

    result = in_process_breakdown(
        owner=owner, fresh=lambda n: [next(made) for _ in range(n)], runs=3
    )

    assert Session.objects.filter(status="closed").count() == 3  # the closes really ran
    assert BulkOperation.objects.filter(status="completed").count() == 3
    assert result["hooks_not_found"] == []  # the breakdown still covers this engine
    phases = result["phases"]
    assert set(IN_PROCESS_PHASES) <= set(phases)
    for name in ("create", "enqueue", "start", "chunk", "finalise"):
        assert phases[name]["queries"] > 0, name
    assert sum(p["queries"] for p in phases.values()) == pytest.approx(
        result["queries_per_operation"]
    )
    # The wrappers are gone again.
    assert (operations.enqueue_operation, executor._start, executor._chunk) == originals
