"""The WebSocket session pool and the reconnect backoff, with fake connections and a fake
clock: reuse, discarding, idle expiry, stale sessions, keepalives and their thread, shutdown,
and 1, 2, 4 … 30 s delays; one keepalive also goes over a real loopback WebSocket."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from websockets.sync.server import ServerConnection, serve

from workers.deadline import Deadline
from workers.providers.errors import ProviderUnavailable
from workers.providers.ws_link import WsLink
from workers.providers.ws_pool import ConnectBackoff, Pooled, StaleSession, WsPool

KEEPALIVE = '{"type":"keepalive"}'


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def hand_driven(seconds: float) -> bool:
    """The keepalive thread's wait for tests that call sweep_idle themselves: stop at once."""
    return True


class FakeConnection:
    def __init__(self) -> None:
        self.state = SimpleNamespace(name="OPEN")
        self.closed = False
        self.sent: list[str | bytes] = []
        self.on_send: Callable[[], None] | None = None  # runs while the send is in progress
        self.send_fails = False

    def send(self, message: str | bytes) -> None:
        if self.on_send is not None:
            self.on_send()
        if self.send_fails:
            raise OSError("connection reset by peer")
        self.sent.append(message)

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


def keepalive_pool(clock: FakeClock, **kw: Any) -> WsPool:
    kw.setdefault("wait", hand_driven)
    return WsPool(idle_s=300, keepalive=KEEPALIVE, keepalive_s=30, clock=clock, **kw)


def test_an_idle_session_gets_the_keepalive_at_its_cadence_and_stays_pooled() -> None:
    """A pooled session quiet for keepalive_s is sent the vendor's keepalive, again every
    keepalive_s, and is still the one the next call borrows."""
    clock = FakeClock()
    made: list[FakeConnection] = []
    pool = keepalive_pool(clock)
    pool.run("k", opener(made), lambda s: None)
    sent_at: list[float] = []
    for _ in range(20):  # sweeps 5 s apart, 100 s in all
        clock.now += 5
        before = len(made[0].sent)
        pool.sweep_idle()
        sent_at += [clock.now] * (len(made[0].sent) - before)
    assert sent_at == [130, 160, 190] and set(made[0].sent) == {KEEPALIVE}
    assert pool.idle_count() == 1
    assert pool.run("k", opener(made), lambda s: s.connection) is made[0] and pool.opened == 1


def test_a_call_restarts_the_keepalive_cadence() -> None:
    """A session used again is not sent a keepalive until keepalive_s after that use."""
    clock = FakeClock()
    made: list[FakeConnection] = []
    pool = keepalive_pool(clock)
    pool.run("k", opener(made), lambda s: None)
    clock.now += 20
    pool.run("k", opener(made), lambda s: None)
    clock.now += 20
    pool.sweep_idle()
    assert made[0].sent == []
    clock.now += 10
    pool.sweep_idle()
    assert made[0].sent == [KEEPALIVE]


def test_without_a_keepalive_idle_sessions_are_closed_past_idle_s_and_no_thread_starts() -> None:
    """A vendor with no keepalive message (Smallest) gets none: no thread, nothing sent, and
    the session closed once idle past idle_s."""
    clock = FakeClock()
    made: list[FakeConnection] = []
    pool = WsPool(idle_s=50, clock=clock)
    pool.run("k", opener(made), lambda s: None)
    clock.now += 49
    pool.sweep_idle()
    assert pool.idle_count() == 1 and not made[0].closed
    clock.now += 2
    pool.sweep_idle()
    assert made[0].closed and pool.idle_count() == 0
    assert made[0].sent == [] and pool.keeper is None


def test_a_session_whose_keepalive_fails_is_closed_and_not_handed_out_again() -> None:
    """A keepalive that cannot be sent closes the session; the next call opens a new one."""
    clock = FakeClock()
    made: list[FakeConnection] = []
    pool = keepalive_pool(clock)
    pool.run("k", opener(made), lambda s: None)
    made[0].send_fails = True
    clock.now += 30
    pool.sweep_idle()
    assert made[0].closed and pool.idle_count() == 0
    assert pool.run("k", opener(made), lambda s: s.connection) is made[1]


