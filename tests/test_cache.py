"""The in-process tier: bounded, entries never served past their time, eviction order."""

from fastapi_zitadel import Principal
from fastapi_zitadel.cache import CacheEntry, MemoryCache

from .helpers import FakeClock


def entry(clock: FakeClock, lifetime: float, stale: float = 0.0) -> CacheEntry:
    return CacheEntry(Principal(subject="u"), clock.now + lifetime, clock.now + lifetime + stale)


def test_entry_is_gone_after_stale_until(clock: FakeClock) -> None:
    cache = MemoryCache(max_size=10, clock=clock)
    cache.store(b"k", entry(clock, 10, stale=5))
    assert cache.lookup(b"k", clock.now + 12) is not None  # stale window: the caller decides
    assert cache.lookup(b"k", clock.now + 15) is None
    assert len(cache) == 0


def test_bound_is_kept_and_expired_entries_go_first(clock: FakeClock) -> None:
    cache = MemoryCache(max_size=100, clock=clock)
    for index in range(50):
        cache.store(b"old%d" % index, entry(clock, 1))
    for index in range(50):
        cache.store(b"live%d" % index, entry(clock, 1000))
    clock.advance(2)  # the 50 "old" entries have expired
    for index in range(50):
        cache.store(b"new%d" % index, entry(clock, 1000))
    assert len(cache) == 100
    assert all(cache.lookup(b"live%d" % i, clock.now) is not None for i in range(50))


def test_full_of_live_entries_drops_the_oldest_tenth(clock: FakeClock) -> None:
    cache = MemoryCache(max_size=100, clock=clock)
    for index in range(1000):
        cache.store(b"%d" % index, entry(clock, 1000))
        assert len(cache) <= 100
    assert cache.lookup(b"999", clock.now) is not None
    assert cache.lookup(b"0", clock.now) is None


def test_restoring_a_key_replaces_it(clock: FakeClock) -> None:
    cache = MemoryCache(max_size=2, clock=clock)
    cache.store(b"a", entry(clock, 10))
    cache.store(b"a", entry(clock, 20))
    assert len(cache) == 1
    found = cache.lookup(b"a", clock.now)
    assert found is not None
    assert found.expires_at == clock.now + 20
