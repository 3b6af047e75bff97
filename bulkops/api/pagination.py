"""Page-number pagination with a client-chosen page size that is validated, not guessed."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response

from bulkops.counting import EXACT_COUNT_LIMIT, EstimatingPaginator


class Pagination(PageNumberPagination):
    """``?page=N&page_size=M`` (1…1000, default 50): a selection UI may show up to the
    per-operation cap on one page. A bad ``page_size`` is a 400 — not silently the
    default — so a client learns about its mistake."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 1000

    def get_page_number(self, request, paginator):
        # DRF reads an empty ``?page=`` as page 1; it is no page number (404, as DRF
        # answers for any other invalid page).
        if request.query_params.get(self.page_query_param) == "":
            raise NotFound("Invalid page.")
        return super().get_page_number(request, paginator)

    def get_page_size(self, request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        # Digits only, and few of them: int() of thousands of digits is slow, and past
        # 4,300 a ValueError (a 500 if it escaped).
        digits = raw.lstrip("0")
        if (
            not raw.isascii()
            or not raw.isdigit()
            or len(digits) > len(str(self.max_page_size))
            or not 1 <= int(raw) <= self.max_page_size
        ):
            raise ValidationError(
                {"page_size": [f"Must be a whole number from 1 to {self.max_page_size}."]}
            )
        return int(raw)

    def get_schema_operation_parameters(self, view) -> list[dict[str, Any]]:
        return [
            {
                "name": self.page_query_param,
                "required": False,
                "in": "query",
                "description": "A page number (from 1).",
                "schema": {"type": "integer", "minimum": 1},
            },
            {
                "name": self.page_size_query_param,
                "required": False,
                "in": "query",
                "description": f"Results per page (1–{self.max_page_size}, default "
                f"{self.page_size}).",
                "schema": {"type": "integer", "minimum": 1, "maximum": self.max_page_size},
            },
        ]


class SessionPagination(Pagination):
    """The session list's pages: ``count`` is exact for a user's own sessions; for staff
    listing everyone's it is exact up to ``EXACT_COUNT_LIMIT`` (10,000) matches and
    PostgreSQL's planner estimate beyond (``count_is_estimate: true``), so no request
    counts millions of rows. ``next``/``previous`` are exact either way."""

    #: Set per request by the view: may this list's count be an estimate?
    may_estimate = False

    def django_paginator_class(self, object_list, per_page):
        return EstimatingPaginator(object_list, per_page, may_estimate=self.may_estimate)

    def get_paginated_response(self, data) -> Response:
        return Response(
            {
                "count": self.page.paginator.count,
                "count_is_estimate": self.page.paginator.count_is_estimate,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        result = super().get_paginated_response_schema(schema)
        result["properties"]["count"]["description"] = (
            "How many sessions match: exact for your own sessions; for staff listing "
            f"everyone's, exact up to {EXACT_COUNT_LIMIT:,} and an estimate beyond."
        )
        result["properties"] = {
            "count": result["properties"]["count"],
            "count_is_estimate": {
                "type": "boolean",
                "description": "True when `count` is PostgreSQL's estimate, not a count.",
            },
            **{k: v for k, v in result["properties"].items() if k != "count"},
        }
        result["required"] = ["count", "count_is_estimate", "results"]
        return result
