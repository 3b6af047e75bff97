"""Settings, read from the environment (see docs/operations.md, "Configuration").

The embedded default needs no variable at all: SQLite file, in-memory channel layer,
local-memory cache, DEBUG on. Production sets DEBUG=0, SECRET_KEY, ALLOWED_HOSTS,
DATABASE_URL and REDIS_URL.
"""

import os
from pathlib import Path

import dj_database_url
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from exc


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


DEBUG = env_bool("DEBUG", True)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set in the environment when DEBUG is off.")
    # Development only: never used with DEBUG off (see above).
    SECRET_KEY = "dev-insecure-only-for-debug-" + "x" * 40

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    # Before django_tasks_db, so its db_worker command is bulkops' (with the reaper).
    "bulkops",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_tasks",
    "django_tasks_db",
    "django_ratelimit",
    "csp",
]
# The benchmark (benchmarks/: manage.py bulkops_bench and seed_scale) is a development
# tool that the product never imports: installed only when asked for (docs/benchmarks.md).
if env_bool("BULKOPS_BENCHMARKS", False):
    INSTALLED_APPS.append("benchmarks")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # A NUL in a URL is a 400 before anything (a database) can choke on it.
    "bulkops.middleware.RejectNulMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # After WhiteNoise: static files need no policy; every page gets one (settings below).
    "bulkops.csp.CSPMiddleware",
    "bulkops.middleware.RequestSizeLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"

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

WSGI_APPLICATION = "project.wsgi.application"
ASGI_APPLICATION = "project.asgi.application"

