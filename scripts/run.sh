#!/usr/bin/env bash
# Production-style stack on this machine: migrate, collect static files, then gunicorn (WEB_CONCURRENCY
# workers, prometheus_client multiprocess mode so /metrics sums them), RQ_WORKERS workers with the
# scheduler, and the sentinel. Needs SECRET_KEY, API_KEY and a reachable REDIS_URL (see README: Configuration).
# SIGTERM or Ctrl-C stops everything; if one process dies, the rest are stopped too.
. "$(dirname "$0")/_venv.sh" requirements.txt
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$ROOT/var/prometheus}"
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"

python manage.py migrate --noinput
python manage.py collectstatic --noinput --verbosity 0

pids=()
queues="${QUEUES:-high,default,low}"
stop() {
  trap - TERM INT
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap 'stop; exit 0' TERM INT

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

wait -n "${pids[@]}"
status=$?
echo "run.sh: a process exited (status $status); stopping the others" >&2
stop
exit "$status"
