"""The loader's prefetch thread: same items in order, errors where they happened, a clean stop."""
import threading

import pytest

from datagen.train.prefetch import prefetched


def test_items_come_in_order_and_an_error_comes_where_it_happened():
    def items():
        yield from range(5)
        raise OSError("shard gone")

    got = []
    with pytest.raises(OSError, match="shard gone"):
        for x in prefetched(items(), depth=2):
            got.append(x)
    assert got == [0, 1, 2, 3, 4]


def test_it_fetches_ahead_while_the_consumer_works_and_stops_when_closed():
    fetched = []
    two_ahead = threading.Event()

    def endless():
        n = 0
        while True:
            fetched.append(n)
            if len(fetched) >= 3:
                two_ahead.set()
            yield n
            n += 1

    it = prefetched(endless(), depth=2)
    assert next(it) == 0
    assert two_ahead.wait(10)  # items 1 and 2 were fetched while "the step" ran
    it.close()
    threads = [t for t in threading.enumerate() if t.name == "batch-prefetch"]
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
