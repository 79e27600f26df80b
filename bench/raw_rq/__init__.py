"""The raw-RQ reference for bench/run.py: no-op tasks and a bare DRF endpoint that enqueues them.

Nothing here imports sentinelflow: it is what a team would write with DRF and RQ alone, so the
benchmark can tell the cost of the control plane (database record, events, metrics, auth) apart
from the cost of Django, DRF, RQ and Redis themselves.
"""
