#!/usr/bin/env bash
# Production-style stack on this machine: migrate, collect static files, then gunicorn (WEB_CONCURRENCY
# workers, prometheus_client multiprocess mode so /metrics sums them), RQ_WORKERS workers with the
# scheduler, and the sentinel. Needs SECRET_KEY, API_KEY and REDIS_URL (and REDIS_SENTINELS on Redis Sentinel; the
# processes find the primary themselves; see README: Production and docs/operations.md).
# SIGTERM or Ctrl-C stops everything; if one process exits, the others are stopped too and run.sh exits
# non-zero. Each process runs in a process group of its own, so what it forked (gunicorn's workers, the RQ
# scheduler) is stopped with it: nothing is left running or listening.
. "$(dirname "$0")/_venv.sh" requirements.txt
# The production path takes its configuration from the environment: the development .env that dev.sh
# writes (DEBUG=1) must not turn it into a debug server. ENV_FILE=path reads a file of your own.
export ENV_FILE="${ENV_FILE:-/dev/null}"
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$ROOT/var/prometheus}"
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"

python manage.py migrate --noinput
python manage.py collectstatic --noinput --verbosity 0

STOP_GRACE_SECONDS="${STOP_GRACE_SECONDS:-30}"
pids=()
queues="${QUEUES:-high,default,low}"
# Whether any process group started below still has a member.
running() {
  for pid in "${pids[@]}"; do kill -0 -- "-$pid" 2>/dev/null && return 0; done
  return 1
}
stop() {
  trap - TERM INT
  # Web and sentinel stop at once; a worker finishes its current job first (warm shutdown). The whole group
  # gets the signal: an RQ scheduler whose worker was killed stops too.
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  local ticks=$((STOP_GRACE_SECONDS * 10))
  while ((ticks-- > 0)) && running; do sleep 0.1; done
  # Past the grace period, whatever is left is killed.
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
}
trap 'stop; exit 0' TERM INT

# Job control: every process started below leads a process group of its own.
set -m
gunicorn -c sentinelflow_site/gunicorn.conf.py sentinelflow_site.wsgi:application &
pids+=($!)
for _ in $(seq 1 "${RQ_WORKERS:-2}"); do
  # The worker processes write no web metrics; keep them out of the multiprocess directory.
  env -u PROMETHEUS_MULTIPROC_DIR python manage.py rqworker ${queues//,/ } --with-scheduler &
  pids+=($!)
done

# The sentinel: enqueues jobs stored while Redis was down, re-runs jobs whose worker died, restores what Redis lost.
env -u PROMETHEUS_MULTIPROC_DIR python manage.py sentinel &
pids+=($!)
set +m

# `set -e` (from _venv.sh) would end the script at a failed wait, before the stop below: keep the status.
status=0
wait -n "${pids[@]}" || status=$?
echo "run.sh: a process exited (status $status); stopping the others" >&2
stop
exit $((status == 0 ? 1 : status))
