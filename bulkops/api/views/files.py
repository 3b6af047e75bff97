"""What the API answers as a file: an export's download and an operation's completion
report. Either is the user's own (someone else's: 404) and never cached."""

from __future__ import annotations

from django.http import FileResponse, StreamingHttpResponse
from rest_framework.exceptions import NotFound
from rest_framework.request import Request

from bulkops import selectors
from bulkops.api import serializers as s
from bulkops.api.exceptions import Gone
from bulkops.api.views import schema
from bulkops.api.views.base import CONTENT_TYPES, FileView, private_file
from bulkops.engine import operation_report, report_filename
from bulkops.exceptions import OperationConflict
from bulkops.exports.storage import export_path, file_state
from bulkops.representations import status_url


def served_over_asgi(request: Request) -> bool:
    """Whether Django's request came in over ASGI (only an ``ASGIRequest`` carries the
    connection's ``scope``; DRF's request reads through to it): a streamed answer is
    then served from an async iterator."""
    return getattr(request, "scope", None) is not None


@schema.DOWNLOAD
class DownloadView(FileView):
    def get(self, request: Request, filename: str) -> FileResponse:
        operation = selectors.export_operation_for_download(user=request.user, filename=filename)
        state = file_state(operation)
        if state == "expired":
            raise Gone("This export has expired; run the export again.")
        if state == "pending":
            raise OperationConflict(
                f"The export is not finished yet ({operation.status}); "
                f"poll {status_url(operation.id)}."
            )
        if state != "ready":
            raise NotFound("This export produced no file.")
        ext = filename.rsplit(".", 1)[1]
        response = FileResponse(
            export_path(operation.export_file).open("rb"),
            as_attachment=True,
            filename=filename,
            content_type=CONTENT_TYPES[ext],
        )
        return private_file(response)


@schema.OPERATION_REPORT
class OperationReportView(FileView):
    def get(self, request: Request, operation_id: str) -> StreamingHttpResponse:
        operation = selectors.operation_get_for_user(user=request.user, operation_id=operation_id)
        query = s.ReportQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        fmt, outcome = query.validated_data["format"], query.validated_data.get("outcome")
        pieces = operation_report(
            operation=operation, fmt=fmt, outcome=outcome, asynchronous=served_over_asgi(request)
        )
        response = StreamingHttpResponse(pieces, content_type=CONTENT_TYPES[fmt])
        filename = report_filename(operation, fmt)
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return private_file(response)
