"""The README's first example, as a new user runs it, against the real broker and worker."""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

from intentwatch.cli import app
from intentwatch.contracts import Verdict
from intentwatch.tokens.keys import Keyring
from tests.conftest import RunningWorker

README = Path(__file__).resolve().parents[1] / "README.md"


def first_example() -> tuple[list[str], str]:
    """The shell commands and the Python code of the README's first example."""
    section = README.read_text().split("## Publish telemetry from your agent", 1)[1]
    shell, python = re.findall(r"```(?:bash|python)\n(.*?)```", section, re.DOTALL)[:2]
    commands = [line.split("#", 1)[0].strip() for line in shell.splitlines()]
    return [command for command in commands if command], python


def test_the_first_example_sets_up_what_the_worker_needs() -> None:
    commands, python = first_example()
    assert commands[:2] == ["intentwatch kafka up", "intentwatch topics create"]
    assert any("keys init" in command for command in commands)
    assert commands[-1].startswith("INTENTWATCH_GRANT_ISSUERS_JWKS=issuers.jwks.json")
    assert "publish_grant(sign_grant(" in python


@pytest.mark.kafka
def test_the_first_example_ends_in_allow(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands, python = first_example()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INTENTWATCH_BOOTSTRAP", kafka_bootstrap)
    runner = CliRunner()
    for command in commands[1:3]:  # topics create, keys init (Kafka runs; the worker below)
        done = runner.invoke(app, shlex.split(command)[1:])
        assert done.exit_code == 0, done.output
    broker_key = Keyring.load(tmp_path / ".intentwatch/broker-keys").active
    worker = RunningWorker(kafka_bootstrap, tmp_path, broker_key)  # trusts the broker's key
    try:
        started = time.time()
        exec(compile(python, "README.md", "exec"), {"__name__": "readme"})
        agent = "spiffe://acme.org/agents/support/agent-3"
        records = worker.topics["verdicts"].of(agent, 2)
        verdicts = [msgspec.json.decode(r.value, type=Verdict) for r in records
                    if r.timestamp / 1000 >= started - 1]
        assert [(v.tool, v.decision) for v in verdicts] == [
            ("crm.lookup_customer", "allow"), ("gmail.send_email", "allow")], verdicts
    finally:
        worker.close()
        worker.stop()
