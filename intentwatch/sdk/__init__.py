"""The client SDK: publish telemetry from agents, receive verified revocations."""
