"""``intentwatch demo``: the whole loop on a real Kafka, in about a minute.

1. **Kafka**: the one named by ``--bootstrap`` (or ``$INTENTWATCH_BOOTSTRAP``), else a
   local broker started for the demo on port 9092 (a free port if 9092 is taken).
2. **Worker**: a real ``intentwatch worker`` process (:mod:`intentwatch.local.worker`),
   trusting the grant key of the reference credential broker; signed grants only.
3. **Warm-up**: days of benign history of a simulated fleet
   (:mod:`intentwatch.simulation.fleet`; the seed is printed, ``--seed`` picks one), fed
   at the pace the worker takes it, so every agent has a learned baseline.
4. **Live**: each agent runs one task through the reference credential broker and tool
   gateway (:mod:`intentwatch.reference`); some tasks are hijacked. Revocations for cause
   appear as they reach the broker, apart from the normal ends of tasks, and the gateway
   denies the revoked tasks' next calls.
5. **Summary**: calls, verdicts, revocations, latencies, and what each attacker got done
   before the cut.

Everything the demo starts is stopped at the end, also on Ctrl-C, unless ``--keep``
leaves its Kafka and folder for ``intentwatch audit``, ``explain`` and ``replay``.

The modules: :mod:`~intentwatch.demo.plan` (the fleet, cut into history and live
scripts), :mod:`~intentwatch.demo.run` (warm-up feed and live agents),
:mod:`~intentwatch.demo.render` (live board and summary), :mod:`~intentwatch.demo.session`
(starting, stopping and keeping it all).
"""

from intentwatch.demo.session import EVENTS_FILE, DemoError, create_topics, run_demo

__all__ = ["EVENTS_FILE", "DemoError", "create_topics", "run_demo"]
