"""streamsync's pages in Nautobot, under /plugins/streamsync/."""

from django.urls import path

from streamsync import views

app_name = "streamsync"

urlpatterns = [
    path("health/", views.HealthView.as_view(), name="health"),
]
