"""``actions.sql``'s array parameters: ids of the session-id alphabet travel as one
array literal, anything else as a list psycopg quotes (no database needed)."""

from __future__ import annotations

import pytest

from bulkops.actions.sql import plain_array


def test_plain_ids_make_one_array_literal():
    assert plain_array(["a-1", "B_2", "x" * 64]) == "{a-1,B_2," + "x" * 64 + "}"
    assert plain_array(["active", "closed"]) == "{active,closed}"


@pytest.mark.parametrize(
    "values",
    [[], ["a,b"], ["a", "b,c"], [""], ["a", ""], ['a"b'], ["a b"], ["{a}"], ["x" * 65], ["é"]],
)
def test_anything_else_is_not_a_literal(values):
    assert plain_array(values) is None
