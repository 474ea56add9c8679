"""streamsync's configuration: `PLUGINS_CONFIG["streamsync"]` in nautobot_config.py, validated.

Environment variables override the file for what differs per deployment
(see ENV_OVERRIDES), and command-line flags override both.
"""

from __future__ import annotations

import importlib
import os
from datetime import timedelta
from typing import Any

from diffsync import DiffSyncModel
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from streamsync.contract.envelope import describe
from streamsync.contract.topics import NAUTOBOT
from streamsync.kafka.connection import (
    KafkaConfigError,
    KafkaConnection,
    KafkaSecurity,
    security_with_env,
)
from streamsync.models import BUILTIN_MODELS, builtin_for, builtin_model
from streamsync.sync.backoff import backoff
from streamsync.sync.customdata import extended
from streamsync.sync.registry import ModelRegistry
from streamsync.targets.base import TargetAdapter

# What differs per deployment can come from the environment and wins over nautobot_config.py.
ENV_OVERRIDES = {
    "kafka_bootstrap": "STREAMSYNC_KAFKA_BOOTSTRAP",
    "topic_prefix": "STREAMSYNC_TOPIC_PREFIX",
    "group_id": "STREAMSYNC_GROUP_ID",
    "session_timeout": "STREAMSYNC_SESSION_TIMEOUT",
    "heartbeat_interval": "STREAMSYNC_HEARTBEAT_INTERVAL",
    "metrics_port": "STREAMSYNC_METRICS_PORT",
    "metrics_address": "STREAMSYNC_METRICS_ADDRESS",
    "transaction_idle_timeout": "STREAMSYNC_TRANSACTION_IDLE_TIMEOUT",
    "lock_timeout": "STREAMSYNC_LOCK_TIMEOUT",
}


class RetryPolicy(BaseModel):
    """How often and how long to retry a failure that may pass later."""

    max_attempts: int = Field(default=8, ge=1)
    backoff: float = Field(default=1.0, gt=0, description="seconds before the first retry; doubles each attempt")
    backoff_max: float = Field(default=300.0, gt=0)

    def delay(self, attempts: int) -> timedelta:
        """Wait before the next attempt, after `attempts` failed ones."""
        return timedelta(seconds=backoff(attempts, self.backoff, self.backoff_max))


class ConfigError(ValueError):
    """Configuration that cannot work; raised at start-up, never mid-stream."""


class SourceSettings(BaseModel):
    """One remote system whose events streamsync applies to Nautobot."""

    model_config = ConfigDict(extra="forbid")

    # Built-in model names ("vlan"), Nautobot models as app_label.model ("dcim.rack": a built-in model
    # when one covers it, else one derived from Nautobot's metadata), or dotted paths to contrib models.
    models: list[str] = Field(min_length=1)

    def registry(self, custom_data: bool = True) -> ModelRegistry:
        """The models this source's events may write, with custom fields and relationships unless told not to."""
        return _registry(self.models, custom_data)


class TargetSettings(BaseModel):
    """One remote system that Nautobot's changes are written to (docs/targets.md)."""

    model_config = ConfigDict(extra="forbid")

    # Dotted path to a streamsync.targets.TargetAdapter subclass: the user's DiffSync models with CRUD.
    adapter: str
    # Nautobot's models whose changes it receives: built-in names ("vlan") or dotted paths to contrib models.
    models: list[str] = Field(min_length=1)
    # Keyword arguments for the adapter (a path, a URL, ...), given to every batch's instance.
    options: dict[str, Any] = Field(default_factory=dict)

    def registry(self) -> ModelRegistry:
        """Nautobot's models of the events this target receives, with custom fields and relationships."""
        return _registry(self.models)

    def adapter_class(self) -> type[TargetAdapter]:
        """The adapter, checked against `models`: one target model per name, with the same identifiers."""
        adapter = _import(self.adapter, "target adapter")
        if not (isinstance(adapter, type) and issubclass(adapter, TargetAdapter)):
            raise ConfigError(f"{self.adapter!r} is not a streamsync.targets.TargetAdapter subclass")
        for model in self.registry():
            name = model.get_type()
            mine = getattr(adapter, name, None)
            if not (isinstance(mine, type) and issubclass(mine, DiffSyncModel)):
                raise ConfigError(f"target adapter {self.adapter!r} has no DiffSync model for {name!r}")
            if tuple(mine._identifiers) != tuple(model._identifiers):
                raise ConfigError(
                    f"{mine.__name__}._identifiers {tuple(mine._identifiers)} must equal "
                    f"{model.__name__}'s {tuple(model._identifiers)}: events are keyed by them"
                )
            unknown = set(mine._attributes) - set(model._attributes)
            if unknown:
                raise ConfigError(
                    f"{mine.__name__} declares attributes that Nautobot's {name!r} events lack: {sorted(unknown)}"
                )
        return adapter


