"""Shared pytest fixtures."""

pytest_plugins = ["tests.kafka_broker"]
