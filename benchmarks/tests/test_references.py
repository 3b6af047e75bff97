"""The bench's references: the per-row loop and the raw SQL make the change the engine
makes, so the ratios compare the same work."""

import pytest

from benchmarks import references
from benchmarks.scenarios import SCENARIOS, BenchData
from bulkops.models import Session, SessionExport, SessionStatus

WRITES = [name for name, scenario in SCENARIOS.items() if not scenario.is_export]
EXPORTS = [name for name, scenario in SCENARIOS.items() if scenario.is_export]
EXPECTED = {
    "close": [(SessionStatus.CLOSED, False)] * 10,
    "soft_delete": [(SessionStatus.ACTIVE, True)] * 10,
    "restore": [(SessionStatus.ACTIVE, False)] * 10,
    "archive": [(SessionStatus.ARCHIVED, False)] * 10,
    "hard_delete": [],
}


def _states(ids: list[str]) -> list[tuple[str, bool]]:
    rows = Session.objects.filter(pk__in=ids).order_by("pk")
    return [(s.status, s.deleted_at is not None) for s in rows]


@pytest.fixture
def data(db):
    bench_data = BenchData(sessions=20)
    bench_data.seed()
    return bench_data


@pytest.mark.parametrize("name", WRITES)
def test_naive_and_raw_make_the_scenarios_change(name, data, tmp_path):
    scenario = SCENARIOS[name]
    naive_ids = data.fresh(scenario, 10)
    raw_ids = data.fresh(scenario, 10)

    references.naive(scenario, naive_ids, owner=data.owner, export_dir=tmp_path)
    references.raw(scenario, raw_ids, export_dir=tmp_path)

    assert _states(naive_ids) == _states(raw_ids) == EXPECTED[name]
    if name == "hard_delete":
        assert not SessionExport.objects.filter(session_id__in=naive_ids + raw_ids).exists()


@pytest.mark.parametrize("name", EXPORTS)
def test_export_references_read_the_rows_and_leave_no_file(name, data, tmp_path):
    scenario = SCENARIOS[name]
    ids = data.fresh(scenario, 10)

    references.naive(scenario, ids, owner=data.owner, export_dir=tmp_path)
    references.raw(scenario, ids, export_dir=tmp_path)

    assert _states(ids) == [(SessionStatus.ACTIVE, False)] * 10
    assert list(tmp_path.iterdir()) == []
