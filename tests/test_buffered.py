"""BufferedTable: reads see writes at once; the table gets each key's last value at a flush."""

from __future__ import annotations

from collections import UserDict
from collections.abc import ItemsView

import pytest

from intentwatch.pipeline.buffered import BufferedTable


class PartitionedStore(UserDict[str, int]):
    """Like faust's RocksDB store: iteration sees every partition, a lookup only the
    current record's (here: none of them)."""

    def __getitem__(self, key: str) -> int:
        raise KeyError(key)

    def items(self) -> ItemsView[str, int]:  # the store's own pass
        return self.data.items()


def test_items_and_values_read_the_table_in_one_pass() -> None:
    store = PartitionedStore({"a": 1, "b": 2})
    buffered = BufferedTable(store)
    buffered["c"] = 3
    del store.data["b"]  # gone from the table meanwhile
    assert sorted(buffered.items()) == [("a", 1), ("c", 3)]
    assert sorted(buffered.values()) == [1, 3]


def test_a_flush_writes_each_changed_key_once_and_deletes_the_deleted() -> None:
    writes: list[tuple[str, int]] = []

    class Table(dict[str, int]):
        def __setitem__(self, key: str, value: int) -> None:
            writes.append((key, value))
            super().__setitem__(key, value)

    table = Table(a=1)
    buffered = BufferedTable(table)
    for n in range(5):
        buffered["b"] = n
    del buffered["a"]
    assert "a" not in buffered and buffered["b"] == 4 and dict(table) == {"a": 1}
    assert buffered.pending == 2
    with pytest.raises(KeyError):
        del buffered["a"]
    assert buffered.flush() == 2 and writes == [("b", 4)] and dict(table) == {"b": 4}
    buffered["c"] = 1
    buffered.discard()
    assert "c" not in buffered and buffered.pending == 0
