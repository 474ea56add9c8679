"""REST API routes, found by Nautobot's app loader and mounted under /api/plugins/streamsync/."""

from django.urls import path
from nautobot.apps.api import APIRootView

from streamsync.api.views import HealthView

urlpatterns = [
    # The app's API root, listed under /api/plugins/ as every app's is.
    path("", APIRootView.as_view(api_root_dict={"health": "health"}, name="streamsync"), name="api-root"),
    path("health/", HealthView.as_view(), name="health"),
]