class StreamsyncSettings(BaseModel):
    """Validated PLUGINS_CONFIG["streamsync"]."""

    # Errors never quote the input: it may hold a Kafka password.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    kafka_bootstrap: str = "127.0.0.1:9092"
    # TLS and SASL towards Kafka (docs/security.md); each key can come from STREAMSYNC_KAFKA_* too.
    kafka_security: KafkaSecurity = Field(default_factory=KafkaSecurity)
    topic_prefix: str = "streamsync"
    group_id: str = "streamsync"
    user: str = "streamsync"
    batch_size: int = Field(default=100, ge=1, le=10_000)
    # The longest a batch keeps taking in events already fetched and queued: a cap, never a wait. A
    # batch is what has arrived by the time the previous one is settled (streamsync/agents/batching.py).
    batch_timeout: float = Field(default=1.0, gt=0, le=60)
    topic_partitions: int = Field(default=3, ge=1)
    topic_replication: int = Field(default=1, ge=1)
    data_dir: str | None = None
    # How soon the group notices a dead worker and hands its partitions on (faust's default is 60 s).
    session_timeout: float = Field(default=30.0, ge=6, le=300)
    heartbeat_interval: float = Field(default=3.0, gt=0, le=60)
    # A worker's batch transaction idle longer than this (the process paused or hung) is ended by
    # PostgreSQL, freeing its partitions' positions for their new owner; 0 never ends one. Keep it
    # above the longest pause a healthy batch makes between statements (a target's slowest write).
    transaction_idle_timeout: float = Field(default=300.0, ge=0, le=86_400)
    # A batch waiting longer than this for a row lock another transaction holds (a user's long edit,
    # a migration) fails and is retried with back-off, shown as a stalled agent; 0 waits without end.
    lock_timeout: float = Field(default=60.0, ge=0, le=86_400)
    # The relay of Nautobot's change events (docs/nautobot-events.md): rows per cycle, seconds between idle looks.
    outbox_batch_size: int = Field(default=500, ge=1, le=10_000)
    outbox_poll_interval: float = Field(default=0.2, gt=0, le=60)
    # Nautobot's /health/ fails once the oldest waiting outbox event is older than this many seconds:
    # the relay is not producing Nautobot's changes to Kafka (no worker, or Kafka refusing them).
    outbox_max_age: float = Field(default=300.0, gt=0)
    # Failures that may pass later (a foreign key whose object has not arrived yet).
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    retry_interval: float = Field(default=1.0, gt=0, le=60, description="seconds between looks for due retries")
    # Prometheus metrics of a worker at http://<metrics_address>:<metrics_port>/metrics (docs/monitoring.md).
    # Port 0 serves none; several workers on one host need a port each.
    metrics_port: int = Field(default=9721, ge=0, le=65535)
    metrics_address: str = "0.0.0.0"  # noqa: S104 - Prometheus scrapes from another host
    metrics_interval: float = Field(default=5.0, ge=0.5, le=300, description="seconds between lag refreshes")
    sources: dict[str, SourceSettings] = Field(default_factory=dict)
    # Nautobot to remote systems. A system can be a source and a target under one name: then its own
    # changes, coming back from Nautobot, are not written to it again.
    targets: dict[str, TargetSettings] = Field(default_factory=dict)

    @field_validator("sources", "targets")
    @classmethod
    def _system_names(cls, systems: dict[str, Any]) -> dict[str, Any]:
        for name in systems:
            if not name or not all(c.isalnum() or c in "-_" for c in name):
                raise ValueError(
                    f"system name {name!r} must be letters, digits, '-' or '_' (it is part of a topic name)"
                )
            if name == NAUTOBOT:
                raise ValueError("'nautobot' is reserved for Nautobot's own change events")
        return systems

    @classmethod
    def load(cls, overrides: dict[str, Any] | None = None) -> StreamsyncSettings:
        """Read Django's PLUGINS_CONFIG (Nautobot must be set up), apply env and explicit overrides."""
        from django.conf import settings

        data = dict(getattr(settings, "PLUGINS_CONFIG", {}).get("streamsync", {}))
        for key, env in ENV_OVERRIDES.items():
            if os.getenv(env):
                data[key] = os.environ[env]
        data["kafka_security"] = security_with_env(data.get("kafka_security"))
        data.update({k: v for k, v in (overrides or {}).items() if v is not None})
        try:
            loaded = cls.model_validate(data)
            loaded.kafka()  # a malformed bootstrap list fails now too
        except ValidationError as error:
            raise ConfigError(f'PLUGINS_CONFIG["streamsync"] is invalid: {describe(error)}') from error
        except ValueError as error:
            raise ConfigError(f'PLUGINS_CONFIG["streamsync"] is invalid: {error}') from error
        return loaded

    def kafka(self) -> KafkaConnection:
        """The Kafka connection: kafka_bootstrap with kafka_security (already merged with the environment)."""
        try:
            return KafkaConnection.of(self.kafka_bootstrap, self.kafka_security)
        except KafkaConfigError as error:
            raise ConfigError(str(error)) from None

    def source(self, name: str) -> SourceSettings:
        """A configured source, or a ConfigError listing the configured ones."""
        try:
            return self.sources[name]
        except KeyError:
            raise ConfigError(f"unknown source {name!r}; configured sources: {sorted(self.sources)}") from None

    def target(self, name: str) -> TargetSettings:
        """A configured target, or a ConfigError listing the configured ones."""
        try:
            return self.targets[name]
        except KeyError:
            raise ConfigError(f"unknown target {name!r}; configured targets: {sorted(self.targets)}") from None


