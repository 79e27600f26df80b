"""Settings for sentinelflow, read from the environment (see .env.example).

Every variable is documented in README.md's configuration table and docs/design.md. A bad value
raises ImproperlyConfigured naming the variable; manage.py and the WSGI entry
point print it as one line and exit.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import overload
from urllib.parse import urlsplit

import dj_database_url
import django
from django.core.exceptions import ImproperlyConfigured
from dotenv import load_dotenv
from redis.backoff import ExponentialBackoff
from redis.connection import parse_url
from redis.retry import Retry

BASE_DIR = Path(__file__).resolve().parent.parent


@overload
def env_str(name: str, default: str) -> str: ...
@overload
def env_str(name: str, default: None = None) -> str | None: ...
def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def env_bool(name: str, default: bool) -> bool:
    value = env_str(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {value!r}")


def env_number(name: str, default: float, *, minimum: float = 0, integer: bool = True) -> float:
    value = env_str(name)
    if value is None:
        return default
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ImproperlyConfigured(f"{name} must be {kind}, got {value!r}") from None
    if number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value!r}")
    return number


def env_rate(name: str, default: str) -> str:
    """A DRF throttle rate such as 100/s or 6000/min."""
    value = env_str(name, default) or default
    if not re.fullmatch(r"\d+/(s|sec|second|m|min|minute|h|hour|d|day)", value):
        raise ImproperlyConfigured(f"{name} must look like 100/s, 600/min or 10000/hour, got {value!r}")
    return value


def env_optional_rate(name: str) -> str | None:
    """A throttle rate that is off (None: no limit) unless the variable is set."""
    return env_rate(name, "") if env_str(name) else None


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in (env_str(name, default) or "").split(",") if item.strip()]


# Development defaults that every command shares: the .env file at the project root (scripts/dev.sh writes
# one on its first run), or the file ENV_FILE names. Variables already in the environment win over it; without
# the file nothing changes, so the production rules below stay strict. The test suite (TESTING=1) never reads
# it: a developer's .env must not change what the tests see.
if not env_bool("TESTING", False):
    load_dotenv(env_str("ENV_FILE", str(BASE_DIR / ".env")), override=False)

DEBUG = env_bool("DEBUG", False)
TESTING = env_bool("TESTING", False)

_secret_key = env_str("SECRET_KEY")
if _secret_key is None:
    if not (DEBUG or TESTING):
        raise ImproperlyConfigured("SECRET_KEY is required when DEBUG=0")
    # A per-run key is fine for development: sessions simply end at restart.
    _secret_key = secrets.token_urlsafe(50)
SECRET_KEY = _secret_key

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1")
if TESTING:
    ALLOWED_HOSTS.append("testserver")

# Behind HTTPS (docs/security.md: Deploying behind a proxy). All off by default: `runstack` and the
# smoke flow speak plain HTTP on loopback. `manage.py check --deploy` is clean with them on.
# The header a TLS-terminating proxy sets to "https" (e.g. X-Forwarded-Proto); only name it when the
# proxy always sets or overwrites it, or any client could claim HTTPS.
_proxy_ssl_header = env_str("SECURE_PROXY_SSL_HEADER")
if _proxy_ssl_header:
    if not re.fullmatch(r"[A-Za-z0-9-]+", _proxy_ssl_header):
        raise ImproperlyConfigured(f"SECURE_PROXY_SSL_HEADER must be a header name, got {_proxy_ssl_header!r}")
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Probes and the scraper talk to the pod directly, over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = int(env_number("SECURE_HSTS_SECONDS", 0))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
# Origins (scheme://host[:port]) whose unsafe requests CSRF accepts besides the request's own host:
# the public address of an ingress on another host, e.g. https://jobs.example.com.
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")
for _origin in CSRF_TRUSTED_ORIGINS:
    if not re.fullmatch(r"https?://[^/\s]+", _origin):
        raise ImproperlyConfigured(f"CSRF_TRUSTED_ORIGINS entries look like https://jobs.example.com, got {_origin!r}")

# The bootstrap API key; more keys come from the database.
SENTINELFLOW_API_KEY = env_str("API_KEY", "dev-key" if DEBUG or TESTING else None)
# Reads are open by default; READS_REQUIRE_KEY=1 makes GET endpoints need a key too.
SENTINELFLOW_READS_REQUIRE_KEY = env_bool("READS_REQUIRE_KEY", False)

REDIS_URL = env_str("REDIS_URL", "redis://localhost:6379/0")
if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(f"REDIS_URL must start with redis://, rediss:// or unix://, got {REDIS_URL!r}")
try:
    parse_url(REDIS_URL)
except ValueError as error:
    raise ImproperlyConfigured(f"REDIS_URL is not a valid Redis URL ({error}), got {REDIS_URL!r}") from None
# redis-py reads a path that is not a number as database 0: refuse it rather than use the wrong database.
if REDIS_URL.startswith(("redis://", "rediss://")) and not re.fullmatch(r"/?\d*", urlsplit(REDIS_URL).path):
    raise ImproperlyConfigured(f"REDIS_URL must end in a database number such as /0, got {REDIS_URL!r}")


def env_sentinels(name: str) -> list[tuple[str, int]]:
    """Comma-separated host:port pairs ([v6]:port for IPv6 addresses) of Redis sentinels."""
    sentinels = []
    for item in env_list(name, ""):
        match = re.fullmatch(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>\d{1,5})", item)
        if not match or not 0 < int(match["port"]) < 65536:
            raise ImproperlyConfigured(f"{name} must be comma-separated host:port pairs, got {item!r}")
        sentinels.append((match["v6"] or match["host"], int(match["port"])))
    return sentinels


# Redis Sentinel: when REDIS_SENTINELS is set, every Redis client asks these sentinels for the current primary
# of REDIS_SENTINEL_MASTER (and asks again after a failover); REDIS_URL then only gives the database number and
# the data nodes' password, its host and port are not used.
REDIS_SENTINELS = env_sentinels("REDIS_SENTINELS")
REDIS_SENTINEL_MASTER = env_str("REDIS_SENTINEL_MASTER", "mymaster")
if not re.fullmatch(r"[A-Za-z0-9._-]+", REDIS_SENTINEL_MASTER):
    raise ImproperlyConfigured(f"REDIS_SENTINEL_MASTER must be a Sentinel service name, got {REDIS_SENTINEL_MASTER!r}")
REDIS_SENTINEL_PASSWORD = env_str("REDIS_SENTINEL_PASSWORD")
if REDIS_SENTINELS and not REDIS_URL.startswith(("redis://", "rediss://")):
    raise ImproperlyConfigured("REDIS_URL must be a redis:// or rediss:// URL when REDIS_SENTINELS is set")


def parse_database_url(url: str) -> dj_database_url.DBConfig:
    """dj-database-url's reading of DATABASE_URL, plus libpq's multi-host form it refuses.

    postgres://user:pass@db1:5432,db2:5432/name?target_session_attrs=read-write names several hosts: libpq
    tries them in turn and, with target_session_attrs=read-write, connects only to the one that accepts
    writes, so that clients follow a promoted primary. HOST and PORT become libpq's comma-separated lists.
    """
    scheme, separator, rest = url.partition("://")
    credentials, at, hosts_and_path = rest.rpartition("@")
    hosts, slash, path = hosts_and_path.partition("/")
    if not separator or "," not in hosts:
        return dj_database_url.parse(url)
    names, ports = [], []
    for item in hosts.split(","):
        match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._%-]+)(?::(\d{1,5}))?", item)
        if not match:
            raise ValueError(f"{item!r} is not a host or host:port in the host list")
        names.append(match[1].strip("[]"))
        ports.append(match[2] or "5432")
    parsed = dj_database_url.parse(f"{scheme}://{credentials}{at}{names[0]}{slash}{path}")
    parsed["HOST"], parsed["PORT"] = ",".join(names), ",".join(ports)
    return parsed


try:
    DATABASES = {"default": parse_database_url(env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"))}
except ValueError as error:
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {error}") from None
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server read while a worker writes; the timeout rides out short write locks.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
    # Tests use a file, not Django's shared in-memory database, so that worker threads can write
    # concurrently as they do in production (WAL + busy timeout instead of table locks).
    # One file per test run (by process id), so that test runs side by side never share a database.
    DATABASES["default"]["TEST"] = {
        "NAME": str(Path(tempfile.gettempdir()) / f"sentinelflow-test-{os.getpid()}.sqlite3")
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = int(env_number("DB_CONN_MAX_AGE", 60))
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)


def env_networks(name: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    try:
        return [ipaddress.ip_network(item, strict=False) for item in env_list(name, "")]
    except ValueError as error:
        raise ImproperlyConfigured(f"{name} must be a comma-separated list of addresses or networks: {error}") from None


# Proxies whose X-Forwarded-For is believed (with NUM_PROXIES); empty: any peer's, as DRF does.
SENTINELFLOW_TRUSTED_PROXIES = env_networks("TRUSTED_PROXIES")

MAX_BODY_BYTES = int(env_number("MAX_BODY_BYTES", 1_048_576, minimum=1))
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_BODY_BYTES

SENTINEL_INTERVAL = env_number("SENTINEL_INTERVAL", 5, minimum=0.1, integer=False)

# Queues are priorities; workers drain them in this order.
SENTINELFLOW_QUEUES = env_list("QUEUES", "high,default,low")
if "default" not in SENTINELFLOW_QUEUES:
    raise ImproperlyConfigured("QUEUES must include 'default'")
SENTINELFLOW_DEFAULT_MAX_RETRIES = int(env_number("DEFAULT_MAX_RETRIES", 3))
SENTINELFLOW_DEFAULT_TIMEOUT = int(env_number("DEFAULT_JOB_TIMEOUT", 300, minimum=1))
SENTINELFLOW_MAX_TIMEOUT = int(env_number("MAX_JOB_TIMEOUT", 86_400, minimum=1))
# Automatic retries wait min(RETRY_BACKOFF_MAX, RETRY_BACKOFF_BASE * 2**(n-1)) seconds, jittered.
SENTINELFLOW_RETRY_BACKOFF_BASE = env_number("RETRY_BACKOFF_BASE", 2, integer=False)
SENTINELFLOW_RETRY_BACKOFF_MAX = env_number("RETRY_BACKOFF_MAX", 600, integer=False)
# Webhooks to loopback, private and link-local addresses are refused unless allowed here.
SENTINELFLOW_WEBHOOK_ALLOW_PRIVATE = env_bool("WEBHOOK_ALLOW_PRIVATE", False)
SENTINELFLOW_WEBHOOK_TIMEOUT = env_number("WEBHOOK_TIMEOUT", 10, minimum=0.1, integer=False)
# How long RQ keeps a finished job in Redis; the database keeps the record until retention prunes it.
SENTINELFLOW_RQ_RESULT_TTL = int(env_number("RQ_RESULT_TTL", 600))

# Retention: finished jobs (and their timelines) older than this many days are deleted; 0 keeps them for good.
SENTINELFLOW_RETENTION_DAYS = {
    "succeeded": env_number("RETENTION_SUCCEEDED_DAYS", 7, integer=False),
    "failed": env_number("RETENTION_FAILED_DAYS", 30, integer=False),
    "cancelled": env_number("RETENTION_CANCELLED_DAYS", 30, integer=False),
}


def env_days_by_type(name: str) -> dict[str, float]:
    """`type=days,...` (e.g. `report=1,webhook=0.5`): a job type's max age in days, whatever its status."""
    found = {}
    for item in env_list(name, ""):
        job_type, _, days = item.partition("=")
        try:
            found[job_type.strip()] = float(days)
        except ValueError:
            raise ImproperlyConfigured(f"{name}: expected type=days, got {item!r}") from None
        if not job_type.strip() or found[job_type.strip()] < 0:
            raise ImproperlyConfigured(f"{name}: expected type=days with days >= 0, got {item!r}")
    return found


