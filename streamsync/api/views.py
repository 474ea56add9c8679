"""The sync health as JSON, with Nautobot's token authentication and the health page's permission."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from nautobot.core.api.renderers import FormlessBrowsableAPIRenderer, NautobotJSONRenderer
from nautobot.core.api.views import NautobotAPIVersionMixin
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from streamsync.monitor.health import gather
from streamsync.monitor.report import PERMISSION, HealthReport, build
from streamsync.settings import ConfigError, StreamsyncSettings


class CanViewHealth(BasePermission):
    """The health page's permission, for a session or a token: no login, or no permission, is a 403."""

    def has_permission(self, request: Request, view: Any) -> bool:
        """Authenticated and allowed to view streamsync's parked events."""
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm(PERMISSION))


class HealthView(NautobotAPIVersionMixin, APIView):
    """Lag and oldest age per source and partition, outbox and parked backlogs, workers, batches, dead letters."""

    permission_classes = [CanViewHealth]
    # JSON, and the browsable API for a person; no CSV: the report is nested, not a table.
    renderer_classes = [NautobotJSONRenderer, FormlessBrowsableAPIRenderer]

    def get_view_name(self) -> str:
        """The title of the browsable API page."""
        return "Sync health"

    @extend_schema(operation_id="plugins_streamsync_health_retrieve", responses={200: HealthReport})
    def get(self, request: Request) -> Response:
        """The sync health now; a part that cannot be read is empty, with the reason under `errors`.

        Reads Kafka (within 8 s), Redis and the database synchronously, as the page does.
        """
        try:
            settings = StreamsyncSettings.load()
        except ConfigError as error:
            return Response({"detail": str(error)}, status=503)
        return Response(build(gather(settings), settings.metrics_interval).model_dump(mode="json"))