def _registry(names: list[str], custom_data: bool = True) -> ModelRegistry:
    """The models `names` resolve to, with custom data (streamsync/sync/customdata.py) unless told not to.

    Two of one name (`dcim.rack` and a model of yours called rack) are refused.
    """
    try:
        registry = ModelRegistry(resolve_model(name) for name in names)  # a bad configuration fails before the database
        return ModelRegistry(extended(registry)) if custom_data else registry
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(str(error)) from None


def resolve_model(name: str) -> type[DiffSyncModel]:
    """A built-in model by `_modelname`, a Nautobot model by `app_label.model`, or a user's model by dotted path.

    `app_label.model` is the built-in model bound to that Nautobot model when there is one (its hand-tuned
    key and defaults win), else the model derived from Nautobot's metadata (streamsync/models/derived.py).
    """
    if name in BUILTIN_MODELS:
        return builtin_model(name)
    if "." not in name:
        raise ConfigError(
            f"unknown model {name!r}: built-in models are {sorted(BUILTIN_MODELS)}, "
            "or give a Nautobot model as app_label.model (dcim.rack), or a dotted path"
        )
    from streamsync.models.derived import Refused, derived_model, nautobot_model

    orm = nautobot_model(name)
    if orm is not None:
        builtin = builtin_for(orm._meta.label_lower)
        if builtin is not None:
            return builtin_model(builtin)
        try:
            return derived_model(orm)
        except Refused as error:
            raise ConfigError(f"model {name!r}: {error}; no built-in model covers it") from None
    model = _import(name, "model")
    if not (isinstance(model, type) and issubclass(model, DiffSyncModel)):
        raise ConfigError(f"{name!r} is not a DiffSync model class")
    return model


def _import(path: str, what: str) -> Any:
    """The object at dotted `path`, or a ConfigError saying what could not be imported."""
    module_name, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(f"cannot import {what} {path!r}: {error}") from error
