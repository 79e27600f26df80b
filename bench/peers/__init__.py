"""The durable peers of bench/run.py's peers scenario: one small Django project per system, run from .venv-bench.

Each package holds `settings.py` (its Django settings, on top of base_settings) and `peer.py` (its no-op
tasks, how to enqueue one and many, its worker command, and how many jobs its database records as done).
driver.py runs one peer's measurements inside .venv-bench and prints them as JSON.
"""
