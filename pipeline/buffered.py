"""A table whose writes are held back and written once per key at a flush.

Each write to a faust table is a record on its changelog topic: a task whose state
changes on every call would be written (and its whole value sent to the broker) once
per call. The worker's engines write through a :class:`BufferedTable` instead: reads
see every write at once, and :meth:`BufferedTable.flush` hands each changed key's last
value (or its deletion) to the table once. The worker acknowledges a partition's
input records only when what they changed has been flushed, so the committed offset
never passes state that is not in the changelog: after a crash or a move the records
since the last flush are read again, from the state the flush left
(``INTENTWATCH_FLUSH_RECORDS``).

>>> table = {"a": 1}
>>> buffered = BufferedTable(table)
>>> buffered["b"] = 2
>>> del buffered["a"]
>>> sorted(buffered.items()), table
([('b', 2)], {'a': 1})
>>> buffered.flush(), table
(2, {'b': 2})
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Generic, TypeVar

__all__ = ["BufferedTable"]

V = TypeVar("V")


class _Deleted:
    """What a key deleted since the last flush holds in the buffer."""


_DELETED = _Deleted()


class BufferedTable(MutableMapping[str, V], Generic[V]):
    """``table`` as it will be after the next :meth:`flush`."""

    def __init__(self, table: MutableMapping[str, V]) -> None:
        self.table = table
        self._changed: dict[str, V | _Deleted] = {}

    @property
    def pending(self) -> int:
        """Keys written or deleted since the last flush."""
        return len(self._changed)

    def flush(self) -> int:
        """Write each changed key's last value to the table (delete the deleted ones);
        returns how many keys were written."""
        written = len(self._changed)
        for key, value in self._changed.items():
            if isinstance(value, _Deleted):
                self.table.pop(key, None)
            else:
                self.table[key] = value
        self._changed.clear()
        return written

    def discard(self) -> None:
        """Forget what was not flushed (the records that wrote it will be read again)."""
        self._changed.clear()

    def __getitem__(self, key: str) -> V:
        if key in self._changed:
            value = self._changed[key]
            if isinstance(value, _Deleted):
                raise KeyError(key)
            return value
        return self.table[key]

    def __setitem__(self, key: str, value: V) -> None:
        self._changed[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._changed[key] = _DELETED

    def items(self) -> Iterator[tuple[str, V]]:  # type: ignore[override]  # an iterator
        """Every key and value, read from the table in one pass (a table whose store keeps
        each partition apart finds a key by the current record's partition only)."""
        for key, value in self.table.items():
            if key not in self._changed:
                yield key, value
        for key, changed in self._changed.items():
            if not isinstance(changed, _Deleted):
                yield key, changed

    def values(self) -> Iterator[V]:  # type: ignore[override]  # an iterator
        """Every value (see :meth:`items`)."""
        return (value for _, value in self.items())

    def __iter__(self) -> Iterator[str]:
        for key in self.table:
            if key not in self._changed:
                yield key
        for key, value in self._changed.items():
            if not isinstance(value, _Deleted):
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)
