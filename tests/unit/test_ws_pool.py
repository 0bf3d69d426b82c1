"""The WebSocket session pool and the reconnect backoff, with fake connections and a fake
clock: reuse, discarding, idle expiry, stale sessions, and 1, 2, 4 … 30 s delays."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from workers.providers.errors import ProviderUnavailable
from workers.providers.ws_pool import ConnectBackoff, Pooled, StaleSession, WsPool


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class FakeConnection:
    def __init__(self) -> None:
        self.state = SimpleNamespace(name="OPEN")
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.state = SimpleNamespace(name="CLOSED")


def opener(made: list[FakeConnection]) -> Any:
    def open_session() -> FakeConnection:
        made.append(FakeConnection())
        return made[-1]

    return open_session


def test_n_calls_on_one_key_open_one_session() -> None:
    """Ten calls one after another borrow the same session: one connection is opened."""
    made: list[FakeConnection] = []
    pool = WsPool(idle_s=60)
    used = [pool.run("k", opener(made), lambda s: s.connection) for _ in range(10)]
    assert len(made) == 1 and pool.opened == 1
    assert all(c is made[0] for c in used)


def test_different_keys_get_different_sessions() -> None:
    """Sessions are per key (URL, credential, init): another key never borrows one."""
    made: list[FakeConnection] = []
    pool = WsPool(idle_s=60)
    pool.run("a", opener(made), lambda s: None)
    pool.run("b", opener(made), lambda s: None)
    assert len(made) == 2


def test_a_failed_call_closes_its_session_instead_of_pooling_it() -> None:
    """An exchange that raises closes its session, so the next call opens a fresh one."""
    made: list[FakeConnection] = []
    pool = WsPool(idle_s=60)

    def fail(session: Pooled) -> None:
        raise ProviderUnavailable("dropped")

    with pytest.raises(ProviderUnavailable):
        pool.run("k", opener(made), fail)
    assert made[0].closed and pool.idle_count() == 0
    pool.run("k", opener(made), lambda s: None)
    assert len(made) == 2


def test_a_session_closed_by_the_server_is_not_pooled() -> None:
    """A session the vendor closed during the call (Rime's close after audio_end) is not
    put back."""
    made: list[FakeConnection] = []
    pool = WsPool(idle_s=60)
    pool.run("k", opener(made), lambda s: s.connection.close())
    assert pool.idle_count() == 0


def test_sessions_idle_too_long_are_closed_not_reused() -> None:
    """A pooled session idle longer than idle_s is closed when next met and replaced."""
    clock = FakeClock()
    made: list[FakeConnection] = []
    pool = WsPool(idle_s=50, clock=clock)
    pool.run("k", opener(made), lambda s: None)
    clock.now += 51
    pool.run("k", opener(made), lambda s: None)
    assert len(made) == 2 and made[0].closed


def test_a_stale_pooled_session_is_replaced_once() -> None:
    """When a pooled session turns out closed before answering (StaleSession), the call
    runs again on one fresh session and succeeds."""
    made: list[FakeConnection] = []
    pool = WsPool(idle_s=60)
    pool.run("k", opener(made), lambda s: None)
    calls: list[Any] = []

    def exchange(session: Pooled) -> str:
        calls.append(session.connection)
        if session.connection is made[0]:
            raise StaleSession("closed while idle")
        return "ok"

    assert pool.run("k", opener(made), exchange) == "ok"
    assert calls == made and len(made) == 2


def test_close_closes_every_idle_session() -> None:
    """Registry shutdown closes all idle sessions."""
    made: list[FakeConnection] = []
    pool = WsPool(idle_s=60)
    pool.run("a", opener(made), lambda s: None)
    pool.run("b", opener(made), lambda s: None)
    pool.close()
    assert all(c.closed for c in made) and pool.idle_count() == 0


def test_backoff_doubles_from_1_s_to_a_30_s_cap_and_resets_on_success() -> None:
    """Consecutive failed connects wait 1, 2, 4, 8, 16, 30, 30 s; a success clears it."""
    clock = FakeClock()
    backoff = ConnectBackoff(clock=clock, sleep=clock.sleep)
    delays = [backoff.failed("cred") for _ in range(7)]
    assert delays == [1, 2, 4, 8, 16, 30, 30]
    backoff.succeeded("cred")
    backoff.wait("cred", max_wait_s=60)
    assert clock.slept == []


def test_after_a_failed_connect_the_next_one_waits_its_delay() -> None:
    """The connect after a failure sleeps out the rest of the delay (with the fake clock),
    and a second credential is not held back."""
    clock = FakeClock()
    backoff = ConnectBackoff(clock=clock, sleep=clock.sleep)
    backoff.failed("cred")
    backoff.failed("cred")  # now 2 s
    clock.now += 0.5
    backoff.wait("other", max_wait_s=60)
    assert clock.slept == []
    backoff.wait("cred", max_wait_s=60)
    assert clock.slept == [pytest.approx(1.5)]


def test_a_backoff_longer_than_the_call_can_wait_fails_at_once() -> None:
    """When the owed delay is longer than the call's remaining time, the call fails with a
    retryable ProviderUnavailable instead of sleeping."""
    clock = FakeClock()
    backoff = ConnectBackoff(clock=clock, sleep=clock.sleep)
    for _ in range(5):
        backoff.failed("cred")  # 16 s
    with pytest.raises(ProviderUnavailable, match="reconnect backoff"):
        backoff.wait("cred", max_wait_s=3)
    assert clock.slept == []
