"""Create the worker's topics before it subscribes, so its first assignment covers them all.

faust declares topics as it subscribes; a topic created that late may be missing
from the first assignment and then stay unread until the next metadata refresh
(minutes). Creating them first, and waiting until every partition has a leader,
avoids that. Input topics and the changelog must have the configured partition
count (they are co-partitioned by agent id): a mismatch stops the worker with a
sentence saying so.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from kafka.admin import KafkaAdminClient

__all__ = ["TopicSpec", "ensure_topics"]

TopicSpec = Mapping[str, Any]
"""``{"num_partitions": int, "replication_factor": int, "configs": {name: value}}``."""


def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, TopicSpec],
    *,
    copartitioned: Collection[str],
    timeout: float = 60.0,
) -> None:
    """Create the missing ``topics``, wait until all are ready, and check that the
    ``copartitioned`` ones have the partition count of their spec."""
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap.split(","), client_id="intentwatch-worker-admin",
        request_timeout_ms=int(timeout * 1000),
    )
    try:
        existing = set(admin.list_topics())
        missing = {name: dict(spec) for name, spec in topics.items() if name not in existing}
        if missing:  # another worker may create them at the same time: no errors raised
            admin.create_topics(missing, timeout_ms=int(timeout * 1000), raise_errors=False)
        admin.wait_for_topics(list(topics), timeout_ms=int(timeout * 1000))
        found = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(list(topics))}
    finally:
        admin.close()
    for name in copartitioned:
        spec = topics[name]
        if found.get(name) != spec["num_partitions"]:
            raise SystemExit(
                f"Topic {name} has {found.get(name)} partitions but this worker needs "
                f"{spec['num_partitions']}: set INTENTWATCH_PARTITIONS to match it."
            )