SENTINELFLOW_RETENTION_BY_TYPE = env_days_by_type("RETENTION_BY_TYPE")
# Rows per DELETE (short transactions keep the table responsive) and per sentinel pass (the pass stays short).
SENTINELFLOW_RETENTION_BATCH_SIZE = int(env_number("RETENTION_BATCH_SIZE", 1000, minimum=1))
SENTINELFLOW_RETENTION_PER_PASS = int(env_number("RETENTION_PER_PASS", 20_000, minimum=0))
# Completion callbacks: attempts per job (then given up), and the backoff between them (base * 2**(n-1), capped).
SENTINELFLOW_CALLBACK_MAX_ATTEMPTS = int(env_number("CALLBACK_MAX_ATTEMPTS", 8, minimum=1))
SENTINELFLOW_CALLBACK_BACKOFF_BASE = env_number("CALLBACK_BACKOFF_BASE", 5, integer=False)
SENTINELFLOW_CALLBACK_BACKOFF_MAX = env_number("CALLBACK_BACKOFF_MAX", 3600, integer=False)
# A result whose JSON is larger than this is stored as a marker ({"truncated": true, ...}), never in full.
SENTINELFLOW_MAX_RESULT_BYTES = int(env_number("MAX_RESULT_BYTES", 262_144, minimum=1))

