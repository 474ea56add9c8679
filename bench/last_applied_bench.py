"""What recording each key's latest applied event costs a batch, and what `dlq` pays to look letters up.

    python -m bench.last_applied_bench [--rows N]

On a fresh clone of the migrated template (`streamsync_bench_lastapplied`, dropped at the end), the
`LastApplied` table is filled with N rows (default 1,000,000: a large source's keys), then
`streamsync.sync.lastapplied.remember` runs as a batch runs it, inside a transaction, for batches of 1,
100 and 500 keys, half of them already in the table (an update of the row) and half new (an
insert). `newer` then looks up 1,000 letters, as `dlq list` does. Prints one table: median and
95th percentile per call. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

from bench.common import scratch_database

DB_NAME = "streamsync_bench_lastapplied"
AGENT, TOPIC = "streamsync.sync.bench", "streamsync.bench.events"
REPEATS = 40


def _key(n: int) -> str:
    return "vlan:" + json.dumps({"vid": n % 4094 + 1, "vlan_group__name": f"group-{n // 4094}"}, separators=(",", ":"))


def _fill(rows: int) -> None:
    from streamsync.models.bookkeeping import LastApplied

    chunk = 10_000
    for start in range(0, rows, chunk):
        LastApplied.objects.bulk_create(
            [
                LastApplied(agent=AGENT, topic=TOPIC, key=_key(n), partition=n % 3, offset=n)
                for n in range(start, min(rows, start + chunk))
            ]
        )


def _timed(fn: Callable[[int], None], repeats: int) -> list[float]:
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - started)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the table before measuring")
    args = parser.parse_args(argv)

    with scratch_database(DB_NAME):
        from django.db import connection, transaction

        from streamsync.contract.records import Origin
        from streamsync.sync.lastapplied import Lookup, Place, newer, remember

        started = time.perf_counter()
        _fill(args.rows)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE streamsync_lastapplied")
        print(f"filled {args.rows:,} rows in {time.perf_counter() - started:.0f}s", file=sys.stderr)

        fresh = [args.rows]  # keys beyond the filled ones are new

        def batch(size: int) -> Callable[[int], None]:
            def run(i: int) -> None:
                old = [(i * size + j) * 7919 % args.rows for j in range(size - size // 2)]
                new = list(range(fresh[0], fresh[0] + size // 2))
                fresh[0] += size // 2
                records = [(Origin(None, b"", TOPIC, n % 3, 10 * args.rows + n), _key(n)) for n in old + new]
                with transaction.atomic():
                    remember(AGENT, records)

            return run

        rows: list[tuple[str, list[float]]] = []
        for size in (1, 100, 500):
            batch(size)(-1)  # warm up
            rows.append((f"remember, batch of {size}", _timed(batch(size), REPEATS)))
        lookups = [Lookup(AGENT, _key(n * 997 % args.rows), Place(TOPIC, n % 3, 0)) for n in range(1000)]

        def look_up(i: int) -> None:
            newer(lookups)

        rows.append(("newer, 1,000 letters", _timed(look_up, 10)))

        print(f"| call ({args.rows:,} rows in the table) | median ms | p95 ms |")
        print("| --- | ---: | ---: |")
        for name, times in rows:
            p95 = sorted(times)[int(len(times) * 0.95) - 1]
            print(f"| {name} | {statistics.median(times) * 1000:.2f} | {p95 * 1000:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
