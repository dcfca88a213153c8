"""Pure scoring: grant conformance, intent alignment, baselines, detectors, fusion, the engine.

No Kafka, no faust: the same code runs in the worker, in replay, notebooks and benchmarks.
"""
