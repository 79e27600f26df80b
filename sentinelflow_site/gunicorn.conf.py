"""gunicorn settings for scripts/run.sh (production). Every value can be overridden from the environment."""

import os

from prometheus_client import multiprocess

bind = os.environ.get("BIND", f"127.0.0.1:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threads, each read and write of a client socket limited to WEB_CLIENT_TIMEOUT seconds: a client that
# stalls mid-request holds one thread for that long, not a whole worker for good (sync workers did).
worker_class = "sentinelflow_site.gunicorn_worker.ThreadWorker"
threads = int(os.environ.get("WEB_THREADS", "8"))
timeout = int(os.environ.get("WEB_TIMEOUT", "30"))
accesslog = "-" if os.environ.get("ACCESS_LOG", "0") == "1" else None
# Load the app once in the master: faster worker starts, less memory through copy-on-write.
preload_app = True


def child_exit(server, worker):
    # prometheus_client multiprocess mode: drop the live gauges of a gunicorn worker that exited.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
