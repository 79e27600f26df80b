"""The multi-host deployment the drills run on, built from tests/multihost/hosts.py.

- db: a private PostgreSQL cluster (initdb in a temporary directory, run as the postgres user);
- r1, r2, r3: a redis-server each (r1 the first primary) and a Redis sentinel each, quorum 2;
- a1, a2: app hosts, each running gunicorn, one rqworker with the scheduler and the sentinelflow sentinel,
  configured with REDIS_SENTINELS and the database's address, as docs/operations.md describes.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis
import requests

from sentinelflow_site.processes import child_environment, stop_process
from tests.integration.redis_sentinels import SERVICE, agreed_primary, sentinel_command, server_command

from .hosts import PREFIX, SUBNET, Host, Network, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
REDIS_PORT = 6379
SENTINEL_PORT = 26379
WEB_PORT = 8000
API_KEY = "multihost-key"
QUEUES = ("high", "default", "low")


def postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise RuntimeError("PostgreSQL's initdb is not installed (apt-get install postgresql)")
    return found[-1].parent


@dataclass
class AppHost:
    host: Host
    env: dict[str, str]
    log_dir: Path
    web: subprocess.Popen | None = None
    worker: subprocess.Popen | None = None
    repairs: subprocess.Popen | None = None
    worker_name: str = ""
    starts: int = 0
    up: bool = False  # whether the load balancer (the drills' client) sends it requests

    @property
    def base_url(self) -> str:
        return f"http://{self.host.address}:{WEB_PORT}"

    def _log(self, what: str) -> Path:
        self.starts += 1
        return self.log_dir / f"{self.host.name}-{what}-{self.starts}.log"

    def start_web(self) -> None:
        args = [sys.executable, "-m", "gunicorn", "-c", "sentinelflow_site/gunicorn.conf.py"]
        args += ["sentinelflow_site.wsgi:application", "--no-control-socket"]
        self.web = self.host.start(args, env=self.env, log=self._log("web"), cwd=REPO_ROOT)

    def start_worker(self) -> None:
        self.worker_name = f"{self.host.name}-worker-{secrets.token_hex(3)}"
        args = [sys.executable, "manage.py", "rqworker", *QUEUES, "--with-scheduler", "--name", self.worker_name]
        self.worker = self.host.start(args, env=self.env, log=self._log("worker"), cwd=REPO_ROOT)

    def start_repairs(self) -> None:
        args = [sys.executable, "manage.py", "sentinel"]
        self.repairs = self.host.start(args, env=self.env, log=self._log("sentinel"), cwd=REPO_ROOT)

    def start_all(self) -> None:
        self.start_web()
        self.start_worker()
        self.start_repairs()
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 60) -> None:
        def healthy() -> bool:
            try:
                return requests.get(f"{self.base_url}/readyz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(healthy, timeout=timeout, what=f"{self.host.name}'s web server to be ready")
        self.up = True

    def stop(self, process: subprocess.Popen | None, grace: float = 30) -> None:
        if process is not None:
            stop_process(process, timeout=grace)


@dataclass
class Cluster:
    network: Network
    log_dir: Path
    database_url: str
    redis_hosts: list[Host]
    apps: list[AppHost]
    redis_servers: dict[str, subprocess.Popen] = field(default_factory=dict)
    sentinel_processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return [(host.address, SENTINEL_PORT) for host in self.redis_hosts]

    def primary(self) -> tuple[str, int] | None:
        return agreed_primary(self.sentinels)

    def redis_host(self, address: str) -> Host:
        return next(host for host in self.redis_hosts if host.address == address)

    def start_redis_server(self, host: Host, replica_of: tuple[str, int] | None = None) -> None:
        data = self.log_dir / f"redis-{host.name}"
        data.mkdir(exist_ok=True)
        command = server_command(host.address, REDIS_PORT, data, replica_of=replica_of)
        log = self.log_dir / f"{host.name}-redis-{int(time.time())}.log"
        self.redis_servers[host.name] = host.start(command, env=child_environment(), log=log)

    def kill_redis_server(self, host: Host) -> None:
        process = self.redis_servers[host.name]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def database(self) -> psycopg.Connection:
        return psycopg.connect(self.database_url, autocommit=True, connect_timeout=5)


def build_cluster(log_dir: Path) -> tuple[Network, Cluster]:
    network = Network()
    try:
        return network, _build(network, log_dir)
    except BaseException:
        network.close()
        raise


def _build(network: Network, log_dir: Path) -> Cluster:
    db = network.add_host("db", 30)
    redis_hosts = [network.add_host(f"r{n}", 10 + n) for n in (1, 2, 3)]
    app_hosts = [network.add_host(f"a{n}", 20 + n) for n in (1, 2)]

    database_url = start_postgres(db, log_dir)
    cluster = Cluster(network=network, log_dir=log_dir, database_url=database_url, redis_hosts=redis_hosts, apps=[])
    primary = (redis_hosts[0].address, REDIS_PORT)
    for number, host in enumerate(redis_hosts):
        cluster.start_redis_server(host, replica_of=None if number == 0 else primary)
    for host in redis_hosts:
        for _ in range(50):
            try:
                redis.Redis(host=host.address, port=REDIS_PORT, socket_timeout=1).ping()
                break
            except redis.RedisError:
                time.sleep(0.1)
        command = sentinel_command(host.address, SENTINEL_PORT, primary, log_dir)
        cluster.sentinel_processes[host.name] = host.start(
            command, env=child_environment(), log=log_dir / f"{host.name}-sentinel.log"
        )
    wait_for(lambda: cluster.primary() == primary, timeout=30, what="the Redis sentinels to agree on r1")
    # Every sentinel must know the other two before a failover can get its quorum's votes.
    wait_for(lambda: all(sentinels_known(h) >= 2 for h in redis_hosts), timeout=30, what="sentinels to meet")

    env = child_environment(
        DEBUG="0",
        ENV_FILE="/dev/null",
        SECRET_KEY="multihost-secret",
        API_KEY=API_KEY,
        REDIS_URL="redis://unused-with-sentinels:6379/0",
        REDIS_SENTINELS=",".join(f"{h}:{p}" for h, p in cluster.sentinels),
        REDIS_SENTINEL_MASTER=SERVICE,
        DATABASE_URL=database_url,
        ALLOWED_HOSTS="*",
        THROTTLE_RATE_KEY="100000/s",
        THROTTLE_RATE_ANON="100000/s",
        SENTINEL_INTERVAL="1",
        WEB_CONCURRENCY="2",
        WEB_THREADS="4",
        PYTHONUNBUFFERED="1",
    )
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if migrate.returncode != 0:
        raise RuntimeError(f"migrate failed:\n{migrate.stdout}\n{migrate.stderr}")
    for host in app_hosts:
        app = AppHost(host=host, env={**env, "BIND": f"{host.address}:{WEB_PORT}"}, log_dir=log_dir)
        cluster.apps.append(app)
    for app in cluster.apps:
        app.start_web()
        app.start_worker()
        app.start_repairs()
    for app in cluster.apps:
        app.wait_healthy(timeout=90)
    return cluster


def sentinels_known(host: Host) -> int:
    try:
        client = redis.Redis(host=host.address, port=SENTINEL_PORT, socket_timeout=1)
        return len(client.sentinel_sentinels(SERVICE))
    except redis.RedisError:
        return 0


def start_postgres(db: Host, log_dir: Path) -> str:
    """A private PostgreSQL cluster listening on the db host's address; returns its URL."""
    bin_dir = postgres_bin()
    # Not under pytest's temporary directory: the postgres user may not enter it.
    data = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-pgdata-"))
    shutil.chown(data, "postgres", "postgres")
    db.scratch.append(data)
    as_postgres = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
    subprocess.run(
        [*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
        check=True,
        capture_output=True,
        timeout=120,
        cwd="/",
    )
    # Only this test network's hosts may connect (and without a password: the database is thrown away).
    with (data / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all all {SUBNET}.0/24 trust\n")
    settings = ["-c", f"listen_addresses={db.address}", "-c", "port=5432", "-c", f"unix_socket_directories={data}"]
    settings += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "max_connections=200"]
    db.start(
        [*as_postgres, str(bin_dir / "postgres"), "-D", str(data), *settings],
        env=child_environment(),
        log=log_dir / "db-postgres.log",
    )
    server = f"postgres://postgres@{db.address}:5432"

    def answers() -> bool:
        try:
            psycopg.connect(f"{server}/postgres", connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    wait_for(answers, timeout=60, what="the private PostgreSQL to start")
    with psycopg.connect(f"{server}/postgres", autocommit=True) as connection:
        connection.execute("CREATE DATABASE sentinelflow")
    return f"{server}/sentinelflow"
