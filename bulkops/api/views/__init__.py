"""The bulk API's views, by resource: ``actions`` (validate, one endpoint per action,
info), ``operations``, ``sessions`` and ``files`` (download, report); their OpenAPI
declarations are ``schema``'s. Thin: each parses its input, makes one engine or
selector call and shapes the answer."""

from bulkops.api.views.actions import ActionView, InfoView, ValidateView, action_view
from bulkops.api.views.files import DownloadView, OperationReportView
from bulkops.api.views.operations import (
    OperationCancelView,
    OperationCommandView,
    OperationDetailView,
    OperationFollowUpView,
    OperationItemsView,
    OperationListView,
    OperationPauseView,
    OperationResumeView,
    OperationRetryView,
    OperationStatusView,
    OperationUndoView,
)
from bulkops.api.views.sessions import SessionDetailView, SessionListView

__all__ = [
    "ActionView",
    "DownloadView",
    "InfoView",
    "OperationCancelView",
    "OperationCommandView",
    "OperationDetailView",
    "OperationFollowUpView",
    "OperationItemsView",
    "OperationListView",
    "OperationPauseView",
    "OperationReportView",
    "OperationResumeView",
    "OperationRetryView",
    "OperationStatusView",
    "OperationUndoView",
    "SessionDetailView",
    "SessionListView",
    "ValidateView",
    "action_view",
]
