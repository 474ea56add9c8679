"""The Nautobot health page, rendered for a logged-in user: partitions with lag, a recent batch, a dead letter."""

from __future__ import annotations

import asyncio
import time
import uuid
from html.parser import HTMLParser
from typing import Any

import pytest

from streamsync.kafka.admin import TopicSpec, ensure_topics
from streamsync.kafka.clients import produce_raw, producer
from tests.integration.conftest import Stream, wait_for
from tests.integration.health_helpers import vlan_event

pytestmark = pytest.mark.integration

URL = "/plugins/streamsync/health/"


class _Rows(HTMLParser):
    """Table rows carrying data-* attributes, with their cells' text."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[dict[str, str], list[str]]] = []
        self._open = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr" and any(name.startswith("data-") for name, _ in attrs):
            self.rows.append(({k: v or "" for k, v in attrs}, []))
            self._open = True
        elif tag == "td" and self._open:
            self.rows[-1][1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._open = False

    def handle_data(self, data: str) -> None:
        if self._open and self.rows[-1][1]:
            self.rows[-1][1][-1] += data.strip()


def _rows(html: str, attribute: str) -> list[tuple[dict[str, str], list[str]]]:
    parser = _Rows()
    parser.feed(html)
    return [(attrs, cells) for attrs, cells in parser.rows if attribute in attrs]


def test_page_shows_partitions_recent_batches_and_dead_letters(
    page_settings: Stream, start_worker: Any, viewer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.test import Client
    from nautobot.ipam.models import VLAN, VLANGroup

    stream = page_settings
    group = f"hp-{uuid.uuid4().hex[:6]}"
    VLANGroup.objects.create(name=group)
    topic = f"{stream.prefix}.ipam.events"
    asyncio.run(ensure_topics(stream.bootstrap, [TopicSpec(topic, 3)]))
    worker = start_worker("--source", "ipam", "--batch-timeout", "0.2")
    asyncio.run(
        produce_raw(stream.bootstrap, topic, [vlan_event(group, 1), vlan_event(group, 2), (b"poison", b"{oops")])
    )
    wait_for(lambda: VLAN.objects.filter(vlan_group__name=group).count() == 2, 120, "two VLANs", worker)

    client = Client()
    client.force_login(viewer)

    def page() -> str:
        response = client.get(URL)
        assert response.status_code == 200
        return response.content.decode()

    def batches(html: str) -> list[list[str]]:
        """This worker's rows: committed, source, worker, events, created, updated, deleted, unchanged, failed,
        rejected, apply ms, max end-to-end."""
        rows = _rows(html, "data-batch")
        return [cells for a, cells in rows if a["data-worker"].endswith(f":{worker.proc.pid}")]

    healed: list[float] = []

    def batch_shown() -> bool:
        if batches(page()):
            return True
        # Another test session starting clears Nautobot's Redis (and the list with it): one more batch
        # records a summary again. Not before the worker had time to push the first one.
        if time.monotonic() - (healed[-1] if healed else started) > 3:
            asyncio.run(produce_raw(stream.bootstrap, topic, [vlan_event(group, 1)]))
            healed.append(time.monotonic())
        return False

    started = time.monotonic()
    wait_for(batch_shown, 60, "a batch of this worker on the page", worker)
    # The offsets are committed a moment after the batch: wait for a page with every partition at lag 0.
    wait_for(
        lambda: (
            {(a["data-partition"], a["data-lag"]) for a, _ in _rows(page(), "data-partition")}
            == {("0", "0"), ("1", "0"), ("2", "0")}
        ),
        30,
        "three partitions at lag 0 on the page",
        worker,
    )
    html = page()
    assert {a["data-topic"] for a, _ in _rows(html, "data-partition")} == {topic}
    assert "Sync health" in html and f'href="{URL}"' in html  # the app's menu entry
    shown = batches(html)
    assert shown and all(cells[1] == "ipam" for cells in shown), shown
    for cells in shown:  # every event of a batch has one outcome
        assert int(cells[3]) == sum(int(n) for n in cells[4:10]) > 0, cells
    if not healed:
        events, created, rejected = (sum(int(cells[i]) for cells in shown) for i in (3, 4, 9))
        assert (events, created, rejected) == (3, 2, 1), shown
    letters = _rows(html, "data-letter")
    assert [(a["data-code"], cells[1], cells[5]) for a, cells in letters] == [("not_json", "ipam", "poison")]
    assert letters[0][1][6].startswith(f"{topic}[")  # where it came from

    # Kafka unreachable: the page still renders, says so, and still lists the recent batches (from Redis).
    monkeypatch.setenv("STREAMSYNC_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    wait_for(batch_shown, 60, "a batch of this worker on the page without Kafka", worker)
    html = page()
    assert "Kafka unreachable" in html and "cannot reach Kafka at 127.0.0.1:1" in html
    assert not _rows(html, "data-partition") and not _rows(html, "data-letter")
    monkeypatch.setenv("STREAMSYNC_KAFKA_BOOTSTRAP", stream.bootstrap)

    # The worker stops; two more events wait on partition 1, and the page says how long the oldest has.
    assert worker.stop() == 0
    lag_before = {a["data-partition"]: int(a["data-lag"]) for a, _ in _rows(page(), "data-partition")}

    async def two_on_partition_1() -> None:
        async with producer(stream.bootstrap) as client:
            for key, value in (vlan_event(group, 3), vlan_event(group, 4)):
                await (await client.send(topic, value, key=key, partition=1))

    asyncio.run(two_on_partition_1())
    time.sleep(1.0)
    waiting = {a["data-partition"]: (int(a["data-lag"]), cells[4]) for a, cells in _rows(page(), "data-partition")}
    assert waiting["1"][0] == lag_before["1"] + 2 and waiting["1"][1].endswith("s"), waiting
    assert float(waiting["1"][1].rstrip("s")) >= 1.0, waiting
    assert waiting["0"][0] == lag_before["0"] and waiting["2"][0] == lag_before["2"], waiting
    if not healed:
        assert waiting["0"] == (0, "-") and waiting["2"] == (0, "-"), waiting


def test_page_needs_a_login_and_the_permission(page_settings: Stream) -> None:
    from django.contrib.auth import get_user_model
    from django.test import Client

    anonymous = Client().get(URL)
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]
    client = Client()
    client.force_login(get_user_model().objects.create_user(username=f"nobody-{uuid.uuid4().hex[:6]}"))
    assert client.get(URL).status_code == 403
