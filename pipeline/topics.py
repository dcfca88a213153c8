"""The worker's topics: what they must be, what Kafka has, and making them so.

Topics are managed, never auto-created: ``intentwatch topics create`` (or a starting
worker) creates the missing ones from :func:`layout`, and ``intentwatch topics check``
compares what Kafka has with it. The input topics and the changelogs of the worker's
tables are co-partitioned by agent id, so they must all have one partition count; a
worker adopts the count the existing input topics agree on (:func:`adopted_partitions`)
and stops with a sentence naming the topic, its count and the fix otherwise.

>>> from intentwatch.pipeline.settings import Settings
>>> calls = "intentwatch.events.v1"
>>> specs = layout(Settings(partitions=3), inputs=[calls], changelogs=["app-grants-changelog"])
>>> changelog = specs["app-grants-changelog"]
>>> changelog.partitions, changelog.configs, changelog.copartitioned
(3, {'cleanup.policy': 'compact'}, True)
>>> specs[calls].problems(Topic(name=calls, partitions=1, replication=1))
['topic intentwatch.events.v1 has 1 partition, not 3']
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from intentwatch.contracts import TOPICS
from intentwatch.pipeline.settings import Settings

__all__ = [
    "Topic",
    "TopicSpec",
    "TopicsMismatch",
    "adopted_partitions",
    "create_topics",
    "describe_topics",
    "ensure_topics",
    "layout",
]

log = logging.getLogger(__name__)

COMPACT = {"cleanup.policy": "compact"}
"""Topic configs of a table's changelog: only the latest value per key is kept."""


class TopicsMismatch(SystemExit):
    """Kafka's topics do not fit this worker; the message says which topic and the fix."""


@dataclass(frozen=True)
class Topic:
    """A topic as Kafka has it."""

    name: str
    partitions: int
    replication: int
    configs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicSpec:
    """A topic as intentwatch needs it."""

    name: str
    partitions: int
    replication: int
    configs: Mapping[str, str] = field(default_factory=dict)
    copartitioned: bool = False
    """Keyed like the input (agent id → partition): its count must equal theirs."""

    def problems(self, found: Topic | None) -> list[str]:
        """What differs between this spec and the topic Kafka has, one sentence each."""
        if found is None:
            return [f"topic {self.name} does not exist"]
        problems = []
        if found.partitions != self.partitions:
            problems.append(f"topic {self.name} has {_count(found.partitions)}, "
                            f"not {self.partitions}")
        if found.replication < self.replication:
            problems.append(f"topic {self.name} has replication factor "
                            f"{found.replication}, not {self.replication}")
        problems += [
            f"topic {self.name} has {name}={found.configs.get(name)!r}, not {value!r}"
            for name, value in self.configs.items() if found.configs.get(name) != value
        ]
        return problems


def layout(
    settings: Settings, *, inputs: Iterable[str], changelogs: Iterable[str]
) -> dict[str, TopicSpec]:
    """Every topic the worker reads or writes, by name: intentwatch's topics and the
    compacted changelogs of its tables, ``settings.partitions`` and
    ``settings.replication_factor`` each."""
    copartitioned = {*inputs, *changelogs}
    specs = {
        name: TopicSpec(name, settings.partitions, settings.replication_factor,
                        copartitioned=name in copartitioned)
        for name in TOPICS.values()
    }
    for name in changelogs:
        specs[name] = TopicSpec(name, settings.partitions, settings.replication_factor,
                                configs=COMPACT, copartitioned=True)
    return specs


def describe_topics(
    bootstrap: str, names: Iterable[str], *, timeout: float = 10.0
) -> dict[str, Topic | None]:
    """What Kafka has of the topics ``names`` (``None`` for a missing one)."""
    names = list(names)
    with _admin(bootstrap, timeout) as admin:
        described = {t["name"]: t for t in admin.describe_topics(names) if not t["error_code"]}
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in described]
        configs = admin.describe_configs(resources, config_filter="all") if resources else {}
    topic_configs = configs.get("topic", {})
    found: dict[str, Topic | None] = dict.fromkeys(names)
    for name, topic in described.items():
        partitions = topic["partitions"]
        found[name] = Topic(
            name, len(partitions), min((len(p["replica_nodes"]) for p in partitions), default=0),
            {key: entry["value"] for key, entry in topic_configs.get(name, {}).items()},
        )
    return found


def create_topics(
    bootstrap: str, specs: Iterable[TopicSpec], *, timeout: float = 30.0
) -> list[str]:
    """Create the topics of ``specs`` that do not exist yet and wait until each has a
    leader for every partition; returns the names created. Another worker creating
    them at the same time is no error."""
    specs = list(specs)
    with _admin(bootstrap, timeout) as admin:
        existing = set(admin.list_topics())
        missing = {
            spec.name: {"num_partitions": spec.partitions,
                        "replication_factor": spec.replication, "configs": dict(spec.configs)}
            for spec in specs if spec.name not in existing
        }
        if missing:
            admin.create_topics(missing, timeout_ms=int(timeout * 1000), raise_errors=False)
        admin.wait_for_topics([spec.name for spec in specs], timeout_ms=int(timeout * 1000))
    return sorted(missing)


def adopted_partitions(found: Mapping[str, Topic | None], default: int) -> int:
    """The partition count the existing co-partitioned topics ``found`` agree on
    (``default`` when none exists); :class:`TopicsMismatch` when they disagree."""
    counts = {name: topic.partitions for name, topic in found.items() if topic is not None}
    if len(set(counts.values())) > 1:
        most = Counter(counts.values()).most_common(1)[0][0]
        name, count = next((n, c) for n, c in sorted(counts.items()) if c != most)
        raise TopicsMismatch(
            f"Topic {name} has {_count(count)} but the other input topics have {most}, and "
            f"they must agree: delete {name} and run `intentwatch topics create "
            f"--partitions {most}`."
        )
    return next(iter(counts.values()), default)


def ensure_topics(bootstrap: str, specs: Mapping[str, TopicSpec], *, timeout: float = 60.0) -> None:
    """Create the missing topics of ``specs``, then stop with :class:`TopicsMismatch` if a
    co-partitioned one has another partition count than its spec."""
    created = create_topics(bootstrap, specs.values(), timeout=timeout)
    if created:
        log.info("created topics %s", ", ".join(created))
    found = describe_topics(bootstrap, specs, timeout=timeout)
    for name, spec in specs.items():
        topic = found[name]
        if spec.copartitioned and topic is not None and topic.partitions != spec.partitions:
            raise TopicsMismatch(
                f"Topic {name} has {_count(topic.partitions)} but this worker needs "
                f"{spec.partitions} (the input topics have {spec.partitions}): delete {name} "
                "and restart the worker, which creates it again."
            )


def _admin(bootstrap: str, timeout: float) -> KafkaAdminClient:
    return KafkaAdminClient(
        bootstrap_servers=bootstrap.split(","), client_id="intentwatch-admin",
        request_timeout_ms=int(timeout * 1000), bootstrap_timeout_ms=int(timeout * 1000),
    )


def _count(partitions: int) -> str:
    return f"{partitions} partition" + ("" if partitions == 1 else "s")

