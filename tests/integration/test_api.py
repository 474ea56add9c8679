"""The REST API under /api/plugins/streamsync/: token authentication, the page's permission, the report as JSON."""

from __future__ import annotations

import socket
import time
import uuid
from typing import Any

import pytest

from streamsync.monitor.report import HealthReport
from tests.integration.conftest import Stream, wait_for
from tests.integration.health_helpers import two_vlans_and_a_dead_letter

pytestmark = pytest.mark.integration

URL = "/api/plugins/streamsync/health/"
T = "<time>"


def _token(user: Any) -> str:
    from nautobot.users.models import Token

    return str(Token.objects.create(user=user).key)


def _get(token: str | None = None, path: str = URL) -> Any:
    from django.test import Client

    headers = {"HTTP_AUTHORIZATION": f"Token {token}"} if token else {}
    return Client().get(path, HTTP_ACCEPT="application/json", **headers)


def _steady(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload with what changes from run to run (clock readings, batch timings) replaced by T."""
    payload = {**payload, "generated_at": T}
    payload["workers"] = [{**w, "reported_at": T} for w in payload["workers"]]
    payload["dead_letters"] = [{**d, "failed_at": T} for d in payload["dead_letters"]]
    payload["batches"] = [
        {**b, "at": T, "batch_id": T, "timings_ms": T, "max_end_to_end_s": T} for b in payload["batches"]
    ]
    return payload


def test_health_needs_a_token_with_the_page_permission(page_settings: Stream, viewer: Any) -> None:
    from django.contrib.auth import get_user_model

    nobody = get_user_model().objects.create_user(username=f"nobody-{uuid.uuid4().hex[:6]}")
    assert _get().status_code == 403
    assert _get("0" * 40).status_code == 403  # a token nobody holds
    assert _get(_token(nobody)).status_code == 403
    assert _get(_token(viewer)).status_code == 200
    # The API root lists the endpoint, as every Nautobot app's does.
    root = _get(_token(viewer), "/api/plugins/streamsync/")
    assert root.status_code == 200 and root.json() == {"health": f"http://testserver{URL}"}, root.content


def test_health_reports_a_real_workers_lag_batches_and_dead_letter(
    page_settings: Stream, start_worker: Any, viewer: Any
) -> None:
    stream = page_settings
    activity = two_vlans_and_a_dead_letter(stream, start_worker)
    token = _token(viewer)

    def payload() -> dict[str, Any]:
        response = _get(token)
        assert response.status_code == 200, response.content
        return dict(response.json())

    last_nudge = time.monotonic()

    def settled() -> bool:
        nonlocal last_nudge
        found = payload()
        lag_zero = bool(found["lag"]) and all(t["lag"] == 0 for t in found["lag"])
        if lag_zero and not found["batches"] and time.monotonic() - last_nudge > 5:
            activity.nudge(stream.bootstrap)
            last_nudge = time.monotonic()
        # All three events recorded, or (the list cleared meanwhile) the nudge's batch.
        recorded = sum(b["events"] for b in found["batches"]) >= 3 or (activity.nudges > 0 and bool(found["batches"]))
        return lag_zero and bool(found["workers"]) and recorded

    wait_for(settled, 60, "lag 0, the worker reported and its batches recorded", activity.worker)
    found = payload()
    HealthReport.model_validate(found)
    poison = activity.keys[2]
    ends = activity.ends()
    expected = {
        "generated_at": T,
        "group": stream.group,
        "topic_prefix": stream.prefix,
        "kafka": f"{stream.bootstrap} (PLAINTEXT)",
        "sources": ["ipam"],
        "lag": [
            {
                "source": "ipam",
                "topic": activity.topic,
                "lag": 0,
                "oldest_age_seconds": None,
                "partitions": [
                    {
                        "partition": p,
                        # A partition without records has nothing committed.
                        "committed_offset": ends[p] or None,
                        "log_end_offset": ends[p],
                        "lag": 0,
                        "oldest_age_seconds": None,
                        "age_unknown": False,
                    }
                    for p in range(3)
                ],
            }
        ],
        "outbox": {
            "topic": f"{stream.prefix}.nautobot.events",
            "count": 0,
            "oldest_age_seconds": 0.0,
            "oldest_created": None,
            "max_attempts": 0,
            "last_error": "",
        },
        "parked": {"ipam": 0},
        "user": "streamsync",
        "writers": [{"source": "ipam", "writing": True, "blocked": "", "missing": [], "reason": ""}],
        "workers": [
            {
                "worker": f"{socket.gethostname()}:{activity.worker.proc.pid}",
                "reported_at": T,
                "state": "settling",
                "stalled": [],
            }
        ],
        "batches": _steady(found)["batches"],  # compared below by their sums: the split into batches may vary
        "dead_letters": [
            {
                "source": "ipam",
                "partition": activity.partition(poison),
                "offset": 0,
                "key": "poison",
                "replayed": False,
                "code": "not_json",
                "reason": "not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
                "failed_at": T,
                "attempts": 1,
                "original_topic": activity.topic,
                "original_partition": activity.partition(poison),
                "original_offset": sum(
                    1 for k in activity.keys[:2] if activity.partition(k) == activity.partition(poison)
                ),
            }
        ],
        "errors": {"kafka": "", "redis": "", "database": "", "writers": ""},
    }
    assert _steady(found) == expected
    batches = [b for b in found["batches"] if b["worker"].endswith(f":{activity.worker.proc.pid}")]
    assert {b["group"] for b in batches} == {stream.group} and {b["source"] for b in batches} == {"ipam"}
    outcomes = ("created", "updated", "deleted", "unchanged", "failed", "rejected")
    for batch in batches:  # every event of a batch has one outcome
        assert batch["events"] == sum(batch[n] for n in outcomes) > 0, batch
    if not activity.nudges:
        assert [sum(b[n] for b in batches) for n in ("events", *outcomes)] == [3, 2, 0, 0, 0, 0, 1]


def test_openapi_schema_describes_the_endpoint(viewer: Any) -> None:
    from django.test import Client

    client = Client()
    client.force_login(viewer)
    started = time.monotonic()
    schema = client.get("/api/swagger.json").json()
    assert time.monotonic() - started < 120
    operation = schema["paths"]["/plugins/streamsync/health/"]["get"]
    assert operation["security"] == [{"cookieAuth": []}, {"tokenAuth": []}]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/HealthReport"
    }
    assert set(schema["components"]["schemas"]["HealthReport"]["properties"]) == set(HealthReport.model_fields)
