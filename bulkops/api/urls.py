"""Routes of DESIGN.md §5, exactly: POSTs without a trailing slash; GETs answer with or
without one (the form DESIGN writes is in the OpenAPI schema, the other is an alias)."""

from django.urls import path

from bulkops.api import views

app_name = "bulkops-api"


def get_routes(route: str, view, name: str) -> list:
    """``route`` as documented, and its slash/no-slash twin left out of the schema."""
    twin = route[:-1] if route.endswith("/") else f"{route}/"
    return [
        path(route, view.as_view(), name=name),
        path(twin, view.as_view(schema=None)),
    ]


urlpatterns = [
    path("bulk/sessions/validate", views.ValidateView.as_view(), name="validate"),
    path("bulk/sessions/delete", views.DeleteView.as_view(), name="delete"),
    path("bulk/sessions/close", views.CloseView.as_view(), name="close"),
    path("bulk/sessions/archive", views.ArchiveView.as_view(), name="archive"),
    path("bulk/sessions/restore", views.RestoreView.as_view(), name="restore"),
    path("bulk/sessions/export-metadata", views.ExportView.as_view(), name="export"),
    *get_routes("bulk/sessions/info", views.InfoView, "info"),
    *get_routes("bulk/operations/", views.OperationListView, "operation-list"),
    *get_routes("bulk/operations/<str:operation_id>/", views.OperationDetailView, "operation"),
    *get_routes(
        "bulk/operations/<str:operation_id>/status", views.OperationStatusView, "operation-status"
    ),
    *get_routes(
        "bulk/operations/<str:operation_id>/items", views.OperationItemsView, "operation-items"
    ),
    path(
        "bulk/operations/<str:operation_id>/cancel",
        views.OperationCancelView.as_view(),
        name="operation-cancel",
    ),
    path(
        "bulk/operations/<str:operation_id>/retry",
        views.OperationRetryView.as_view(),
        name="operation-retry",
    ),
    *get_routes("sessions/", views.SessionListView, "session-list"),
    *get_routes("sessions/<str:session_id>/", views.SessionDetailView, "session"),
    *get_routes("download/<str:filename>", views.DownloadView, "download"),
]
