"""What kind of failure an error is: the one place that decides between retrying, parking and dead-lettering.

    transient   the infrastructure's: retry the whole batch with back-off, never dead-letter,
                never move a position (the partition waits)
    waiting     one object's, that may pass when other objects arrive or go: park the object's
                events and retry them later (streamsync/sync/retry.py)
    permanent   the event's or the data's: dead-letter it with the reason

A transient fault says nothing about the records: the database or Redis went away, a lock or a
statement timed out, a deadlock or serialization failure rolled the transaction back, Kafka did not
acknowledge in time, the database refused the worker's SQL as such (a missing table or privilege:
an operator's fix, not the record's). Retrying the same batch later is right, for as long as it
takes, and moving a position or writing a dead letter because of one would be wrong. Anything else
that makes a whole batch fail is the batch's doing, and the record that causes it is found and
dead-lettered.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from enum import StrEnum

# PostgreSQL errors that say the worker's SQL cannot run here (not that a record is wrong):
# insufficient_privilege, undefined_table, undefined_column, undefined_function.
ENVIRONMENT_SQLSTATES = {"42501", "42P01", "42703", "42883"}


class Fault(StrEnum):
    """What a failure means for the records it touches."""

    TRANSIENT = "transient"
    WAITING = "waiting"
    PERMANENT = "permanent"


class TargetUnavailable(RuntimeError):
    """The remote system cannot be reached or written right now: the whole batch is tried again later.

    Raise it (from `load_keys`, a model's CRUD or `commit`) for trouble that is not the object's fault;
    any other exception from a model's CRUD fails that object alone and dead-letters its events.
    """


class OperatorFault(RuntimeError):
    """Something an operator must put right (a user deactivated, a permission withdrawn).

    Not the records' fault, so retried like an outage while the worker says why; never dead-lettered.
    """


def classify(error: BaseException) -> Fault:
    """The kind of failure `error` is, judged by it and everything it was raised from or during."""
    if is_transient(error):
        return Fault.TRANSIENT
    if is_waiting(error):
        return Fault.WAITING
    return Fault.PERMANENT


def is_waiting(error: BaseException) -> bool:
    """A related object that does not exist yet, or a delete that objects still depend on: it may pass later."""
    from django.core.exceptions import ObjectDoesNotExist
    from django.db.models import ProtectedError, RestrictedError

    return any(isinstance(e, ObjectDoesNotExist | ProtectedError | RestrictedError) for e in causes(error))


def cause(error: BaseException) -> str:
    """Which part of the infrastructure a transient `error` is about, as a short label for logs and metrics.

    `database`, `redis`, `kafka`, `target`, `operator` (something a person must put right), or
    `timeout` (a deadline streamsync set itself, e.g. for Kafka's acknowledgement).
    """
    from aiokafka.errors import KafkaError
    from django.db import DatabaseError
    from redis.exceptions import RedisError

    kinds: list[tuple[type[BaseException] | tuple[type[BaseException], ...], str]] = [
        (OperatorFault, "operator"),
        (TargetUnavailable, "target"),
        (RedisError, "redis"),
        (KafkaError, "kafka"),
        (DatabaseError, "database"),
    ]
    for error_ in causes(error):
        for kind, label in kinds:
            if isinstance(error_, kind):
                return label
        if getattr(error_, "pgcode", None):
            return "database"
    return "timeout" if any(isinstance(e, TimeoutError) for e in causes(error)) else "other"


def operator_fault(error: BaseException) -> OperatorFault | None:
    """The OperatorFault `error` is or was raised from or during, if any."""
    return next((e for e in causes(error) if isinstance(e, OperatorFault)), None)


def reason(error: BaseException) -> str:
    """`error` and its causes in one line: `Type: message ← Type: message`."""
    return " ← ".join(dict.fromkeys(f"{type(e).__name__}: {e}".strip() for e in causes(error)))


def trace(error: BaseException) -> str:
    """`error` with where it was raised (the end of its traceback): enough for a person to find a defect."""
    lines = traceback.format_exception(error)
    return "".join(lines[-12:])[-3500:]


def causes(error: BaseException) -> Iterator[BaseException]:
    """`error` and what it was raised from or during, outermost first, each once."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_transient(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is an infrastructure fault that passes by itself."""
    return any(_transient(cause) for cause in causes(error))


def _transient(error: BaseException) -> bool:
    from aiokafka.errors import KafkaError
    from django.db import InterfaceError, OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    if getattr(error, "pgcode", None) in ENVIRONMENT_SQLSTATES:
        return True
    if isinstance(error, KafkaError):
        return bool(getattr(error, "retriable", False)) or type(error).__name__ in {"KafkaTimeoutError"}
    # OperationalError covers a lost connection, lock_timeout / NOWAIT, statement_timeout, deadlocks and
    # serialization failures (psycopg2's TransactionRollbackError).
    return isinstance(
        error,
        OperationalError
        | InterfaceError
        | RedisConnectionError
        | RedisTimeoutError
        | TargetUnavailable
        | OperatorFault
        | TimeoutError
        | ConnectionError,
    )
