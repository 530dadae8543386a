"""Settings, read from the environment through one `env` object.

Embedded defaults (SQLite, a filesystem Celery broker, LiveKit at 127.0.0.1:7880 with key
`devkey` and a 40-byte dev secret) make `make run` work on a bare machine. `DJANGO_ENV=production`
removes every default for a secret and refuses to start without them.
"""

import contextlib
import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("DISPATCHPORTAL_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()
DJANGO_ENV = env.str("DJANGO_ENV", default="development")
PRODUCTION = DJANGO_ENV == "production"


def _required(name: str, dev_default: str) -> str:
    """A value production must be given; development falls back to `dev_default`."""
    if PRODUCTION:
        value = env.str(name, default="")
        if not value:
            raise ImproperlyConfigured(f"{name} must be set when DJANGO_ENV=production")
        return value
    return env.str(name, default=dev_default)


SECRET_KEY = _required("SECRET_KEY", "dev-insecure-secret-key-only-for-local-runs-0123456789")
DEBUG = env.bool("DEBUG", default=not PRODUCTION)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[] if PRODUCTION else ["*"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# LiveKit. The secret is read here and only handed to livekit-api; never logged or shown.
LIVEKIT_URL = _required("LIVEKIT_URL", "http://127.0.0.1:7880")
LIVEKIT_API_KEY = _required("LIVEKIT_API_KEY", "devkey")
# 32+ bytes, as HS256 wants (PyJWT warns on every token signed with a shorter key); what
# bin/run-portal gives the LiveKit server it starts.
LIVEKIT_API_SECRET = _required("LIVEKIT_API_SECRET", "devsecret-for-local-runs-only-0123456789")
LIVEKIT_TIMEOUT_S = env.float("LIVEKIT_TIMEOUT_S", default=5.0)


def _ws_url(url: str) -> str:
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, *parts[1:]))


PUBLIC_LIVEKIT_URL = env.str("PUBLIC_LIVEKIT_URL", default=_ws_url(LIVEKIT_URL))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served by the portal itself: /api/docs/ works offline
    "simple_history",
    "django_celery_beat",
    "agents_app",
    "rooms_app",
    "watch_app",
    "operator_views",  # the operator's pages over all three: admin, dashboard, doctor
]

MIDDLEWARE = [
    "dispatchportal.logging.RequestIdMiddleware",
    "dispatchportal.health.ProbeMiddleware",  # /healthz, /readyz: before anything reads the Host
    "dispatchportal.exceptions.ApiJsonErrorsMiddleware",  # inside the request id: 500s name it
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
]

ROOT_URLCONF = "dispatchportal.urls"
WSGI_APPLICATION = "dispatchportal.wsgi.application"

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

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
# Keep connections across requests and tasks: opening a PostgreSQL connection costs more than
# a whole webhook's work. `?conn_max_age=` in the URL overrides. Connections are not checked
# before each request (Django's default, CONN_HEALTH_CHECKS off: a SELECT 1 per request would
# be a third of a token's database time); after a database restart the first use of a stale
# connection fails and Django closes it at the request's end. Every caller that matters tries
# again: the token path itself (`token_fact_intake`), LiveKit (it retries a webhook that got a
# 5xx). Celery workers check their connection before each task (`dispatchportal.celery`).
if not DATABASES["default"].get("CONN_MAX_AGE"):
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (gunicorn, worker, beat) share the file: wait for locks.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
    # Take the write lock when a transaction begins: a read-then-write transaction racing
    # another writer would otherwise fail at once with "database is locked" (no busy wait).
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
    # Write-ahead log: readers never wait for the writer, and a commit appends to the log
    # instead of rewriting and syncing a rollback journal (every token with agents is one).
    # synchronous=NORMAL loses nothing when a process dies; a power cut may take back the
    # last commits. (Production runs on PostgreSQL.)
    DATABASES["default"]["OPTIONS"]["init_command"] = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
