"""Topics streamsync needs: creating the missing ones, refusing a state topic that is not compacted, configs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamsync.kafka.clients import admin_client
from streamsync.kafka.connection import KafkaConnection, as_connection


@dataclass(frozen=True)
class TopicSpec:
    """A topic streamsync needs, with how to create it when missing."""

    name: str
    partitions: int = 3
    replication: int = 1
    compacted: bool = False


class TopicRefused(RuntimeError):
    """An existing topic streamsync must not use as it is (a replay topic that is not compacted); says how to fix it."""


async def partitions(admin: AIOKafkaAdminClient, topics: Iterable[str]) -> list[TopicPartition]:
    """Every partition of `topics` that exist, in order."""
    names = sorted(set(topics) & set(await admin.list_topics()))
    if not names:
        return []
    return sorted(
        (
            TopicPartition(t["topic"], p["partition"])
            for t in await admin.describe_topics(names)
            for p in t["partitions"]
        ),
        key=lambda tp: (tp.topic, tp.partition),
    )


async def ensure_topics(kafka: KafkaConnection | str, topics: Iterable[TopicSpec], *, create: bool = True) -> list[str]:
    """Create the topics that do not exist yet (unless `create` is false); returns the names created.

    An existing topic that must be compacted is checked first: its `cleanup.policy` must include
    `compact`, or TopicRefused. A state topic under retention loses records (objects) as they age,
    and a resync deletes every owned object the state no longer names (docs/resync.md).
    """
    topics = list(topics)
    async with admin_client(kafka) as admin:
        existing = set(await admin.list_topics())
        compacted = sorted({t.name for t in topics if t.compacted and t.name in existing})
        if compacted:
            await _refuse_uncompacted(admin, as_connection(kafka), compacted)
        wanted = [t for t in topics if t.name not in existing] if create else []
        if wanted:
            await admin.create_topics(
                [
                    NewTopic(
                        t.name,
                        t.partitions,
                        t.replication,
                        topic_configs={"cleanup.policy": "compact"} if t.compacted else {},
                    )
                    for t in wanted
                ]
            )
        return [t.name for t in wanted]


async def topic_configs(kafka: KafkaConnection | str, topics: Iterable[str]) -> dict[str, dict[str, str]]:
    """The configuration (name -> value) of each of `topics` that exists."""
    async with admin_client(kafka) as admin:
        names = sorted(set(topics) & set(await admin.list_topics()))
        return await _configs(admin, names) if names else {}


async def _configs(
    admin: AIOKafkaAdminClient, names: list[str], keys: Iterable[str] | None = None
) -> dict[str, dict[str, str]]:
    """The configuration of topics `names` (only `keys`, when given); TopicRefused when one cannot be read."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
    from aiokafka.errors import for_code

    wanted = dict.fromkeys(keys) if keys is not None else None
    resources = [ConfigResource(ConfigResourceType.TOPIC, name, wanted) for name in names]
    configs: dict[str, dict[str, str]] = {}
    for response in await admin.describe_configs(resources):
        # (error_code, error_message, resource_type, resource_name, [(name, value, ...), ...]) in every version.
        for error_code, error_message, _, name, entries in (r[:5] for r in response.resources):
            if error_code:
                reason = error_message or for_code(error_code).__name__
                raise TopicRefused(
                    f"cannot read the configuration of topic {name}: {reason}; streamsync needs DescribeConfigs on it"
                )
            configs[name] = {entry[0]: entry[1] for entry in entries}
    return configs


# What decides whether a topic keeps each key's latest record for good.
RETENTION_CONFIGS = ("cleanup.policy", "retention.ms", "retention.bytes")


async def _refuse_uncompacted(admin: AIOKafkaAdminClient, connection: KafkaConnection, names: list[str]) -> None:
    """TopicRefused for the first of `names` that may lose a key's latest record (or whose settings cannot be read).

    `cleanup.policy` must include `compact`; `compact,delete` passes only with unlimited retention
    (`retention.ms` and `retention.bytes` -1), since its time and size retention drop latest records too.
    """
    configs = await _configs(admin, names, RETENTION_CONFIGS)
    for name in names:
        config = configs.get(name, {})
        policy = config.get("cleanup.policy") or "?"
        policies = {p.strip() for p in policy.split(",")}
        limited = [f"{key}={config.get(key)}" for key in RETENTION_CONFIGS[1:] if config.get(key) != "-1"]
        if "compact" in policies and ("delete" not in policies or not limited):
            continue
        why = f"cleanup.policy={policy}" + (f" with {', '.join(limited)}" if "compact" in policies else "")
        raise TopicRefused(
            f"topic {name} has {why} but must be compacted: retention would drop objects from it and a resync "
            f"would delete them from Nautobot; fix: kafka-configs.sh --bootstrap-server {connection.bootstrap} "
            f"--alter --entity-type topics --entity-name {name} --add-config cleanup.policy=compact"
        )
