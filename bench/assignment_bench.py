"""What an assignment create costs, in bulk and one by one: prefix-to-location assignments.

    python -m bench.assignment_bench [--locations N] [--prefixes N] [--assigned N]

Assignments (Nautobot's explicit many-to-many through models: a prefix at a location, a VLAN at a
location, ...) join two objects, and Nautobot logs each create as a change of both, each serialised
whole. On a fresh clone of the migrated template (`streamsync_bench_assignments`, dropped at the
end), with `--prefixes` prefixes, `--locations` locations and `--assigned` assignments already
there, batches of 10, 100 and 500 new `ipam.prefixlocationassignment` creates go through
`SyncEngine.apply` as a worker applies them, once with the bulk path and once without
(`bulk=False`), alternated, each batch rolled back afterwards so that every run starts from the
same rows. Every run is checked: every create made, and one ObjectChange per
joined object. Prints one table: creates per second each way and their ratio. This is a benchmark, not a
test: the machine's load moves the figures, the ratios (measured in the same run) are what to
compare.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from bench.common import scratch_database

DB_NAME = "streamsync_bench_assignments"
SOURCE = "ipam"
REPEATS = 3
SIZES = (10, 100, 500)


class _Rollback(Exception):
    pass


def _seed(locations: int, prefixes: int, assigned: int) -> None:
    from django.contrib.contenttypes.models import ContentType
    from nautobot.dcim.models import Location, LocationType
    from nautobot.extras.models import Status
    from nautobot.ipam.models import Namespace, Prefix, PrefixLocationAssignment

    kind = LocationType.objects.create(name="bench-site")
    kind.content_types.add(ContentType.objects.get_for_model(Prefix))
    active = Status.objects.get(name="Active")
    places = Location.objects.bulk_create(
        [Location(name=f"site-{n:03d}", location_type=kind, status=active) for n in range(locations)]
    )
    namespace = Namespace.objects.create(name="bench")
    nets = Prefix.objects.bulk_create(
        [Prefix(prefix=f"10.{n // 256}.{n % 256}.0/24", namespace=namespace, status=active) for n in range(prefixes)]
    )
    PrefixLocationAssignment.objects.bulk_create(
        [PrefixLocationAssignment(prefix=nets[n], location=places[n % locations]) for n in range(assigned)]
    )


def _events(start: int, size: int, prefixes: int, locations: int) -> list[Any]:
    """`size` assignments not made yet: prefix n at location n + 1 (the seed put prefix n at location n)."""
    from streamsync.contract.envelope import Event, Op

    out = []
    for n in range(start, start + size):
        prefix = n % prefixes
        key: dict[str, str | int | bool | None] = {
            "prefix__namespace__name": "bench",
            "prefix__network": f"10.{prefix // 256}.{prefix % 256}.0",
            "prefix__prefix_length": 24,
            "location__name": f"site-{(prefix + 1 + n // prefixes) % locations:03d}",
        }
        out.append(Event(source=SOURCE, model="prefixlocationassignment", op=Op.UPSERT, key=key, attrs={}))
    return out


def _run(engine: Any, events: list[Any]) -> float:
    """One batch, timed, checked and rolled back."""
    from django.db import transaction
    from nautobot.extras.models import ObjectChange

    from streamsync.sync.batch import Outcome

    try:
        with transaction.atomic():
            before = ObjectChange.objects.count()
            started = time.perf_counter()
            result = engine.apply(events, source=SOURCE)
            elapsed = time.perf_counter() - started
            outcomes = {o.outcome for o in result.objects}
            if outcomes != {Outcome.CREATED} or len(result.objects) != len(events):
                raise RuntimeError(f"not every assignment was created: {[(o.key, o.reason) for o in result.objects]}")
            # one change of each joined prefix and location (an assignment has no change log of its own)
            joined = {e.key["location__name"] for e in events} | {e.key["prefix__network"] for e in events}
            logged = ObjectChange.objects.count() - before
            if logged != len(joined):
                raise RuntimeError(f"{logged} ObjectChanges for {len(events)} creates joining {len(joined)} objects")
            raise _Rollback
    except _Rollback:
        pass
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--locations", type=int, default=20, help="locations the assignments join")
    parser.add_argument("--prefixes", type=int, default=2_000, help="prefixes the assignments join")
    parser.add_argument("--assigned", type=int, default=2_000, help="assignments there before the batches")
    args = parser.parse_args(argv)

    with scratch_database(DB_NAME):
        from django.apps import apps

        from streamsync.models import builtin_model
        from streamsync.models.derived import derived_model
        from streamsync.sync.engine import SyncEngine
        from streamsync.sync.permissions import set_up_writer
        from streamsync.sync.registry import ModelRegistry

        _seed(args.locations, args.prefixes, args.assigned)
        models = [builtin_model("location"), builtin_model("prefix")]
        registry = ModelRegistry([*models, derived_model(apps.get_model("ipam.prefixlocationassignment"))])
        writer = set_up_writer("streamsync", registry)
        engines = {"bulk": SyncEngine(registry, writer), "one by one": SyncEngine(registry, writer, bulk=False)}
        _run(engines["bulk"], _events(0, 10, args.prefixes, args.locations))  # warm up
        print("| batch | bulk creates/s | one by one creates/s | bulk / one by one |")
        print("| ---: | ---: | ---: | ---: |")
        for size in SIZES:
            times: dict[str, list[float]] = {name: [] for name in engines}
            for repeat in range(REPEATS):
                for name, engine in engines.items():  # alternated: both under the same load
                    times[name].append(_run(engine, _events(repeat * size, size, args.prefixes, args.locations)))
                    print(f"{size} {name}: {times[name][-1]:.2f}s", file=sys.stderr)
            rate = {name: size / statistics.median(seconds) for name, seconds in times.items()}
            ratio = rate["bulk"] / rate["one by one"]
            print(f"| {size} | {rate['bulk']:,.0f} | {rate['one by one']:,.1f} | {ratio:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
