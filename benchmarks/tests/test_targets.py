"""The targets a report is held to: which figure each reads, and when it applies."""

from benchmarks.targets import evaluate_targets, small_ops_targets


def _row(action: str, batch: int, *, naive: float, raw: float) -> dict:
    return {
        "action": action,
        "label": action.replace("_", " "),
        "batch": batch,
        "engine_processing": {"median": 60_000.0},
        "ratios": {"engine_vs_naive": naive, "engine_vs_raw": raw},
    }


def _data(statistics: str) -> dict:
    return {
        "options": {"statistics": statistics},
        "latency": {},
        "throughput": [
            _row("close", 1000, naive=35.0, raw=0.7),
            _row("close", 10_000, naive=80.0, raw=0.75),
            _row("soft_delete", 1000, naive=25.0, raw=0.6),
            _row("soft_delete", 10_000, naive=90.0, raw=0.85),
        ],
    }


def test_write_path_targets_apply_only_with_production_statistics():
    found = {t["target"]: t for t in evaluate_targets(_data("production"))}
    assert found["close, 1,000, production-like statistics: vs per-row save()"]["met"] is True
    assert found["close, 1,000, production-like statistics: vs raw SQL"]["met"] is True
    assert found["close, 10,000, production-like statistics: vs raw SQL"]["met"] is False
    assert (
        found["soft delete, 1,000, production-like statistics: vs per-row save()"]["met"] is False
    )
    assert found["soft delete, 1,000, production-like statistics: vs raw SQL"]["met"] is False
    assert found["soft delete, 10,000, production-like statistics: vs raw SQL"]["met"] is True

    as_found = [t["target"] for t in evaluate_targets(_data("as-found"))]
    assert not [t for t in as_found if "production-like" in t]


def test_small_operation_targets_read_the_one_worker_one_session_cell():
    cells = [
        {"workers": 2, "sessions": 1, "operations_per_second": 150.0, "latency": {"p50_ms": 20}},
        {"workers": 1, "sessions": 1, "operations_per_second": 90.0, "latency": {"p50_ms": 25}},
    ]
    rate, p50 = small_ops_targets({"end_to_end": cells})
    assert (rate["value"], rate["met"]) == (90.0, False)
    assert (p50["value"], p50["met"]) == (25, True)
    assert small_ops_targets({"end_to_end": cells[:1]}) == []
    two = small_ops_targets({"end_to_end": [{**cells[1], "servers": 2}]})[0]
    assert two["target"] == "one-session operations per second, 1 worker, 2 servers"
