from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from bulkops.api import ops

urlpatterns = [
    path("admin/", admin.site.urls),
    # Who may read these: SPECTACULAR_SETTINGS["SERVE_PERMISSIONS"] (BULKOPS_API_DOCS).
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's init script from ?script, so nothing is inline
    # (Content-Security-Policy); the assets come from drf-spectacular-sidecar.
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(
            url_name="schema", template_name="drf_spectacular/swagger_ui_csp.html"
        ),
        name="swagger-ui",
    ),
    path("api/", include("bulkops.api.urls")),
    # The browsable API's log in / log out (any user, not only staff as /admin/ is).
    path("api-auth/", include("rest_framework.urls")),
    # Operators': health (for load balancers, orchestrators) and Prometheus metrics.
    path("healthz", ops.healthz, name="healthz"),
    path("metrics", ops.metrics, name="metrics"),
]
