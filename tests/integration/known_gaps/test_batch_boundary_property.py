"""KNOWN TO FAIL: the end state over random event sequences still depends on batch boundaries.

Not in the default run (pyproject's norecursedirs); run it on purpose:

    bash deploy/stack.sh up && eval "$(bash deploy/stack.sh env)"
    python -m pytest -p no:cacheprovider tests/integration/known_gaps

Issue 10 point 3 asks that a sequence applied as one batch, as single events and split at random
points end in the same state. Steps (streamsync/sync/steps.py) make it hold within a batch for
the cases in tests/integration/test_batch_boundaries.py, but hypothesis finds sequences where it
does not, because an event parked by one batch is retried by the retry timer, never between a
later batch's events:

- interface eth0 on sw2 and device sw2 wait for location lab (absent); a later batch creates lab
  and deletes it again; as one batch sw2 and eth0 are created in between, split after the first
  two events they are dead-lettered (objects equal, dead letters and ownership differ);
- a VLAN group's update waiting on a location: one batch letters seven events and keeps the
  starting group, one batch per event recreates the group without its location.

Until parked keys take part in later batches (or the property is restated), this is a
reproduction, not a guard.
"""

from __future__ import annotations

import hypothesis
import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamsync.sync.engine import SyncEngine
from tests.integration.test_batch_boundaries import (
    EXAMPLES,
    Sandbox,
    World,
    apply_in_batches,
    assert_same,
    events_of,
    make_engine,
    make_world,
    starting_pks,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine() -> SyncEngine:
    return make_engine()


@pytest.fixture(scope="module")
def world(engine: SyncEngine) -> World:
    return make_world(engine)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_end_state_does_not_depend_on_batch_boundaries(
    engine: SyncEngine, world: World, data: st.DataObject
) -> None:
    events = data.draw(events_of(world), label="events")
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(events) - 1)), max_size=len(events) - 1), label="cuts"))
    with transaction.atomic():
        box = Sandbox(engine, world, starting_pks(engine, world))
        runs = {
            "one batch": box.run(lambda: apply_in_batches(engine, events, [])),
            "one batch per event": box.run(lambda: apply_in_batches(engine, events, range(len(events)))),
            f"batches cut at {cuts}": box.run(lambda: apply_in_batches(engine, events, cuts)),
        }
        transaction.set_rollback(True)
    ends = {name: end for name, (end, _) in runs.items()}
    assert_same(ends)
    retried = runs["one batch per event"][1].retried
    end = ends["one batch"]
    recreated = [key for key, (_, who) in end["objects"].items() if key in box.initial and who != "starting object"]
    hypothesis.event(f"objects recreated: {min(len(recreated), 2)}")
    hypothesis.event(f"starting objects gone: {min(len(set(box.initial) - set(end['objects'])), 3)}")
    for code in sorted({code for _, code in end["dead letters"]}):
        hypothesis.event(f"dead letter {code}")
    hypothesis.event(f"parked events applied by a retry, one batch per event: {min(retried, 2)}")