else:
    # Django's documented server-side binding: parameters travel apart from the SQL, and
    # psycopg prepares a statement once a connection has run it `prepare_threshold` times
    # (the token path's INSERT, the ledger's repeated look-ups), so PostgreSQL stops parsing
    # and planning them anew. Behind a transaction-mode pooler this needs PgBouncer 1.21+
    # with `max_prepared_statements`, or `?server_side_binding=false` is not an option: set
    # prepare_threshold to None in that case.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("server_side_binding", True)
    DATABASES["default"]["OPTIONS"].setdefault("prepare_threshold", 5)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis, when given, carries the Celery broker and the shared cache (rate limits, rule-set
# version, metrics counters). Without it: a filesystem broker and a file cache, which several
# local processes can share without any server.
REDIS_URL = env.str("REDIS_URL", default="")
CACHE_KEY_PREFIX = env.str("CACHE_KEY_PREFIX", default="dp")
# How often each process checks whether rules, agents or API clients changed elsewhere.
CONFIG_CHECK_INTERVAL_S = env.float("CONFIG_CHECK_INTERVAL_S", default=1.0)
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT = "dispatchportal.broker:RedisTransport"  # survives a Redis restart
    # max_retries 0: a publish while Redis is down fails at once (callers on the request path
    # catch it) instead of retrying for about 6 s (kombu's default connect retries).
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {"visibility_timeout": 3600, "max_retries": 0}
    CACHES = {
        "default": {
            "BACKEND": "dispatchportal.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": CACHE_KEY_PREFIX,
        }
    }
else:
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT = "dispatchportal.broker:Transport"  # kombu's, with atomic writes
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
    for _folder in ("queue", "processed", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = 60
CELERY_TASK_TIME_LIMIT = 90
# Celery's Django fixup closes the database connections after every task unless this is set;
# then it closes them every this many tasks. A task opening its own PostgreSQL connection spent
# a quarter of its time connecting. The worker checks each connection before a task instead
# (`dispatchportal.celery.task_connections_check`).
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Alert deliveries and worker health polls go to their own queue, run by their own worker.
OUTBOUND_QUEUE = env.str("OUTBOUND_QUEUE", default="outbound")
CELERY_TASK_ROUTES = ("dispatchportal.celery.task_route",)
# Workers log through LOGGING below (JSON with room, agent, dispatch and request ids), not
# through the plain-text handler Celery would otherwise put on the root logger.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = "UTC"
RECONCILE_INTERVAL_S = env.int("RECONCILE_INTERVAL_S", default=30)
# Dispatch lifecycle (rooms_app): LiveKit retries and reconcile fan-out.
DISPATCH_RETRY_BACKOFF_S = env.float("DISPATCH_RETRY_BACKOFF_S", default=1.0)
DISPATCH_RETRY_BACKOFF_MAX_S = env.float("DISPATCH_RETRY_BACKOFF_MAX_S", default=60.0)
DISPATCH_MAX_RETRIES = env.int("DISPATCH_MAX_RETRIES", default=8)
# How long after CreateDispatch LiveKit may still be assigning the job with none listed yet.
DISPATCH_ASSIGNMENT_WINDOW_S = env.float("DISPATCH_ASSIGNMENT_WINDOW_S", default=10.0)
# The Dispatch API's own CreateDispatch try (the queued task retries past it).
DISPATCH_INLINE_TIMEOUT_S = env.float("DISPATCH_INLINE_TIMEOUT_S", default=1.0)
RECONCILE_CONCURRENCY = env.int("RECONCILE_CONCURRENCY", default=16)
# Rooms a reconcile pass handles at a time (its memory beyond LiveKit's room list), and the
# deadline of its one ListRooms, whose answer carries every room (about 23 MB at 100,000).
RECONCILE_CHUNK_ROOMS = env.int("RECONCILE_CHUNK_ROOMS", default=1000)
RECONCILE_LIST_ROOMS_TIMEOUT_S = env.float("RECONCILE_LIST_ROOMS_TIMEOUT_S", default=60.0)

# Retention, in days (0 keeps forever): the "Delete rows past their retention" periodic task
# (dispatchportal/retention.py) deletes older rows every RETENTION_INTERVAL_S seconds, in
# batches of RETENTION_BATCH_SIZE rows, each in a short transaction of its own.
RETENTION_INTERVAL_S = env.int("RETENTION_INTERVAL_S", default=300)
RETENTION_BATCH_SIZE = env.int("RETENTION_BATCH_SIZE", default=1000)
# Finished rooms, with their dispatches and timelines, counted from when the room finished.
RETENTION_ROOMS_DAYS = env.float("RETENTION_ROOMS_DAYS", default=30.0)
# Ended dispatches (and their timelines) of any room, counted from when they ended: rooms that
# stay live for long or whose name is reused keep their row, not every old attempt.
RETENTION_DISPATCHES_DAYS = env.float("RETENTION_DISPATCHES_DAYS", default=30.0)
# Token facts already applied to the ledger (the doctor reads the last 6 hours).
RETENTION_TOKEN_FACTS_DAYS = env.float("RETENTION_TOKEN_FACTS_DAYS", default=7.0)
# Webhook events (their ids deduplicate LiveKit's redeliveries, which come within minutes).
RETENTION_WEBHOOK_EVENTS_DAYS = env.float("RETENTION_WEBHOOK_EVENTS_DAYS", default=2.0)
RETENTION_CANARY_RUNS_DAYS = env.float("RETENTION_CANARY_RUNS_DAYS", default=30.0)
RETENTION_ALERT_DELIVERIES_DAYS = env.float("RETENTION_ALERT_DELIVERIES_DAYS", default=30.0)

# /readyz: each check (database, migrations, Redis, LiveKit) must answer within this.
READYZ_TIMEOUT_S = env.float("READYZ_TIMEOUT_S", default=1.0)

# Alerts, worker presence and canaries (watch_app).
ALERTS_EVALUATE_INTERVAL_S = env.int("ALERTS_EVALUATE_INTERVAL_S", default=10)
ALERT_LIVEKIT_DOWN_AFTER_S = env.float("ALERT_LIVEKIT_DOWN_AFTER_S", default=60.0)
ALERT_RECONCILE_FAILURES = env.int("ALERT_RECONCILE_FAILURES", default=3)
ALERT_RETRY_BACKOFF_S = env.float("ALERT_RETRY_BACKOFF_S", default=2.0)
ALERT_RETRY_BACKOFF_MAX_S = env.float("ALERT_RETRY_BACKOFF_MAX_S", default=300.0)
WORKER_POLL_INTERVAL_S = env.int("WORKER_POLL_INTERVAL_S", default=2)
WORKER_POLL_TIMEOUT_S = env.float("WORKER_POLL_TIMEOUT_S", default=3.0)
WORKER_POLL_CONCURRENCY = env.int("WORKER_POLL_CONCURRENCY", default=8)
# Outbound calls (watch_app/net.py): the largest answer read; past it the call fails.
OUTBOUND_MAX_ANSWER_BYTES = env.int("OUTBOUND_MAX_ANSWER_BYTES", default=65536)
# A pending alert delivery whose attempt is this overdue is sent again by the sweep.
ALERT_DELIVERY_STALE_S = env.float("ALERT_DELIVERY_STALE_S", default=60.0)
# A worker at or above this load rejects jobs (livekit-agents' default load_threshold is 0.7).
WORKER_FULL_LOAD = env.float("WORKER_FULL_LOAD", default=0.7)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "agents_app.authentication.ApiClientAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # DRF's JSON parser plus: no lone surrogates, no deep nesting (400 naming the field).
    "DEFAULT_PARSER_CLASSES": ["dispatchportal.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "dispatchportal.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "EXCEPTION_HANDLER": "dispatchportal.exceptions.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Dispatch Portal API",
    "DESCRIPTION": "Mint LiveKit participant tokens with managed agent dispatch, "
    "explain rules, and follow dispatches until the agent joins.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",  # pinned in requirements.txt, never a CDN
    "SWAGGER_UI_FAVICON_HREF": "/favicon.ico",
    "REDOC_DIST": "SIDECAR",
    # The token endpoint is a plain Django view: this hook lists it, with its description.
    "PREPROCESSING_HOOKS": ["agents_app.apis.openapi_endpoints"],
    "ENUM_NAME_OVERRIDES": {
        "DispatchStatusEnum": "rooms_app.models.Dispatch.Status",
        "DispatchDeliveryEnum": "rooms_app.models.Dispatch.Delivery",
        "DeliveryEnum": ["token", "explicit"],
    },
}

# Prometheus /metrics: with METRICS_TOKEN only for that bearer; without it loopback only.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# Every process (gunicorn workers, Celery, manage.py) writes its samples here and /metrics sums
# them. prometheus_client picks its storage when first imported, so this runs before that.
PROMETHEUS_MULTIPROC_DIR = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(VAR_DIR / "prometheus"))
# Unwritable: metrics are then not recorded (a warning says so); the portal still runs.
with contextlib.suppress(OSError):
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
        },
    },
    "filters": {"context": {"()": "dispatchportal.logging.ContextFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["context"]}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
