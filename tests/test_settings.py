"""Worker settings from the environment: the producer's linger."""

import pytest

from intentwatch.pipeline.settings import Settings


def test_the_producer_linger_is_read_in_milliseconds_and_may_be_zero() -> None:
    assert Settings.from_env({}).producer_linger_ms == 5
    assert Settings.from_env({"INTENTWATCH_PRODUCER_LINGER_MS": "0"}).producer_linger_ms == 0
    assert Settings.from_env({"INTENTWATCH_PRODUCER_LINGER_MS": "20"}).producer_linger_ms == 20
    with pytest.raises(ValueError, match="INTENTWATCH_PRODUCER_LINGER_MS must be a whole number"):
        Settings.from_env({"INTENTWATCH_PRODUCER_LINGER_MS": "-1"})
