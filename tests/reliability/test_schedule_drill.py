"""Schedule drill: two real sentinels run a 1 s schedule, one is SIGKILLed; each tick still makes one job."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from tests.integration.harness import API_KEY, parse_time, wait_until

from .drills import Drill

pytestmark = pytest.mark.integration


def schedule_jobs(api, name: str) -> list[dict]:
    jobs, url = [], f"/jobs?schedule={name}&limit=500"
    while url:
        page = api.get(url).json()
        jobs += page["results"]
        url = page["next"]
    return jobs


def test_two_sentinels_one_killed_submit_one_job_per_tick(drill: Drill) -> None:
    api = drill.web()
    created = api.post("/schedules", {"name": "every-second", "type": "echo", "interval": 1})
    assert created.status_code == 201, created.text
    first, second = drill.sentinel(interval=0.5), drill.sentinel(interval=0.5)

    wait_until(lambda: len(schedule_jobs(api, "every-second")) >= 3, timeout=30, message=lambda: "no ticks")
    drill.kill(first)
    killed_at = time.time()
    # The survivor takes the lock once the dead one's lapses (at most 20 s) and catches up tick by tick.
    wait_until(
        lambda: (
            (last := api.get("/schedules/every-second").json()["last_run_at"])
            and parse_time(last).timestamp() >= killed_at + 3
        ),
        timeout=45,
        message=lambda: f"the survivor submits no ticks: {api.get('/schedules/every-second').text}",
    )
    paused = api.session.patch(
        api.url("/schedules/every-second"), json={"enabled": False}, headers={"X-API-Key": API_KEY}, timeout=10
    )
    assert paused.status_code == 200, paused.text
    time.sleep(1.5)  # a pass that was under way has ended

    run_ats = sorted(parse_time(job["run_at"]) for job in schedule_jobs(api, "every-second"))
    drill.note(f"{len(run_ats)} ticks, one job each, across a SIGKILLed sentinel")
    assert len(run_ats) >= 6
    # One job per tick: consecutive seconds, none missing, none twice.
    assert run_ats == [run_ats[0] + timedelta(seconds=n) for n in range(len(run_ats))]
    assert second.alive()