# Job types beyond the built-in ones: modules to import at start (each app's job_types module is found anyway).
SENTINELFLOW_HANDLER_MODULES = env_list("SENTINELFLOW_HANDLER_MODULES", "")

EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend" if DEBUG else "django.core.mail.backends.smtp.EmailBackend",
)
if TESTING:
    EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "sentinelflow@localhost")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = int(env_number("EMAIL_PORT", 25))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_prometheus",
    "rest_framework",
    "django_filters",
    "django_rq",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "jobs",
]
# Django's Tasks API: django.tasks from Django 6.0 on; before that the `django-tasks` backport, an app of its own.
if django.VERSION < (6, 0):
    INSTALLED_APPS.append("django_tasks")
# `@task` functions run as sentinelflow jobs (jobs.backends): enqueue stores a job, get_result reads it.
TASKS = {"default": {"BACKEND": "jobs.backends.SentinelflowBackend"}}

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "jobs.api.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "sentinelflow_site.urls"
# After logging in at /api-auth/login/ without a ?next=: the job list in the browsable API.
LOGIN_REDIRECT_URL = "/jobs"
WSGI_APPLICATION = "sentinelflow_site.wsgi.application"
# Both /jobs and /jobs/ are routed explicitly; a redirect would turn a POST into a GET.
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# The admin's and the browsable API's assets, served by the app itself (whitenoise) in production.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
if DEBUG or TESTING:
    # No collectstatic needed in development and tests: serve straight from the apps' static folders.
    STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    WHITENOISE_USE_FINDERS = True
    WHITENOISE_AUTOREFRESH = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis: one URL for the queues, the cache (throttling, idempotency, locks) and the counters.
