"""What docker-compose.yml and the Dockerfile promise, read without a Docker engine.

Volumes are owned by the image's user, a missing JWKS file stops compose instead of
becoming a directory, the ``dev`` profile needs nothing prepared by hand, workers have a
healthcheck and a restart policy, Kafka creates no topic on its own and
``intentwatch topics create`` makes them before any worker starts, the build context
leaves the virtualenv and the git history out, and every Python dependency of the image
is pinned with its hashes.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "docker" / "worker-requirements.txt"
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines  # type: ignore[misc]
            if line and not line.startswith("#")]


def runs() -> list[str]:
    return [argument for name, argument in instructions() if name == "RUN"]


def ours(service: dict[str, Any]) -> bool:
    """Whether a service runs the image this repository builds."""
    return bool(service.get("build")) or service.get("image", "").startswith("intentwatch")


def workers() -> dict[str, dict[str, Any]]:
    """The services that run ``intentwatch worker`` (the image's command)."""
    return {name: service for name, service in SERVICES.items()
            if ours(service) and "command" not in service}


def in_profile(profile: str) -> dict[str, dict[str, Any]]:
    """The services ``docker compose --profile PROFILE up`` starts."""
    return {name: service for name, service in SERVICES.items()
            if profile in service.get("profiles", [profile])}


def mounts(service: dict[str, Any]) -> list[dict[str, Any]]:
    """A service's volumes in the long syntax (short ones parsed as docker does)."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            found.append(volume)
            continue
        source, target, *mode = volume.split(":")
        kind = "bind" if source.startswith((".", "/", "~", "$")) else "volume"
        found.append({"type": kind, "source": source, "target": target,
                      "read_only": mode == ["ro"], "short": True})
    return found


def image_user_dirs() -> set[str]:
    """Folders the Dockerfile creates owned by the user the image runs as."""
    [user] = [argument for name, argument in instructions() if name == "USER"]
    owned = set()
    for command in runs():
        for part in command.split("&&"):
            words = shlex.split(part)
            if words[:2] == ["install", "-d"] and words[words.index("-o") + 1] == user:
                owned.update(word for word in words[2:] if word.startswith("/"))
    return owned


def test_the_image_runs_as_its_own_user_and_owns_the_mounted_folders() -> None:
    [user] = [argument for name, argument in instructions() if name == "USER"]
    assert any(f"--uid 10001 {user}" in command for command in runs())
    owned = image_user_dirs()
    named = [(name, mount["target"]) for name, service in SERVICES.items() if ours(service)
             for mount in mounts(service) if mount["type"] == "volume"]
    assert named
    for name, target in named:
        assert target in owned, f"{name}: volume on {target}, a folder the image does not own"


def test_no_bind_mount_can_become_a_directory() -> None:
    for name, service in SERVICES.items():
        for mount in mounts(service):
            if mount["type"] == "bind":
                assert not mount.get("short"), f"{name}: short bind syntax creates {mount}"
                assert mount.get("bind", {}).get("create_host_path") is False, name
                assert mount.get("read_only") is True, name


def test_kafka_creates_no_topic_on_its_own_and_keeps_its_data() -> None:
    kafka = SERVICES["kafka"]
    assert kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert any(mount["type"] == "volume" and mount["target"] == kafka["environment"]
               ["KAFKA_LOG_DIRS"] for mount in mounts(kafka))
    assert "healthcheck" in kafka


def test_intentwatch_topics_create_makes_the_topics_before_any_worker_starts() -> None:
    [(name, topics)] = [(name, service) for name, service in SERVICES.items()
                        if ours(service) and service.get("command", [])[:3]
                        == ["intentwatch", "topics", "create"]]
    assert "profiles" not in topics  # in every profile
    assert topics["environment"]["INTENTWATCH_BOOTSTRAP"] == "kafka:9092"
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert workers()
    for service in workers().values():
        assert service["depends_on"][name]["condition"] == "service_completed_successfully"
        assert service["environment"]["INTENTWATCH_BOOTSTRAP"] == "kafka:9092"


@pytest.mark.parametrize("name", sorted(workers()))
def test_a_worker_restarts_waits_for_kafka_and_is_health_checked(name: str) -> None:
    service = workers()[name]
    assert service["restart"] in ("always", "unless-stopped", "on-failure")
    assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert service.get("healthcheck", {}).get("disable") is not True
    [check] = [argument for command, argument in instructions() if command == "HEALTHCHECK"]
    assert "http://127.0.0.1:6066/ready" in check  # 503 until the worker judges
    port = service["environment"].get("INTENTWATCH_WEB_PORT", "6066")
    assert f":{port}:" in service["ports"][0] or service["ports"][0].endswith(f":{port}")


@pytest.mark.parametrize("profile", ["dev", "prod"])
def test_each_profile_runs_kafka_and_one_worker_known_as_worker(profile: str) -> None:
    started = in_profile(profile)
    assert "kafka" in started
    [(name, worker)] = [(n, s) for n, s in workers().items() if n in started]
    aliases = worker.get("networks", {}).get("default", {}).get("aliases", [])
    assert name == "worker" or "worker" in aliases


def test_the_dev_profile_makes_the_issuer_key_the_worker_trusts_without_hand_work() -> None:
    started = in_profile("dev")
    [worker] = [service for name, service in workers().items() if name in started]
    binds = [m["source"] for s in started.values() for m in mounts(s) if m["type"] == "bind"]
    assert all((REPO / source).exists() for source in binds), binds  # the repository's own
    jwks = worker["environment"]["INTENTWATCH_GRANT_ISSUERS_JWKS"]
    [(issuer, condition)] = [(other, dependency["condition"]) for other, dependency
                             in worker["depends_on"].items() if other in started
                             and "profiles" in started[other]]
    assert condition == "service_completed_successfully"
    shared = {m["source"] for m in mounts(worker)} & {m["source"] for m in
                                                     mounts(started[issuer])}
    target = next(m["target"] for m in mounts(worker) if m["source"] in shared)
    assert jwks.startswith(target + "/")
    script = " ".join(started[issuer]["command"])
    assert "intentwatch keys init" in script and f"> {jwks}" not in script  # written whole
    assert script.rstrip().endswith(jwks)


def test_the_image_installs_pinned_hashed_dependencies_only() -> None:
    installs = [command for command in runs() if "pip install" in command]
    assert installs
    for command in installs:
        assert "--require-hashes" in command or "--no-deps" in command, command
    assert any(f"-r {LOCK.name}" in command and "--require-hashes" in command
               for command in installs)
    assert any(argument.split()[0] == f"docker/{LOCK.name}"
               for name, argument in instructions() if name == "COPY")
    base = next(argument for name, argument in instructions() if name == "FROM")
    assert re.fullmatch(r"python:3\.11[\w.-]*-slim-\w+", base), base


def test_the_lock_pins_every_dependency_of_the_worker_with_hashes() -> None:
    """If this fails after a dependency change, run `make lock`."""
    text = LOCK.read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9._-]+)==(\S+) \\$", text, re.MULTILINE))
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n\n", 1)[1])
    assert all("--hash=sha256:" in entry for entry in entries if "==" in entry)
    assert "--find-links" not in text and "/tmp/" not in text
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    required = [*project["project"]["dependencies"],
                *project["project"]["optional-dependencies"]["worker"],
                *project["build-system"]["requires"]]
    pinned = {canonicalize_name(name): version for name, version in pins.items()}
    for line in required:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not in {LOCK.name}: run `make lock`"
        assert requirement.specifier.contains(pinned[name]), (
            f"{name}=={pinned[name]} does not satisfy {requirement}: run `make lock`")


def ignored(path: str, rules: list[str]) -> bool:
    """Whether ``.dockerignore`` ``rules`` keep ``path`` out (the last matching rule wins)."""
    out = False
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    for rule in rules:
        pattern = rule.removeprefix("!").rstrip("/")
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            out = not rule.startswith("!")
    return out


def test_the_build_context_holds_what_the_image_copies_and_nothing_big() -> None:
    rules = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    for path in (".venv/bin/python", ".git/HEAD", ".intentwatch/kafka/data", "bench/results",
                 "notebooks/tuning.ipynb", "intentwatch/__pycache__/cli.cpython-311.pyc"):
        assert ignored(path, rules), path
    copied = [argument.split()[:-1] for name, argument in instructions() if name == "COPY"]
    for source in (source for sources in copied for source in sources):
        assert not ignored(source.rstrip("/"), rules), source
        assert not ignored(f"{source.rstrip('/')}/x.py", rules) or "." in source, source