# --- Database -----------------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DB_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default runs the server and the worker in one process on two
    # threads: WAL lets readers work during a write, IMMEDIATE transactions take the
    # write lock up front (no "database is locked" on a read-to-write upgrade), and
    # the timeout makes a writer wait for the other instead of failing. The backend
    # queues the process's transactions first come, first served (project/sqlite):
    # a request waits for the worker's chunk in progress, not for the whole operation.
    DATABASES["default"]["ENGINE"] = "project.sqlite"
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool(
    "DB_POOL", True
):
    # PostgreSQL: each process keeps a pool of open connections (psycopg_pool, Django's
    # OPTIONS["pool"]) instead of connecting afresh for every request — under daphne
    # each request runs on a thread of its own, so CONN_MAX_AGE cannot keep one, and a
    # new connection costs more than a cheap request itself. A process holds at most
    # DB_POOL_MAX_SIZE connections (waiting up to DB_POOL_TIMEOUT s for a free one), so
    # PostgreSQL's max_connections must cover N servers and M workers: see
    # docs/production.md. DB_POOL=0 turns it off (e.g. behind PgBouncer).
    if DATABASES["default"].get("CONN_MAX_AGE"):
        raise ImproperlyConfigured(
            "DB_CONN_MAX_AGE keeps connections open per thread, the pool (DB_POOL) per "
            "process: set DB_POOL=0 to use DB_CONN_MAX_AGE."
        )
    # A pooled connection is checked (an empty query) as it is taken: one that died
    # while it sat in the pool (a database restart, a terminated backend) is replaced
    # there instead of failing the request or the worker's next task.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env_int("DB_POOL_MIN_SIZE", 1),
        "max_size": env_int("DB_POOL_MAX_SIZE", 10),
        "timeout": env_int("DB_POOL_TIMEOUT", 2),
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache, channel layer: Redis when REDIS_URL is set ---------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
# Keeps several deployments (or concurrent test runs) on one Redis apart.
REDIS_PREFIX = os.environ.get("REDIS_PREFIX", "bulkops")
if REDIS_URL:
    CACHES = {
        "default": {
            # django-redis: the Redis cache django-ratelimit supports (atomic incr).
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": REDIS_PREFIX,
            # Redis away must not hang a request: rate limits then fail open
            # (bulkops/ratelimits.py), so fail fast.
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            # Pub/sub: events are a live view of the database row (the truth), so
            # at-most-once fan-out is what we want, with no per-channel capacity to
            # silently drop bursts (RedisChannelLayer's default capacity is 100).
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                # redis-py 8 defaults socket_timeout to 5 s, which kills idle
                # subscribers (channels_redis #422); we wait as long as needed.
                "hosts": [{"address": REDIS_URL, "socket_timeout": None}],
                "prefix": REDIS_PREFIX,
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    # django-ratelimit refuses the local-memory cache because its counters are not
    # shared between processes. The embedded default is a single process (server and
    # worker together), so the counters are exact there; with REDIS_URL they live in
    # Redis and this check is on again.
    SILENCED_SYSTEM_CHECKS = ["django_ratelimit.E003", "django_ratelimit.W001"]

RATELIMIT_USE_CACHE = "default"

# --- Tasks: database queue (django-tasks-db) --------------------------------------------
TASKS = {
    "default": {
        "BACKEND": "django_tasks_db.DatabaseBackend",
        "QUEUES": ["default"],
    }
}

# --- Auth, sessions, security ---------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"

SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 60 * 60 * 24 * 30)
    # Both are commitments for the whole domain that browsers keep (preload lists ship
    # in browsers): opt in, never by default. check --deploy's reminders are silenced.
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    # What a TLS-terminating proxy must set, and only it (it must drop the client's).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # Load balancers and scrapers call these over plain HTTP inside the network.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
    SILENCED_SYSTEM_CHECKS = [
        *globals().get("SILENCED_SYSTEM_CHECKS", []),
        "security.W005",  # SECURE_HSTS_INCLUDE_SUBDOMAINS: opt-in (above)
        "security.W021",  # SECURE_HSTS_PRELOAD: opt-in (above)
    ]

# --- I18N, static ---------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT") or BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- REST framework, OpenAPI ------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        # DRF's TokenAuthentication, its lookup precompiled (still one query a request).
        "bulkops.api.authentication.PrecompiledTokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # DRF's JSON parser, with a body nested too deep a 400 instead of a RecursionError.
    "DEFAULT_PARSER_CLASSES": ["bulkops.api.parsers.JSONParser"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "bulkops.api.exceptions.exception_handler",
}
# Who may read /api/schema/ and /api/docs/ (bulkops.api.permissions.CanReadApiDocs):
# "public", or "staff" (authenticated active staff, by session or token).
BULKOPS_API_DOCS = os.environ.get("BULKOPS_API_DOCS", "") or ("public" if DEBUG else "staff")
if BULKOPS_API_DOCS not in ("public", "staff"):
    raise ImproperlyConfigured(f"BULKOPS_API_DOCS must be public or staff: {BULKOPS_API_DOCS!r}")
SPECTACULAR_SETTINGS = {
    "TITLE": "Bulk operations for sessions",
    "DESCRIPTION": "Validate, run and track bulk actions on sessions.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_AUTHENTICATION": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "SERVE_PERMISSIONS": ["bulkops.api.permissions.CanReadApiDocs"],
    # Swagger UI from drf-spectacular-sidecar's static files: no CDN, works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "ActionEnum": "bulkops.api.serializers.ACTIONS",
    },
}

# --- Content-Security-Policy (django-csp; Django 5.2 has none built in) -----------------
# Nothing inline: the admin, the progress page (bulkops/static/bulkops/progress.js) and
# Swagger UI (split view: its init script is a URL) load only same-origin files. The
# WebSocket's ws(s)://<host> is added per request (bulkops/csp.py); the nonce only where
# a template asks for it (Swagger UI's small <style>).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "connect-src": [SELF],
        "img-src": [SELF, "data:"],
        "style-src": [SELF, NONCE],
        "frame-ancestors": [NONE],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
    }
}

# --- Logging ----------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "bulkops": {"handlers": ["console"], "level": os.environ.get("BULKOPS_LOG_LEVEL", "INFO")},
    },
}

