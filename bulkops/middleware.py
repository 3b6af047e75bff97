"""Refuse oversized request bodies with a JSON 413 before anything reads them."""

from django.http import JsonResponse

from bulkops.conf import bulkops_settings


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
            request._body = body
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
