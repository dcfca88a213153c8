"""An OpenID Shared Signals Framework 1.0 transmitter in front of the revocation topic.

Credential brokers and identity providers that speak SSF, not Kafka, receive
intentwatch's revocations from it as CAEP ``session-revoked`` SETs: they discover
it at ``/.well-known/ssf-configuration``, create a stream with a bearer token the
operator gave them, verify it, and take SETs by poll (RFC 8936) or have them
pushed (RFC 8935). Run it with ``intentwatch ssf`` (or ``python -m intentwatch.ssf``).

Why a process of its own, not views in the worker's web server: the worker owns
a share of the agents' partitions and moves them when workers come and go,
while a stream needs *every* revocation, in order, from one place; its receivers
wait on long polls and slow push endpoints that must never hold up judging
calls; it keeps state of another kind (streams and cursors, not agents); and it
is an internet-facing endpoint with its own keys (RS256 for the CAEP
interoperability profile), which is better kept apart from the signing keys
and load of the workers. So it consumes the revocation topic like any other
subscriber, verifies each revocation against the workers' JWKS, and scales and
restarts independently of them. Its streams and their delivery cursors live in
a compacted Kafka topic, so a restarted transmitter resumes every stream where
its receiver left it. One transmitter serves one state topic at a time.

Modules: :mod:`~intentwatch.ssf.streams` (stream configuration as data),
:mod:`~intentwatch.ssf.outbox` (a stream's unacknowledged SETs and cursor),
:mod:`~intentwatch.ssf.store` (streams in Kafka), :mod:`~intentwatch.ssf.events`
(verification and risk-level-change SETs), :mod:`~intentwatch.ssf.receivers`
(bearer tokens), :mod:`~intentwatch.ssf.transmitter` (reading, issuing,
delivering), :mod:`~intentwatch.ssf.server` (the HTTP API),
:mod:`~intentwatch.ssf.settings`.
"""
