"""Nautobot configuration for the local streamsync stack (development, demo and tests).

Every setting that differs between machines comes from the environment, so the same file
serves the local stack (`deploy/stack.sh`), the containers (`deploy/docker-compose.yml`) and
existing services (set NAUTOBOT_DB_*, NAUTOBOT_REDIS_*, STREAMSYNC_KAFKA_BOOTSTRAP).
"""

import os

# Redis of the local stack unless told otherwise. Nautobot's settings module may have been imported
# (and its Redis URLs computed) before this file runs, so the URLs are computed again below.
os.environ.setdefault("NAUTOBOT_REDIS_HOST", "127.0.0.1")
os.environ.setdefault("NAUTOBOT_REDIS_PORT", os.getenv("STREAMSYNC_REDIS_PORT", "16379"))

from nautobot.core.settings import *  # noqa: F403
from nautobot.core.settings import CACHES, DATABASES
from nautobot.core.settings_funcs import is_truthy, parse_redis_connection

DEBUG = is_truthy(os.getenv("NAUTOBOT_DEBUG", "false"))
ALLOWED_HOSTS = os.getenv("NAUTOBOT_ALLOWED_HOSTS", "*").split(" ")
SECRET_KEY = os.getenv("NAUTOBOT_SECRET_KEY", "streamsync-local-development-key-not-for-production-use-0123456789")

DATABASES["default"].update(
    {
        "HOST": os.getenv("NAUTOBOT_DB_HOST", "127.0.0.1"),
        "PORT": os.getenv("NAUTOBOT_DB_PORT", os.getenv("STREAMSYNC_PG_PORT", "15432")),
        "USER": os.getenv("NAUTOBOT_DB_USER", "nautobot"),
        "PASSWORD": os.getenv("NAUTOBOT_DB_PASSWORD", "nautobot"),
        "NAME": os.getenv("NAUTOBOT_DB_NAME", "nautobot"),
        # A worker outlives database restarts: check a pooled connection before each use.
        "CONN_HEALTH_CHECKS": True,
    }
)

CACHES["default"]["LOCATION"] = parse_redis_connection(redis_database=1)
# One Redis serves every database of the stack (tests run several side by side): cached rows of one
# database must never be read by a process working on another.
CACHES["default"]["KEY_PREFIX"] = DATABASES["default"]["NAME"]
CELERY_BROKER_URL = os.getenv("NAUTOBOT_CELERY_BROKER_URL", parse_redis_connection(redis_database=0))

PLUGINS = ["nautobot_ssot", "streamsync"]

PLUGINS_CONFIG = {
    "nautobot_ssot": {"hide_example_jobs": True},
    "streamsync": {
        "kafka_bootstrap": os.getenv(
            "STREAMSYNC_KAFKA_BOOTSTRAP", f"127.0.0.1:{os.getenv('STREAMSYNC_KAFKA_PORT', '9092')}"
        ),
        "topic_prefix": os.getenv("STREAMSYNC_TOPIC_PREFIX", "streamsync"),
        "sources": {
            # source name -> the DiffSync models its events may write
            "ipam": {"models": ["vlan"]},
        },
    },
}

# Nautobot's own changes of the models the sources above are bound to, as envelope-v1 events on
# <topic_prefix>.nautobot.events: written to streamsync's outbox table with the change, produced
# to Kafka by the relay in `streamsync worker` (docs/nautobot-events.md).
EVENT_BROKERS = {
    "streamsync": {
        "CLASS": "streamsync.outbox.broker.StreamsyncEventBroker",
        # Object changes only (not job or login events): Nautobot serialises a payload per matching broker.
        "TOPICS": {"INCLUDE": ["nautobot.create.*", "nautobot.update.*", "nautobot.delete.*"]},
    },
}
