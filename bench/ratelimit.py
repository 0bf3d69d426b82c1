"""Shared provider throttle against the emulator: achieved rate, busiest second, 429s, cost.

Three phases, each with its own API key (so its own throttle and emulator buckets):
  rate    the emulator allows R requests/s per key (`rate_limit_rps`); K threads loop
          acquire → POST TTS → release with a permanent backlog for D seconds. Prints the
          achieved rate / R, the busiest 1 s window / R (as the throttle admitted them and as
          the emulator received them) and the emulator's 429 count, which must be 0.
  cap     no rate limit; the emulator caps C in flight with latency L; the throttle allows C.
          Prints achieved / (C/L), the emulator's max in flight and 429s.
  cost    uncontended acquire and release (median of N) next to a Redis PING in the same run,
          and a sequential call loop with and without the throttle (P7).
Needs Redis: `python -m tests.services run -- .venv/bin/python -m bench.ratelimit`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.throughput import start, wait_http
from emulator.dials import fingerprint
from jobs.catalog_limits import ProviderLimits
from tests.services import free_port
from workers.throttle import CallOutcome, ProviderThrottle, credential_fingerprint

CLI = str(Path(sys.executable).parent / "speechbatch")
KEYS = {"rate": "sk-bench-rate-0001", "cap": "sk-bench-cap-0002", "cost": "sk-bench-cost-0003"}
TTS = "/slng/v1/tts/slng/deepgram/aura:2-en"
BODY = {"text": "Rate limiter benchmark line.", "model": "aura-2-thalia-en"}


def busiest_window(stamps: list[float], width: float = 1.0) -> int:
    """Most timestamps in any half-open window [t, t + width)."""
    stamps, best, first = sorted(stamps), 0, 0
    for last, stamp in enumerate(stamps):
        while stamp - stamps[first] >= width:
            first += 1
        best = max(best, last - first + 1)
    return best


def interleaved_medians_us(fns: list[Callable[[], object]], n: int) -> list[float]:
    """Median µs of each fn, called in turn n times so all see the same machine load."""
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(n):
        for fn, taken in zip(fns, samples, strict=True):
            started = time.perf_counter()
            fn()
            taken.append(time.perf_counter() - started)
    return [statistics.median(taken) * 1e6 for taken in samples]


def hammer(
    throttle: ProviderThrottle, client: httpx.Client, key: str, threads: int, seconds: float
) -> tuple[list[float], Counter[int], float, float]:
    """K threads: acquire → POST → release until time is up; (admissions, statuses, t0, t1)."""
    fp, auth = credential_fingerprint(key), {"Authorization": f"Bearer {key}"}
    admissions: list[float] = []
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    t0 = time.monotonic()
    stop = t0 + seconds

    def worker() -> None:
        while (left := stop - time.monotonic()) > 0:
            permit = throttle.acquire("slng", fp, max_wait_s=min(2.0, left))
            if permit is None:
                continue
            admitted = time.monotonic()
            outcome = CallOutcome.OTHER
            try:
                status = client.post(TTS, json=BODY, headers=auth).status_code
                outcome = {200: CallOutcome.SUCCESS, 429: CallOutcome.RATE_LIMITED}.get(
                    status, CallOutcome.OTHER
                )
            finally:
                permit.release(outcome)
            with lock:
                admissions.append(admitted)
                statuses[status] += 1

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return [a for a in admissions if a < stop], statuses, t0, stop


def arrivals(client: httpx.Client, key: str) -> list[float]:
    """When the emulator received each request made with `key` (its wall clock)."""
    log = client.get("/_emulator/requests").json()
    return [r["started_at"] for r in log if r["key_fingerprint"] == fingerprint(key)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=40.0, help="R, requests/s")
    parser.add_argument("--threads", type=int, default=16, help="K")
    parser.add_argument("--seconds", type=float, default=10.0, help="D per phase")
    parser.add_argument("--cap", type=int, default=8, help="C for the cap phase")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="L for the cap phase")
    parser.add_argument("--checks", type=int, default=1000, help="N for the cost phase")
    args = parser.parse_args()
    broker = os.environ.get("SPEECHBATCH_BROKER_URL")
    if not broker:
        raise SystemExit(
            "SPEECHBATCH_BROKER_URL is not set; run via `python -m tests.services run`"
        )

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "EMULATOR_API_KEYS": ",".join(KEYS.values())}
    log = Path(tempfile.mkdtemp(prefix="sb-ratelimit-")) / "emulator.log"
    emulator = start([CLI, "emulator", "--port", str(port)], env, log)
    conn: redis.Redis[Any] = redis.Redis.from_url(broker)
    pool = httpx.Limits(max_connections=args.threads + 4, max_keepalive_connections=args.threads)
    try:
        wait_http(f"{base}/_emulator/health")
        with httpx.Client(base_url=base, limits=pool, timeout=30) as client:
            run_phases(args, conn, client)
    finally:
        for name in conn.scan_iter(match="speechbatch:throttle:{slng:*"):
            conn.delete(name)
        emulator.terminate()
        emulator.wait(15)


def run_phases(args: argparse.Namespace, conn: redis.Redis[Any], client: httpx.Client) -> None:
    rate, k, d = args.rate, args.threads, args.seconds
    limits = {"slng": ProviderLimits(k, rate)}
    client.patch("/_emulator/config", json={"rate_limit_rps": rate, "concurrency": k})
    client.delete("/_emulator/requests")
    throttle = ProviderThrottle(conn, limits, lease_s=30)
    admitted, statuses, _, _ = hammer(throttle, client, KEYS["rate"], k, d)
    stats = client.get("/_emulator/stats").json()
    received = arrivals(client, KEYS["rate"])
    print(f"ratelimit: R={rate:g}/s K={k} threads D={d:g}s (emulator rate_limit_rps=R, cap K)")
    print(f"  achieved rate / R              {len(admitted) / d / rate:6.3f}")
    print(f"  busiest 1 s window / R         {busiest_window(admitted) / rate:6.3f}  (admitted)")
    print(f"  busiest 1 s window / R         {busiest_window(received) / rate:6.3f}  (emulator)")
    rejected = stats["by_status"].get("429", 0)
    print(f"  emulator 429s                  {rejected:6d}  (rate_limited {stats['rate_limited']})")
    print(f"  statuses seen by the threads   {dict(statuses)}")

    cap, latency = args.cap, args.latency_ms / 1000
    client.patch(
        "/_emulator/config",
        json={"rate_limit_rps": 0, "concurrency": cap, "latency_ms": args.latency_ms},
    )
    client.delete("/_emulator/requests")
    throttle = ProviderThrottle(conn, {"slng": ProviderLimits(cap)}, lease_s=30)
    admitted, statuses, _, _ = hammer(throttle, client, KEYS["cap"], k, d)
    stats = client.get("/_emulator/stats").json()
    print(f"cap: C={cap} L={args.latency_ms:g}ms K={k} threads D={d:g}s (no rate limit)")
    print(f"  achieved / (C/L)               {len(admitted) / d / (cap / latency):6.3f}")
    print(f"  emulator max in flight         {stats['max_in_flight']:6d}  (C={cap})")
    print(f"  emulator 429s                  {stats['by_status'].get('429', 0):6d}")

    client.patch("/_emulator/config", json={"concurrency": 0, "latency_ms": 0})
    cost(args.checks, conn, client)


def cost(n: int, conn: redis.Redis[Any], client: httpx.Client) -> None:
    key = KEYS["cost"]
    fp, auth = credential_fingerprint(key), {"Authorization": f"Bearer {key}"}
    # A rate far above what one thread reaches, so both checks run but never wait.
    throttle = ProviderThrottle(conn, {"slng": ProviderLimits(1000, 1e6)}, lease_s=30)
    permits: list[Any] = []
    ping, acquire, release = interleaved_medians_us(
        [
            conn.ping,
            lambda: permits.append(throttle.acquire("slng", fp, max_wait_s=1)),
            lambda: permits.pop().release(CallOutcome.SUCCESS),
        ],
        n,
    )

    def plain() -> None:
        client.post(TTS, json=BODY, headers=auth)

    def throttled() -> None:
        permit = throttle.acquire("slng", fp, max_wait_s=1)
        assert permit is not None
        try:
            plain()
        finally:
            permit.release(CallOutcome.SUCCESS)

    for _ in range(50):  # warm the connection pool and the emulator's speech cache
        plain()
    bare, with_throttle = interleaved_medians_us([plain, throttled], n // 2)
    print(f"cost: median of {n} uncontended checks, same Redis, same run")
    print(f"  Redis PING                     {ping:8.1f} us")
    print(f"  acquire (slot + GCRA, 1 EVALSHA) {acquire:6.1f} us  = {acquire / ping:.2f} x PING")
    print(f"  release (+ AIMD, 1 EVALSHA)    {release:8.1f} us  = {release / ping:.2f} x PING")
    print(f"  emulator call, L=0             {bare:8.1f} us without the throttle")
    ratio = with_throttle / bare
    print(f"  emulator call, L=0, throttled  {with_throttle:8.1f} us  = {ratio:.2f} x")
    for latency_ms in (50, 200):
        call_us = latency_ms * 1000 + bare
        ratio = (call_us + acquire + release) / call_us
        print(f"  per call at L={latency_ms}ms             {ratio:8.4f} x (acquire+release added)")


if __name__ == "__main__":
    main()
