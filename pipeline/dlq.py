"""Dead letters: a record the worker cannot use, kept with where it came from and why.

The value is the original bytes and the key the original key; the headers
(:class:`~intentwatch.contracts.DeadLetterHeaders`) name the source topic, partition,
offset, the reason (a rejection's ``code``, else the error class) and the message.

>>> from intentwatch.contracts import ContractError
>>> dict(dead_letter_headers("intentwatch.toolcalls.v1", 3, 17, ContractError("tool call: bad")))
... # doctest: +NORMALIZE_WHITESPACE
{'dlq.source.topic': b'intentwatch.toolcalls.v1', 'dlq.source.partition': b'3',
 'dlq.source.offset': b'17', 'dlq.error.class': b'ContractError',
 'dlq.error.message': b'tool call: bad'}
"""

from __future__ import annotations

from intentwatch.contracts import DeadLetterHeaders
from intentwatch.pipeline.decoding import reason_of

__all__ = ["dead_letter_headers"]

_MAX_MESSAGE = 1000


def dead_letter_headers(
    topic: str, partition: int, offset: int, error: BaseException
) -> list[tuple[str, bytes]]:
    """The headers of the dead letter for the record at ``topic/partition/offset``."""
    return [
        (DeadLetterHeaders.SOURCE_TOPIC, topic.encode()),
        (DeadLetterHeaders.SOURCE_PARTITION, str(partition).encode()),
        (DeadLetterHeaders.SOURCE_OFFSET, str(offset).encode()),
        (DeadLetterHeaders.ERROR_CLASS, reason_of(error).encode()),
        (DeadLetterHeaders.ERROR_MESSAGE, str(error)[:_MAX_MESSAGE].encode()),
    ]
