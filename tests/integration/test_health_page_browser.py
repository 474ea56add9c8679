"""The health page as a person sees it: headless Chromium, a real Nautobot server, a real worker's data.

One worker, one `nautobot-server runserver` and one user for the module: the browser logs in
through Nautobot's login form, and the same server answers the API as `curl` would and serves
Nautobot's /metrics (NAUTOBOT_METRICS_ENABLED).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.chromium import WINDOW, browser
from tests.integration.conftest import Stream, WorkerProcess, wait_for
from tests.integration.devserver import NautobotServer
from tests.integration.health_helpers import Activity, two_vlans_and_a_dead_letter
from tests.integration.prometheus import parse, value

pytestmark = pytest.mark.integration

PAGE = "/plugins/streamsync/health/"
API = "/api/plugins/streamsync/health/"
# Set to a path (docs/health-page.png) to keep the browser's screenshot there.
SCREENSHOT_TO = os.getenv("STREAMSYNC_SCREENSHOT")

# What a person sees: the visible text, and the visible rows of each table with their cells' text.
SEEN = """(() => {
  const rows = (selector) => [...document.querySelectorAll(selector)]
    .filter((tr) => tr.offsetParent !== null)
    .map((tr) => ({data: {...tr.dataset}, cells: [...tr.cells].map((td) => td.innerText.trim())}));
  return {
    path: location.pathname,
    text: document.body.innerText,
    lag: rows("tr[data-partition]"),
    batches: rows("tr[data-batch]"),
    letters: rows("tr[data-letter]"),
  };
})()"""


@dataclass
class Live:
    """The module's stream, worker activity, server and a user (with password and API token) allowed the page."""

    stream: Stream
    activity: Activity
    server: NautobotServer
    username: str
    password: str
    token: str

    def get(self, path: str, token: str | None = None, accept: str = "application/json") -> tuple[int, bytes]:
        """GET from the server as curl would: status and body."""
        headers = {"Accept": accept}
        if token:
            headers["Authorization"] = f"Token {token}"
        request = urllib.request.Request(self.server.url + path, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()


@pytest.fixture(scope="module")
def live(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A worker that applied two VLANs and dead-lettered one record, and a Nautobot server to look at it."""
    from django.contrib.auth import get_user_model
    from django.contrib.contenttypes.models import ContentType
    from nautobot.users.models import ObjectPermission, Token

    from streamsync.models.bookkeeping import ParkedEvent

    tmp = tmp_path_factory.mktemp("browser")
    tag = uuid.uuid4().hex[:8]
    stream = Stream(bootstrap=kafka_bootstrap, prefix=f"t{tag}", group=f"streamsync-t{tag}")
    workers: list[WorkerProcess] = []

    def start_worker(*args: str) -> WorkerProcess:
        workers.append(WorkerProcess(stream, tmp / "worker.log", *args))
        return workers[-1]

    username, password = f"operator-{tag}", uuid.uuid4().hex
    user = get_user_model().objects.create_user(username=username, password=password)
    permission = ObjectPermission.objects.create(name=f"p-{tag}", actions=["view"])
    permission.users.add(user)
    permission.object_types.add(ContentType.objects.get_for_model(ParkedEvent))
    token = str(Token.objects.create(user=user).key)

    server = NautobotServer({**stream.env(), "NAUTOBOT_METRICS_ENABLED": "true"}, tmp / "nautobot.log")
    try:
        activity = two_vlans_and_a_dead_letter(stream, start_worker)
        server.wait_ready()
        yield Live(stream, activity, server, username, password, token)
    finally:
        server.stop()
        for worker in workers:
            worker.stop()


def _settled(live: Live) -> None:
    """Wait until the API says what the page should show: lag 0, this worker's batches, the dead letter."""
    pid = f":{live.activity.worker.proc.pid}"
    last_nudge = time.monotonic()

    def ready() -> bool:
        nonlocal last_nudge
        status, body = live.get(API, live.token)
        assert status == 200, body
        report = json.loads(body)
        lag_zero = bool(report["lag"]) and all(t["lag"] == 0 for t in report["lag"])
        batches = [b for b in report["batches"] if b["worker"].endswith(pid)]
        if lag_zero and not batches and time.monotonic() - last_nudge > 5:
            live.activity.nudge(live.stream.bootstrap)
            last_nudge = time.monotonic()
        workers = [w for w in report["workers"] if w["worker"].endswith(pid) and w["state"] == "settling"]
        return lag_zero and bool(batches) and bool(workers) and len(report["dead_letters"]) == 1

    wait_for(ready, 90, "lag 0, this worker settling with a batch, the dead letter (API)", live.activity.worker)


def test_a_person_sees_the_lag_recent_batches_and_a_dead_letter(live: Live, tmp_path: Path) -> None:
    _settled(live)

    async def look() -> tuple[dict[str, Any], bytes]:
        async with browser(tmp_path / "profile") as page:
            await page.open(f"{live.server.url}/login/?next={PAGE}")
            await page.js(
                f"document.getElementById('id_username').value = {json.dumps(live.username)};"
                f"document.getElementById('id_password').value = {json.dumps(live.password)};"
                "document.querySelector('button[type=submit]').click();"
            )
            await page.until("Page.loadEventFired")
            return await page.js(SEEN), await page.screenshot()

    seen, png = asyncio.run(look())
    (tmp_path / "health-page.png").write_bytes(png)
    if SCREENSHOT_TO:
        shutil.copyfile(tmp_path / "health-page.png", SCREENSHOT_TO)
    assert seen["path"] == PAGE, seen["text"][:2000]  # logged in, and allowed to see the page
    text = seen["text"]
    for heading in ("Lag: source ipam", "Writing as", "Waiting", "Workers", "Recent batches", "Recent dead letters"):
        assert heading.upper() in text.upper(), (heading, text[:3000])  # card headers are styled in capitals
    assert "Kafka unreachable" not in text and "Not writing" not in text

    topic = live.activity.topic
    ends = live.activity.ends()
    # Lag table: partition, committed, log end, lag, oldest age.
    assert [row["cells"] for row in seen["lag"]] == [
        [str(p), str(ends[p]) if ends[p] else "-", str(ends[p]), "0", "-"] for p in range(3)
    ]
    assert {row["data"]["topic"] for row in seen["lag"]} == {topic}

    # Recent batches: committed, source, worker, events, created, updated, deleted, unchanged, failed, rejected, ...
    mine = [r["cells"] for r in seen["batches"] if r["data"]["worker"].endswith(f":{live.activity.worker.proc.pid}")]
    assert mine and all(cells[1] == "ipam" for cells in mine), seen["batches"]
    for cells in mine:
        assert int(cells[3]) == sum(int(n) for n in cells[4:10]) > 0, cells

    # Recent dead letters: failed at, source, code, attempts, reason, key, from, dead letter.
    assert len(seen["letters"]) == 1, seen["letters"]
    failed_at, source, code, attempts, reason, key, origin, _where = seen["letters"][0]["cells"]
    assert (source, code, attempts, key) == ("ipam", "not_json", "1", "poison")
    assert reason.startswith("not JSON") and origin.startswith(f"{topic}[") and failed_at[:2] == "20"

    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert WINDOW[0] - 40 <= width <= WINDOW[0] and height >= 600, (width, height)  # the whole page


def test_the_api_answers_curl_with_a_token(live: Live) -> None:
    _settled(live)
    assert live.get(API)[0] == 403  # no token
    status, body = live.get(API, live.token)
    report = json.loads(body)
    assert status == 200 and report["group"] == live.stream.group and report["errors"]["kafka"] == ""
    assert [(d["code"], d["key"]) for d in report["dead_letters"]] == [("not_json", "poison")]


def test_nautobot_metrics_carry_the_backlogs(live: Live) -> None:
    status, body = live.get("/metrics/", accept="text/plain")  # as Prometheus asks
    assert status == 200
    samples = parse(body.decode())
    topic = f"{live.stream.prefix}.nautobot.events"
    assert value(samples, "nautobot_streamsync_outbox_backlog_events", topic=topic) == 0
    assert value(samples, "nautobot_streamsync_outbox_oldest_age_seconds", topic=topic) == 0
    assert value(samples, "nautobot_streamsync_parked_events", source="ipam") >= 0