# With TESTING=1 the same wiring runs on an in-process fakeredis server.
# One quick retry, not redis-py's default of several with backoff: with Redis down a request must
# answer fast (jobs are then kept as pending), and the readiness probe must not hang.
_redis_options: dict = {
    "socket_connect_timeout": 1,
    "socket_timeout": 10,
    "health_check_interval": 30,
    "retry": Retry(ExponentialBackoff(cap=0.1, base=0.02), retries=1),
}
if TESTING:
    try:
        import fakeredis  # test-only dependency: requirements-dev.txt
    except ImportError:
        raise ImproperlyConfigured(
            "TESTING=1 (the tests) needs the test requirements: pip install -r requirements-dev.txt "
            "(./scripts/test.sh installs them)"
        ) from None

    _redis_options = {"connection_class": fakeredis.FakeRedisConnection}
_redis_cache_options: dict = {"CONNECTION_POOL_KWARGS": _redis_options}
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "sentinelflow",
        "OPTIONS": _redis_cache_options,
    }
}
if REDIS_SENTINELS and not TESTING:
    # django-redis's Sentinel factory: one pool whose connections ask the sentinels for the primary, and ask
    # again when it refuses them or answers READONLY (a demoted primary). The queues, the metrics, the leases and
    # the locks share this pool (RQ_QUEUES below), so they all follow a failover.
    from sentinelflow_site.redis_sentinel import cache_sentinel_options, sentinel_location

    CACHES["default"]["LOCATION"] = sentinel_location(REDIS_URL, REDIS_SENTINEL_MASTER)
    CACHES["default"]["OPTIONS"] = {
        **_redis_cache_options,
        **cache_sentinel_options(REDIS_SENTINELS, REDIS_SENTINEL_PASSWORD),
    }
RQ_QUEUES = {name: {"USE_REDIS_CACHE": "default"} for name in SENTINELFLOW_QUEUES}
# Jobs run in the worker process (no fork per job); WORKER_CONCURRENCY > 1 runs that many in threads.
SENTINELFLOW_WORKER_CONCURRENCY = int(env_number("WORKER_CONCURRENCY", 1, minimum=1))
# Most jobs a worker takes per round trip (fewer when jobs are slow); 1 takes them one at a time.
SENTINELFLOW_WORKER_BATCH_SIZE = int(env_number("WORKER_BATCH_SIZE", 50, minimum=1))
RQ = {
    "COMMIT_MODE": "auto",
    "WORKER_CLASS": "jobs.worker.ConcurrentWorker" if SENTINELFLOW_WORKER_CONCURRENCY > 1 else "jobs.worker.Worker",
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "jobs.api.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["jobs.api.permissions.ApiKeyForWrites"],
    "DEFAULT_PARSER_CLASSES": ["jobs.api.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "jobs.api.negotiation.JsonFirstNegotiation",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "EXCEPTION_HANDLER": "sentinelflow_site.exception_handler.api_exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["jobs.api.throttling.ApiKeyRateThrottle", "jobs.api.throttling.AnonymousRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        # Opt-in: unset, one API key may use all the server can do (and the request skips the throttle's
        # Redis round trip); requests without a key and unknown keys keep their limits below.
        "api_key": env_optional_rate("THROTTLE_RATE_KEY"),
        "anon": env_rate("THROTTLE_RATE_ANON", "20/s"),
        "invalid_key": env_rate("THROTTLE_RATE_INVALID_KEY", "30/min"),
        "login_failure": env_rate("THROTTLE_RATE_LOGIN_FAILURES", "5/min"),
    },
    "NUM_PROXIES": int(env_number("NUM_PROXIES", 0)) if env_str("NUM_PROXIES") else None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "sentinelflow API",
    "DESCRIPTION": "Submit, inspect, retry and cancel jobs. Writes need an API key in the X-API-Key header.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

TEST_RUNNER = "sentinelflow_site.test_runner.PytestTestRunner"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
