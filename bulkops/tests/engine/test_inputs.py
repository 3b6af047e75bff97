"""One rule per input (``engine.inputs``): the failure threshold and each key of a
selection filter are decided by one rule, which the API's serializer, the ``bulk``
command and the engine itself all call — so all three accept the same values and
refuse the rest with the same sentence."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from bulkops.api.serializers import ActionInputSerializer, SelectionFilterSerializer
from bulkops.engine import (
    FILTER_KEYS,
    MAX_FAILURES,
    Selection,
    clean_max_failures,
    filter_from_text,
    operation_create,
)
from bulkops.engine.selection import filter_data
from bulkops.models import BulkOperation
from bulkops.tests.support.api import ACTION_PATHS, post_json, token_client
from bulkops.tests.support.cli import run_bulk

#: Per key: values its rule accepts, and values it refuses (JSON values, as the API
#: and the engine receive them).
FILTER_VALUES = {
    "status": (["active", ["active", "closed"]], ["gone", [], ["active", 5], 5, None]),
    "search": (["", "Alpha 1", " two  spaces "], ["x\x00y", "x" * 201, 5, True]),
    "created_after": (["2024-01-31", "2024-01-31T10:00:00+02:00"], ["2024-02-30", "soon", 5]),
    "created_before": (["2024-01-31"], ["yesterday", "0001-01-01T00:00:00+05:00"]),
    "owner": ([1, 2**63 - 1, "demo", "a.b@c+d-e_f", "42"], [0, -1, True, "", "²", "a b", 2**63]),
    "deleted": ([True, False], ["true", 1, None]),
}


@pytest.mark.parametrize("key", FILTER_VALUES)
def test_each_filter_key_accepts_exactly_what_its_rule_says(key):
    good, bad = FILTER_VALUES[key]
    assert all(FILTER_KEYS[key].problem(value) is None for value in good)
    assert all(FILTER_KEYS[key].problem(value) == FILTER_KEYS[key].message for value in bad)


def test_the_api_filter_has_one_field_per_key_of_the_engine():
    assert list(SelectionFilterSerializer().fields) == list(FILTER_KEYS)


@pytest.mark.parametrize("key", FILTER_VALUES)
def test_the_api_and_the_engine_refuse_a_bad_filter_value_with_the_rule_s_sentence(key):
    for value in FILTER_VALUES[key][1]:
        if value is None:
            continue  # "no value" is the API's null refusal; the engine ignores the key
        api = SelectionFilterSerializer(data={key: value})
        assert not api.is_valid()
        assert api.errors[key] == [FILTER_KEYS[key].message]
        with pytest.raises(ValidationError) as engine:
            filter_data({key: value})
        assert engine.value.message_dict == {f"filter.{key}": [FILTER_KEYS[key].message]}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("status=active", "active"),
        ("status=active,closed", ["active", "closed"]),
        ("deleted=true", True),
        ("deleted=FALSE", False),
        ("owner=5", "5"),
        ("search=true", "true"),
        ("search=a=b", "a=b"),
        ("search=", ""),
        ("created_after=2024-01-31", "2024-01-31"),
    ],
)
def test_a_command_line_filter_is_read_by_its_key_s_rule(text, value):
    key = text.partition("=")[0]
    assert filter_from_text([text]) == {key: value}


def test_a_command_line_filter_keeps_the_last_value_of_a_key_given_twice():
    assert filter_from_text(["status=active", "status=closed"]) == {"status": "closed"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("text", "json_value"),
    [
        ("status=gone", "gone"),
        ("deleted=maybe", "maybe"),
        ("created_after=yesterday", "yesterday"),
        ("owner=a b", "a b"),
    ],
)
def test_the_api_and_the_command_line_refuse_a_bad_filter_alike(
    owner, make_session, capsys, text, json_value
):
    make_session(owner, id="a1")
    key = text.partition("=")[0]
    message = FILTER_KEYS[key].message
    response = post_json(token_client(owner), ACTION_PATHS["close"], {"filter": {key: json_value}})
    assert response.status_code == 400
    assert response.json() == {"filter": {key: [message]}}
    result = run_bulk(f"bulk close --user owner --filter '{text}'", capsys)
    assert result.code == 2
    assert f"argument --filter: {message}" in result.err
    assert not BulkOperation.objects.exists()


@pytest.mark.parametrize("value", [0, 1, 1_000_000])
def test_max_failures_accepts_zero_to_the_limit(value):
    assert MAX_FAILURES.problem(value) is None
    assert clean_max_failures(value) == value


@pytest.mark.parametrize("value", [-1, 1_000_001, True, "3", 1.0])
def test_max_failures_refuses_anything_else_with_one_sentence(value):
    assert MAX_FAILURES.problem(value) == "Must be an integer from 0 to 1000000."
    with pytest.raises(ValidationError) as engine:
        clean_max_failures(value)
    assert engine.value.message_dict == {"max_failures": [MAX_FAILURES.message]}
    api = ActionInputSerializer(data={"session_ids": ["a1"], "max_failures": value})
    assert not api.is_valid()
    assert api.errors["max_failures"] == [MAX_FAILURES.message]


@pytest.mark.django_db
@pytest.mark.parametrize("text", ["-1", "1000001", "x", "1.5"])
def test_the_command_line_refuses_a_bad_max_failures_with_the_same_sentence(
    owner, make_session, capsys, text
):
    make_session(owner, id="a1")
    result = run_bulk(f"bulk close --user owner --ids a1 --max-failures {text}", capsys)
    assert result.code == 2
    assert f"argument --max-failures: {MAX_FAILURES.message}" in result.err
    assert not BulkOperation.objects.exists()


@pytest.mark.django_db
def test_the_engine_refuses_a_bad_max_failures_from_any_caller(owner, make_session):
    make_session(owner, id="a1")
    with pytest.raises(ValidationError, match="Must be an integer from 0 to 1000000"):
        operation_create(
            user=owner,
            action="close",
            selection=Selection(session_ids=["a1"]),
            max_failures="3",
        )
    assert not BulkOperation.objects.exists()
