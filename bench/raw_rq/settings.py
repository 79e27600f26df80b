"""Minimal Django settings for the bare DRF + RQ reference endpoint (bench/raw_rq/views.py).

No database, no middleware, no authentication: one APIView that enqueues into RQ. Served by
bench/run.py with `gunicorn -w 2 bench.raw_rq.wsgi:application`, on the same Redis (REDIS_URL).
"""

import os

SECRET_KEY = os.environ.get("SECRET_KEY", "bench-raw-rq")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["rest_framework"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.raw_rq.urls"
DATABASES: dict = {}
USE_TZ = True
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
RAW_QUEUE = os.environ.get("RAW_SUBMIT_QUEUE", "bench")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_THROTTLE_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
