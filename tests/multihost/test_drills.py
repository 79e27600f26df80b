"""Failover drills on the multi-host deployment (tests/multihost/cluster.py): nothing accepted is lost.

Each drill prints `drill NAME: A accepted, S succeeded, L lost, D duplicate runs` with its timings. A job is
*accepted* when a submit answered 201; *lost* when it has not succeeded by the drill's deadline; a *duplicate
run* is a job that was started more than once (its JobEvent history has two `started` transitions).
The drills run in order on one deployment, each leaving it whole (three Redis hosts, two app hosts).
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

import pytest
import redis
import requests

from tests.integration.redis_sentinels import quick_client, wait_for_new_primary

from .cluster import API_KEY, SENTINEL_PORT, Cluster
from .hosts import wait_for

pytestmark = pytest.mark.integration

# How long the split outlasts the failover: the near host's writes to the old primary pile up meanwhile.
SPLIT_HOLD = 8
SETTLE_TIMEOUT = 120  # every accepted job must have succeeded this long after the drill's load ends


@dataclass
class Answer:
    host: str
    status: int  # 0: no HTTP answer (connection refused, timeout)
    at: float
    job_id: str | None = None
    job_status: str | None = None


@dataclass
class Load:
    """`total` submits at `rate` per second, spread round-robin over the app hosts marked up."""

    cluster: Cluster
    total: int
    rate: float
    body: dict = field(default_factory=lambda: {"type": "echo", "payload": {"drill": True}})
    threads: int = 6
    answers: list[Answer] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        self.began = time.monotonic()
        counter = itertools.count()
        for _ in range(self.threads):
            thread = threading.Thread(target=self._send, args=(counter,), daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def _send(self, counter: itertools.count) -> None:
        session = requests.Session()
        while (number := next(counter)) < self.total:
            delay = self.began + number / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            up = [app for app in self.cluster.apps if app.up]
            app = up[number % len(up)]
            headers = {"X-API-Key": API_KEY}
            try:
                response = session.post(f"{app.base_url}/jobs", json=self.body, headers=headers, timeout=15)
            except requests.RequestException:
                self._record(Answer(app.host.name, 0, time.monotonic()))
                continue
            answer = Answer(app.host.name, response.status_code, time.monotonic())
            if response.status_code == 201:
                job = response.json()
                answer.job_id, answer.job_status = job["job_id"], job["status"]
            self._record(answer)
        session.close()

    def _record(self, answer: Answer) -> None:
        with self._lock:
            self.answers.append(answer)

    def submitted(self) -> int:
        with self._lock:
            return len(self.answers)

    def join(self) -> Load:
        for thread in self._workers:
            thread.join(timeout=self.total / self.rate + 120)
        return self

    @property
    def accepted(self) -> list[str]:
        return [answer.job_id for answer in self.answers if answer.job_id]

    def statuses(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for answer in self.answers:
            counts[answer.status] = counts.get(answer.status, 0) + 1
        return counts


@dataclass
class Outcome:
    accepted: int
    succeeded: int
    lost: int
    duplicates: int
    restored: int

    def line(self, name: str, details: str) -> str:
        return (
            f"drill {name}: {self.accepted} accepted, {self.succeeded} succeeded, {self.lost} lost, "
            f"{self.duplicates} duplicate runs ({details})"
        )


def settle(cluster: Cluster, job_ids: list[str], *, timeout: float = SETTLE_TIMEOUT) -> Outcome:
    """Wait until every accepted job has succeeded (or the timeout); count lost jobs and duplicate runs."""
    deadline = time.monotonic() + timeout
    with cluster.database() as connection:
        while True:
            rows = connection.execute(
                "SELECT status, count(*) FROM jobs_job WHERE job_id = ANY(%s::uuid[]) GROUP BY status", (job_ids,)
            ).fetchall()
            counts = dict(rows)
            if counts.get("succeeded", 0) == len(job_ids) or time.monotonic() > deadline:
                break
            time.sleep(1)
        duplicates = connection.execute(
            "SELECT count(*) FROM (SELECT e.job_id FROM jobs_jobevent e JOIN jobs_job j ON j.id = e.job_id "
            "WHERE j.job_id = ANY(%s::uuid[]) AND e.to_status = 'started' GROUP BY e.job_id HAVING count(*) > 1) d",
            (job_ids,),
        ).fetchone()[0]
        restored = connection.execute(
            "SELECT count(DISTINCT e.job_id) FROM jobs_jobevent e JOIN jobs_job j ON j.id = e.job_id "
            "WHERE j.job_id = ANY(%s::uuid[]) AND e.actor = 'sentinel (restored)'",
            (job_ids,),
        ).fetchone()[0]
    succeeded = counts.get("succeeded", 0)
    return Outcome(len(job_ids), succeeded, len(job_ids) - succeeded, duplicates, restored)


def role(address: tuple[str, int]) -> str:
    try:
        client = quick_client(*address)
        value = client.role()[0]
        client.close()
    except redis.RedisError:
        return "down"
    return value.decode() if isinstance(value, bytes) else str(value)


def wait_whole(cluster: Cluster) -> tuple[str, int]:
    """Wait until the sentinels agree on a primary with two replicas attached; return the primary."""

    def whole() -> tuple[str, int] | None:
        primary = cluster.primary()
        if primary is None:
            return None
        try:
            info = quick_client(*primary).info("replication")
        except redis.RedisError:
            return None
        return primary if info.get("connected_slaves") == 2 else None

    return wait_for(whole, timeout=60, what="the Redis hosts to be whole again (a primary and two replicas)")


def test_drill_1_primary_killed(cluster: Cluster, report_drill):
    primary = wait_whole(cluster)
    victim = cluster.redis_host(primary[0])
    load = Load(cluster, total=2000, rate=100).start()
    wait_for(lambda: load.submitted() >= 500, timeout=60, what="500 submits before the kill")

    killed_at = time.monotonic()
    cluster.kill_redis_server(victim)
    new_primary, _ = wait_for_new_primary(cluster.sentinels, primary, timeout=60)
    agreed_at = time.monotonic()
    load.join()
    # The killed server comes back as a replica of the new primary, as an operator would restart it.
    cluster.start_redis_server(victim, replica_of=new_primary)

    statuses = load.statuses()
    assert set(statuses) <= {201, 503}, f"answers other than 201 and 503 during the failover: {statuses}"
    queued_after = [a.at for a in load.answers if a.at >= agreed_at and a.job_status == "queued"]
    assert queued_after, "no job was queued after the sentinels agreed"
    queued_again = min(queued_after) - agreed_at
    assert queued_again <= 10, f"new jobs were queued only {queued_again:.1f} s after the sentinels agreed"
    pending = sum(1 for a in load.answers if a.job_status == "pending")

    outcome = settle(cluster, load.accepted)
    report_drill(
        outcome.line(
            "primary-killed",
            f"failover {agreed_at - killed_at:.1f} s from SIGKILL to the sentinels agreeing; new jobs queued "
            f"{queued_again:.1f} s after; {pending} answered 201 pending, "
            f"{statuses.get(503, 0)} answered 503",
        )
    )
    assert outcome.lost == 0, outcome
    wait_whole(cluster)


def test_drill_2_split_brain(cluster: Cluster, report_drill):
    primary = wait_whole(cluster)
    old = cluster.redis_host(primary[0])
    others = [host for host in cluster.redis_hosts if host is not old]
    near, far = cluster.apps  # near keeps reaching the old primary; far is cut off from it
    # Jobs of 0.1 s, so that the near host's worker does not drain at once what the old primary takes.
    body = {"type": "sleep", "payload": {"seconds": 0.1}}
    # Many client threads: requests to a host whose Redis connections were cut hang until they time out.
    load = Load(cluster, total=600, rate=40, body=body, threads=24).start()
    wait_for(lambda: load.submitted() >= 100, timeout=60, what="100 submits before the split")

    # Two sides: {the old primary's host with its sentinel, the near app host} and {the two other Redis
    # hosts, the far app host}. The sentinels of the majority side promote a replica; the near host asks the
    # only sentinel it reaches, the old primary's, which cannot fail over without a quorum, and keeps
    # writing to the old primary.
    split_at = time.monotonic()
    cuts = [(old, host) for host in [*others, far.host]] + [(near.host, host) for host in others]
    for one, other in cuts:
        one.cut_off_from(other)
    try:
        majority = [(host.address, SENTINEL_PORT) for host in others]
        _new_primary, failover_seconds = wait_for_new_primary(majority, primary, timeout=60)
        time.sleep(SPLIT_HOLD)
        assert role(primary) == "master", "the old primary should still take writes on its side of the split"
    finally:
        for one, other in cuts:
            one.reconnect_to(other)
    healed_at = time.monotonic()
    window = [a for a in load.answers if split_at <= a.at <= healed_at and a.job_id]
    # Rejoining, the old primary becomes a replica of the new one and drops what it took during the split.
    wait_for(lambda: role(primary) == "slave", timeout=60, what="the old primary to rejoin as a replica")
    rejoined_seconds = time.monotonic() - healed_at
    load.join()

    statuses = load.statuses()
    assert set(statuses) <= {201, 503}, statuses
    outcome = settle(cluster, load.accepted)
    report_drill(
        outcome.line(
            "split-brain",
            f"failover {failover_seconds:.1f} s; {len(window)} accepted during the split, "
            f"{outcome.restored} restored from the database; old primary a replica {rejoined_seconds:.1f} s "
            f"after the heal; {statuses.get(503, 0)} answered 503",
        )
    )
    assert outcome.lost == 0, outcome
    # The drill tested what it says: jobs the old primary took during the split were restored from the database.
    assert outcome.restored > 0, "no job accepted during the split needed restoring"
    assert near.worker is not None and near.worker.poll() is None, "the near host's worker exited"
    assert far.worker is not None and far.worker.poll() is None, "the far host's worker exited"
    wait_whole(cluster)


def started_jobs(cluster: Cluster, job_ids: list[str]) -> list[str]:
    with cluster.database() as connection:
        rows = connection.execute(
            "SELECT job_id::text FROM jobs_job WHERE status = 'started' AND job_id = ANY(%s::uuid[])", (job_ids,)
        ).fetchall()
    return [row[0] for row in rows]


def recovered_jobs(cluster: Cluster, job_ids: list[str]) -> list[str]:
    """Of `job_ids`, those the sentinel queued again after their run was lost (started -> queued)."""
    with cluster.database() as connection:
        rows = connection.execute(
            "SELECT DISTINCT j.job_id::text FROM jobs_job j JOIN jobs_jobevent e ON e.job_id = j.id "
            "WHERE j.job_id = ANY(%s::uuid[]) AND e.from_status = 'started' AND e.to_status = 'queued' "
            "AND e.actor = 'sentinel'",
            (job_ids,),
        ).fetchall()
    return [row[0] for row in rows]


def test_drill_3_app_host_lost(cluster: Cluster, report_drill):
    wait_whole(cluster)
    survivor, lost_host = cluster.apps
    # 3 s jobs: a run shows `started` once it has lasted a second (a shorter one is written once, at its end).
    load = Load(cluster, total=24, rate=12, body={"type": "sleep", "payload": {"seconds": 3.0}}).start()
    # Both workers busy: one job runs on each host (one worker per host, one job at a time).
    running = wait_for(
        lambda: (jobs := started_jobs(cluster, load.accepted)) and len(jobs) >= 2 and jobs,
        timeout=60,
        what="a job running on each app host",
        interval=0.05,
    )

    lost_host.up = False
    killed_at = time.monotonic()
    lost_host.host.kill_all()  # web, worker, scheduler, sentinel: every process of the host at once
    recovered = wait_for(lambda: recovered_jobs(cluster, running), timeout=60, what="the lost run to be queued again")
    requeue_seconds = time.monotonic() - killed_at
    load.join()

    outcome = settle(cluster, load.accepted)
    report_drill(
        outcome.line(
            "app-host-lost",
            f"{len(recovered)} job(s) {lost_host.host.name} was running queued again {requeue_seconds:.1f} s after "
            f"the kill and run on {survivor.host.name}; a duplicate run here is a run the kill interrupted",
        )
    )
    assert requeue_seconds <= 30, f"queued again only after {requeue_seconds:.1f} s"
    assert outcome.lost == 0, outcome
    # The lost host comes back for the next drill.
    lost_host.host.processes.clear()
    lost_host.start_all()


def test_drill_4_rolling_restart(cluster: Cluster, report_drill):
    wait_whole(cluster)
    for app in cluster.apps:
        app.wait_healthy()
    load = Load(cluster, total=1200, rate=40).start()
    time.sleep(3)
    restarts = []
    for app in cluster.apps:
        began = time.monotonic()
        app.up = False  # out of the load balancer first
        time.sleep(1)
        app.stop(app.web)  # SIGTERM: gunicorn finishes its requests
        app.stop(app.worker)  # SIGTERM: warm shutdown, the current job finishes
        app.start_web()
        app.start_worker()
        app.wait_healthy()
        restarts.append(f"{app.host.name} {time.monotonic() - began:.1f} s")
        time.sleep(2)
    load.join()

    errors = [a for a in load.answers if a.status >= 500 or a.status == 0]
    outcome = settle(cluster, load.accepted)
    report_drill(outcome.line("rolling-restart", f"restarts: {', '.join(restarts)}; {len(errors)} answers 5xx or none"))
    assert not errors, f"hosts that were up answered 5xx or nothing: {[(a.host, a.status) for a in errors][:10]}"
    assert outcome.lost == 0, outcome
