"""The CLI's user mistakes: one line naming the file, line, variable or value, exit code 2."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from intentwatch.cli import app
from intentwatch.local.kafka_broker import free_port
from intentwatch.simulation.fleet import FleetSpec, generate, write_jsonl
from intentwatch.tokens.keys import generate_key

runner = CliRunner()
JWKS = json.dumps({"keys": [generate_key("EdDSA").public_jwk()]})


def mistake(args: list[str], env: dict[str, str] | None = None) -> str:
    """The one line a mistaken command prints (it must exit with code 2)."""
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("intentwatch: ")
    return lines[0].removeprefix("intentwatch: ")


def test_a_second_keys_init_names_the_keyring_and_the_fix(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert runner.invoke(app, ["keys", "init", "--keys-dir", str(keys)]).exit_code == 0
    assert mistake(["keys", "init", "--keys-dir", str(keys)]) == (
        f"{keys} already holds a keyring: `intentwatch keys rotate` adds a new active key to it")


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "events.jsonl"
    line = mistake(["replay", str(missing), "--out", str(tmp_path / "v.jsonl")])
    assert line == f"{missing}: No such file or directory"
    assert mistake(["keys", "jwks", "--keys-dir", str(tmp_path / "nokeys")]).startswith(
        str(tmp_path / "nokeys"))


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    """A short fleet recording with a malformed line 3 and a line breaking its contract at 5."""
    path = tmp_path / "events.jsonl"
    write_jsonl(generate(FleetSpec(seed=1, agents_per_role=1, history_days=0.2)), path)
    lines = path.read_text().splitlines()
    lines.insert(2, '{"kind": "toolcall", "ts": ')
    lines.insert(4, json.dumps({"kind": "toolcall", "event_id": "e"}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_replay_lists_bad_lines_in_a_side_file_and_goes_on(recording: Path) -> None:
    out = recording.with_name("verdicts.jsonl")
    result = runner.invoke(app, ["replay", str(recording), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rejected = out.with_name("verdicts.jsonl.rejected.txt").read_text().splitlines()
    assert rejected == [f"{recording}:3: not JSON: Expecting value at character 28",
                        f"{recording}:5: tool call: Object missing required field `ts`"]
    assert "2 bad line(s) skipped" in " ".join(result.output.split())
    assert len(out.read_text().splitlines()) > 10  # the good lines were all judged


def test_replay_strict_stops_at_the_first_bad_line(recording: Path) -> None:
    out = recording.with_name("verdicts.jsonl")
    line = mistake(["replay", str(recording), "--out", str(out), "--strict"])
    assert line.startswith(f"{recording}:3: not JSON")


@pytest.mark.parametrize("args", [["fleet", "--out", "f.jsonl", "--agents", "0"],
                                  ["fleet", "--out", "f.jsonl", "--days", "-1"],
                                  ["demo", "--agents", "0"],
                                  ["audit", "--by", "team"],
                                  ["audit", "--timeout", "0"]])
def test_options_out_of_range_are_refused(args: list[str], tmp_path: Path) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.output
    assert not (tmp_path / "f.jsonl").exists()


@pytest.mark.parametrize(("args", "shown"), [
    (["kafka", "up", "--help"], "INTENTWATCH_HOME/kafka"),
    (["replay", "--help"], "INTENTWATCH_SCORING_CONFIG"),
    (["keys", "prune", "--help"], "604800"),
    (["fleet", "--help"], "default: 3"),
])
def test_help_shows_defaults(args: list[str], shown: str) -> None:
    result = runner.invoke(app, args, env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert result.exit_code == 0
    assert shown in result.output


def worker_env(tmp_path: Path, **changes: str) -> dict[str, str]:
    jwks = tmp_path / "issuers.json"
    jwks.write_text(JWKS)
    return {"INTENTWATCH_GRANT_ISSUERS_JWKS": str(jwks), "INTENTWATCH_WEB_PORT": str(free_port()),
            "INTENTWATCH_DATA_DIR": str(tmp_path / "data"),
            "INTENTWATCH_KEYS_DIR": str(tmp_path / "keys"),
            "INTENTWATCH_BOOTSTRAP": f"127.0.0.1:{free_port()}", **changes}


@pytest.mark.parametrize(("changes", "expected"), [
    ({"INTENTWATCH_PARTITIONS": "six"}, "INTENTWATCH_PARTITIONS must be a positive integer, "
                                        "got 'six'"),
    ({"INTENTWATCH_BOOTSTRAP": "127.0.0.1:9092x"},
     "INTENTWATCH_BOOTSTRAP: Kafka address '127.0.0.1:9092x' is not host:port (port '9092x' "
     "is not a number)"),
    ({"INTENTWATCH_GRANT_ISSUERS_JWKS": "/nonexistent/issuers.json"},
     "INTENTWATCH_GRANT_ISSUERS_JWKS names /nonexistent/issuers.json, which is not a file"),
])
def test_bad_worker_settings_name_their_variable(
    tmp_path: Path, changes: dict[str, str], expected: str
) -> None:
    assert mistake(["worker"], env=worker_env(tmp_path, **changes)).startswith(expected)


def test_a_web_port_in_use_is_named(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = mistake(["worker"], env=worker_env(tmp_path, INTENTWATCH_WEB_PORT=str(port)))
    assert line.startswith(f"INTENTWATCH_WEB_PORT {port} is in use")


@pytest.mark.parametrize(("bootstrap", "expected"), [
    ("127.0.0.1:9092x", "Kafka address '127.0.0.1:9092x' is not host:port"),
    (f"127.0.0.1:{free_port()}", "no answer within 1 s"),
])
def test_commands_reading_kafka_say_why_they_cannot(
    bootstrap: str, expected: str, tmp_path: Path
) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(JWKS)
    for args in (["audit"], ["explain", "e1", "--jwks", str(jwks)],
                 ["tail", "--jwks", str(jwks)]):
        line = mistake([*args, "--bootstrap", bootstrap, "--timeout", "1"])
        assert expected in line, args


def test_explain_needs_a_call_or_a_task() -> None:
    assert mistake(["explain"]) == "name a call (EVENT_ID) or a task (--task TASK_ID), not both"


@pytest.mark.parametrize("command", [
    ["demo"], ["worker"], ["fleet"], ["replay"], ["audit"], ["explain"], ["tail"],
    ["kafka", "up"], ["kafka", "down"], ["kafka", "status"], ["topics", "create"],
    ["topics", "check"], ["keys", "init"], ["keys", "rotate"], ["keys", "prune"],
    ["keys", "jwks"],
])
def test_every_command_has_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output and "--help" in result.output


def test_a_taken_kafka_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = mistake(["kafka", "up", "--port", str(port), "--home", str(tmp_path)])
    assert line.startswith(f"Port {port} on 127.0.0.1 is already in use")


def test_a_worker_without_kafka_names_the_address(tmp_path: Path) -> None:
    env = worker_env(tmp_path)
    assert mistake(["worker"], env=env).startswith(
        f"INTENTWATCH_BOOTSTRAP {env['INTENTWATCH_BOOTSTRAP']}: Kafka does not answer there")
