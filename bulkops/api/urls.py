"""The bulk API's routes: POSTs without a trailing slash; GETs answer with or without
one (the documented form is in the OpenAPI schema, the other is an alias)."""

from django.urls import path

from bulkops.actions import selectable_actions
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
    # One POST per registered action (bulkops/actions/<action>.py names its path).
    *(
        path(
            f"bulk/sessions/{action.path()}",
            views.action_view(action).as_view(),
            name=action.action_type,
        )
        for action in selectable_actions().values()
    ),
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
        "bulk/operations/<str:operation_id>/pause",
        views.OperationPauseView.as_view(),
        name="operation-pause",
    ),
    path(
        "bulk/operations/<str:operation_id>/resume",
        views.OperationResumeView.as_view(),
        name="operation-resume",
    ),
    path(
        "bulk/operations/<str:operation_id>/retry",
        views.OperationRetryView.as_view(),
        name="operation-retry",
    ),
    path(
        "bulk/operations/<str:operation_id>/undo",
        views.OperationUndoView.as_view(),
        name="operation-undo",
    ),
    *get_routes(
        "bulk/operations/<str:operation_id>/report", views.OperationReportView, "operation-report"
    ),
    *get_routes("sessions/", views.SessionListView, "session-list"),
    *get_routes("sessions/<str:session_id>/", views.SessionDetailView, "session"),
    *get_routes("download/<str:filename>", views.DownloadView, "download"),
]