# --- Bulk operations: every limit of DESIGN.md, read in bulkops/conf.py -------------------
BULKOPS_MAX_SESSIONS_PER_OPERATION = env_int("BULKOPS_MAX_SESSIONS_PER_OPERATION", 1000)
BULKOPS_MAX_EXPORT_SESSIONS = env_int("BULKOPS_MAX_EXPORT_SESSIONS", 10_000)
BULKOPS_MAX_ACTIVE_OPERATIONS_PER_USER = env_int("BULKOPS_MAX_ACTIVE_OPERATIONS_PER_USER", 5)
BULKOPS_MAX_REQUEST_BYTES = env_int("BULKOPS_MAX_REQUEST_BYTES", 1024 * 1024)
BULKOPS_MAX_WS_CONNECTIONS_PER_USER = env_int("BULKOPS_MAX_WS_CONNECTIONS_PER_USER", 20)
BULKOPS_WS_RECHECK_SECONDS = float(os.environ.get("BULKOPS_WS_RECHECK_SECONDS", "120"))
BULKOPS_METRICS_TOKEN = os.environ.get("BULKOPS_METRICS_TOKEN", "")
BULKOPS_CHUNK_SIZE = env_int("BULKOPS_CHUNK_SIZE", 5000)
BULKOPS_CHUNK_SECONDS = float(os.environ.get("BULKOPS_CHUNK_SECONDS", "0.25"))
BULKOPS_INLINE_MAX_SESSIONS = env_int("BULKOPS_INLINE_MAX_SESSIONS", 20)
BULKOPS_OPERATION_TIMEOUT_SECONDS = env_int("BULKOPS_OPERATION_TIMEOUT_SECONDS", 300)
BULKOPS_EXPORT_RETENTION_SECONDS = env_int("BULKOPS_EXPORT_RETENTION_SECONDS", 24 * 3600)
BULKOPS_OPERATION_RETENTION_DAYS = env_int("BULKOPS_OPERATION_RETENTION_DAYS", 30)
BULKOPS_IDEMPOTENCY_TTL_SECONDS = env_int("BULKOPS_IDEMPOTENCY_TTL_SECONDS", 24 * 3600)
BULKOPS_UNDO_WINDOW_SECONDS = env_int("BULKOPS_UNDO_WINDOW_SECONDS", 7 * 24 * 3600)
BULKOPS_STALE_AFTER_SECONDS = env_int("BULKOPS_STALE_AFTER_SECONDS", 60)
BULKOPS_SELECTION_TOKEN_MAX_AGE_SECONDS = env_int("BULKOPS_SELECTION_TOKEN_MAX_AGE_SECONDS", 3600)
BULKOPS_LOCK_TIMEOUT = float(os.environ.get("BULKOPS_LOCK_TIMEOUT", "5"))
BULKOPS_MAX_ATTEMPTS = env_int("BULKOPS_MAX_ATTEMPTS", 3)
BULKOPS_ARCHIVE_ZSTD_LEVEL = env_int("BULKOPS_ARCHIVE_ZSTD_LEVEL", 3)
BULKOPS_EXPORT_DIR = Path(os.environ.get("BULKOPS_EXPORT_DIR", BASE_DIR / "var" / "exports"))
BULKOPS_WORKER_INTERVAL = float(os.environ.get("BULKOPS_WORKER_INTERVAL", "0.1"))
# Per-user rate overrides, e.g. BULKOPS_RATE_LIMIT_DELETE=5/m; each action declares its
# default (bulkops/actions/<action>.py), validate and retry theirs in bulkops/ratelimits.py.
BULKOPS_RATE_LIMITS = {
    name.removeprefix("BULKOPS_RATE_LIMIT_").lower(): value
    for name, value in os.environ.items()
    if name.startswith("BULKOPS_RATE_LIMIT_") and value
}
