"""Benchmarks: ``python -m bench.throughput`` measures the engine and the stream workers."""