def test_a_session_being_sent_a_keepalive_is_not_borrowed_meanwhile() -> None:
    """A call arriving while the keepalive is being sent (from another thread, without
    waiting for the send) gets a fresh session, and both are pooled afterwards."""
    clock = FakeClock()
    made: list[FakeConnection] = []
    pool = keepalive_pool(clock)
    pool.run("k", opener(made), lambda s: None)
    borrowed: list[Any] = []

    def call_meanwhile() -> None:
        caller = threading.Thread(
            target=lambda: borrowed.append(pool.run("k", opener(made), lambda s: s.connection))
        )
        caller.start()
        caller.join(timeout=2)  # a pool lock held across the send would stall it here

    made[0].on_send = call_meanwhile
    clock.now += 30
    pool.sweep_idle()
    assert borrowed == [made[1]] and made[0].sent == [KEEPALIVE]
    assert pool.idle_count() == 2 and not made[0].closed


def test_a_session_idle_past_the_cap_is_closed_despite_its_keepalives() -> None:
    """Keepalives do not count as use: idle_s after its last call the session is closed."""
    clock = FakeClock()
    made: list[FakeConnection] = []
    pool = keepalive_pool(clock)
    pool.run("k", opener(made), lambda s: None)
    for _ in range(9):
        clock.now += 30
        pool.sweep_idle()
    assert len(made[0].sent) == 9 and pool.idle_count() == 1  # 270 s idle
    clock.now += 30
    pool.sweep_idle()
    assert made[0].closed and pool.idle_count() == 0 and len(made[0].sent) == 9


def test_the_keepalive_thread_sweeps_at_its_cadence() -> None:
    """The thread, started when the first session is pooled, sweeps every sweep_every_s of
    its (here fake) wait: 60 s of waits send two keepalives."""
    clock = FakeClock()
    made: list[FakeConnection] = []
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        if len(waits) > 12:
            return True
        clock.now += seconds
        return False

    pool = keepalive_pool(clock, wait=wait)
    assert pool.keeper is None
    pool.run("k", opener(made), lambda s: None)
    assert pool.keeper is not None
    pool.close()  # waits for the thread, which ends after its 12 sweeps
    assert pool.sweep_every_s == 5 and waits == [5.0] * 13
    assert made[0].sent == [KEEPALIVE, KEEPALIVE] and made[0].closed


def test_close_stops_the_keepalive_thread_and_closes_every_session() -> None:
    """close() (worker shutdown) ends the waiting thread at once and closes idle sessions; a
    call still running then has its session closed when it finishes, not pooled."""
    made: list[FakeConnection] = []
    pool = WsPool(idle_s=300, keepalive=KEEPALIVE)  # the real wait: only close() ends it
    pool.run("a", opener(made), lambda s: None)
    pool.run("b", opener(made), lambda s: pool.close())
    assert pool.keeper is not None and not pool.keeper.is_alive()
    assert all(c.closed for c in made) and pool.idle_count() == 0


def test_a_keepalive_reaches_the_server_and_close_sends_a_normal_close() -> None:
    """Over a real loopback WebSocket opened by WsLink, the pool's thread sends SLNG's
    keepalive message, and close() ends the session with close code 1000."""
    heard: queue.Queue[str | bytes | int | None] = queue.Queue()

    def record(ws: ServerConnection) -> None:
        try:
            for message in ws:
                heard.put(message)
        finally:
            heard.put(ws.close_code)

    server = serve(record, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}/"
    link = WsLink(
        "SLNG", "SLNG_API_KEY", "sk-test", idle_s=300, keepalive=KEEPALIVE, keepalive_s=0.1
    )

    def open_session() -> Any:
        return link.open(url, deadline=Deadline(2), max_bytes=1 << 16, headers={})

    try:
        link.pool.run("k", open_session, lambda s: None)
        assert heard.get(timeout=2) == KEEPALIVE
        link.close()
        while (said := heard.get(timeout=2)) == KEEPALIVE:
            pass
        assert said == 1000
    finally:
        link.close()
        server.shutdown()
