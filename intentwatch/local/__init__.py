"""Real services on this machine for development, the demo and the tests (Kafka, workers)."""
