"""Request guards that answer before any view runs: NUL characters in the URL (400), and
oversized request bodies (413), both as JSON."""

import io

from django.http import JsonResponse

from bulkops.conf import bulkops_settings


class RejectNulMiddleware:
    """A NUL character (``%00``) in the URL is answered before any view runs: in the
    path, 404 (no resource is named with one); in the query string, 400. PostgreSQL
    refuses NUL in text, so passed on to a query it would surface as a 500."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path:
            return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)
        query = request.GET
        if any(
            "\x00" in key or any("\x00" in value for value in query.getlist(key)) for key in query
        ):
            return JsonResponse(
                {"detail": "Query strings may not contain NUL characters.", "code": "invalid"},
                status=400,
            )
        return self.get_response(request)


class RequestSizeLimitMiddleware:
    """Answer 413 with a JSON body for bodies over ``BULKOPS_MAX_REQUEST_BYTES``.

    Checked on Content-Length first (nothing is read), and on the body actually read
    for chunked uploads, so neither Django's plain-text 400 for RequestDataTooBig nor a
    half-read body ever reaches a view.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = bulkops_settings.MAX_REQUEST_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > limit:
            return self.too_large(limit)
        if request.method in ("POST", "PUT", "PATCH") and not length:
            body = request.read(limit + 1) if hasattr(request, "read") else b""
            if len(body) > limit:
                return self.too_large(limit)
            # A chunked body (no Content-Length): now read whole, so say its length, or
            # DRF would parse it as empty.
            request._body = body
            request._stream = io.BytesIO(body)
            request.META["CONTENT_LENGTH"] = str(len(body))
        return self.get_response(request)

    @staticmethod
    def too_large(limit: int) -> JsonResponse:
        return JsonResponse(too_large_body(limit), status=413)


def too_large_body(limit: int) -> dict:
    """The JSON of every 413 (this middleware's, and the API's for RequestDataTooBig)."""
    return {
        "detail": f"Request body too large: the limit is {limit} bytes.",
        "code": "request_too_large",
        "max_bytes": limit,
    }
