"""Settings, read from the environment by django-environ.

Every variable has a working default, so `make run` needs nothing configured; `.env.example`
lists them all. A `.env` file beside manage.py is read when present.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

SECRET_KEY = env(
    "SECRET_KEY", default="dev-insecure-change-me-0123456789abcdefghijklmnopqrstuvwxyz"
)
DEBUG = env.bool("DEBUG", default=True)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "tracking",
    "conversations",
    "portal",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "iovox_email.urls"
WSGI_APPLICATION = "iovox_email.wsgi.application"
ASGI_APPLICATION = "iovox_email.asgi.application"

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

# --- Database -------------------------------------------------------------------------------
VAR_DIR.mkdir(exist_ok=True)
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'iovox.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web, worker and smtpd processes read while one of them writes; IMMEDIATE
    # transactions plus a busy timeout make writers queue instead of failing with "locked".
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # A file, not memory, so end-to-end tests can share the test database with a real worker.
    _db_file = Path(DATABASES["default"]["NAME"])
    DATABASES["default"]["TEST"] = {"NAME": str(_db_file.with_name(f"test_{_db_file.name}"))}
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "tracking.User"
LOGIN_URL = "portal:login"
LOGIN_REDIRECT_URL = "portal:home"
LOGOUT_REDIRECT_URL = "portal:login"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# --- Product --------------------------------------------------------------------------------
# A credential that authenticated, and a link sent through, are remembered this long by each
# web process (0: never), so a rotated or deactivated key may still work this long in another
# process (tracking/caching.py).
API_CACHE_SECONDS = env.float("API_CACHE_SECONDS", default=5)
TRACKING_BASE_URL = env("TRACKING_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")
# Open and click tracking (tracking/engagement). Proxies whose X-Forwarded-For is believed.
TRACKING_TRUSTED_PROXIES = [
    ipaddress.ip_network(n)
    for n in env.list("TRACKING_TRUSTED_PROXIES", default=["127.0.0.1/32", "::1/128"])
]
# Also turn the bare URLs of the text part into click URLs.
TRACKING_TEXT_LINKS = env.bool("TRACKING_TEXT_LINKS", default=False)
# Events are written in batches this often (seconds); 0 writes each within its request.
TRACKING_EVENT_FLUSH_INTERVAL = env.float("TRACKING_EVENT_FLUSH_INTERVAL", default=0.5)
TRACKING_EVENT_BATCH = env.int("TRACKING_EVENT_BATCH", default=500)
TRACKING_EVENT_BUFFER_MAX = env.int("TRACKING_EVENT_BUFFER_MAX", default=50000)
# A click this soon after delivery (seconds), or this many clicks within a second, is a scanner.
TRACKING_SCANNER_WINDOW = env.float("TRACKING_SCANNER_WINDOW", default=10.0)
TRACKING_BURST_CLICKS = env.int("TRACKING_BURST_CLICKS", default=3)
ALIAS_DOMAIN = env("ALIAS_DOMAIN", default="iovox.email").lower()
BOUNCE_DOMAIN = env("BOUNCE_DOMAIN", default="iovox.email").lower()
# "ip[:port],..." for MX lookups; empty means the system resolver.
DNS_NAMESERVERS = env.list("DNS_NAMESERVERS", default=[])
DNS_TIMEOUT = env.float("DNS_TIMEOUT", default=5.0)
SMTP_DELIVERY_PORT = env.int("SMTP_DELIVERY_PORT", default=25)
SMTP_TIMEOUT = env.float("SMTP_TIMEOUT", default=30.0)
# The name we give in EHLO and in Message-ID headers.
SMTP_HELO_NAME = env("SMTP_HELO_NAME", default="localhost")
SMTPD_HOST = env("SMTPD_HOST", default="127.0.0.1")
SMTPD_PORT = env.int("SMTPD_PORT", default=2525)
# What `check_domains` expects our domains to publish (docs/deliverability.md): the public
# name of our inbound SMTP server, which the MX records of alias, proxy and bounce domains name;
# the public addresses our mail leaves from (the workers', or the relay's), for which every
# domain's SPF must pass; and, optionally, a domain whose SPF record lists those addresses, for
# the other domains to include.
SMTPD_PUBLIC_HOST = env("SMTPD_PUBLIC_HOST", default="").strip().lower().rstrip(".")
SENDING_IPS = env.list("SENDING_IPS", default=[])
SPF_INCLUDE = env("SPF_INCLUDE", default="").strip().lower().rstrip(".")
# Days a replaced DKIM key's record stays published once its successor signs.
DKIM_ROTATION_OVERLAP_DAYS = env.int("DKIM_ROTATION_OVERLAP_DAYS", default=7)
EMAIL_RETRY_SCHEDULE = [
    int(s) for s in env.list("EMAIL_RETRY_SCHEDULE", default=["60", "300", "900", "1800", "3600"])
]
EMAIL_EXPIRY = env.int("EMAIL_EXPIRY", default=259200)
# A worker's claim on a message lasts this long; it must outlive the worker's task timeout so a
# claim only lapses when its worker is gone (the sweep then re-delivers the message).
DELIVERY_LOCK_SECONDS = env.int("DELIVERY_LOCK_SECONDS", default=600)
# How many messages to one recipient domain a worker claims and sends over one connection.
DELIVERY_BATCH_SIZE = env.int("DELIVERY_BATCH_SIZE", default=50)
# A web process wakes delivery for the domains of the messages it accepted in batches, this
# often (seconds; 0: once per message, on commit). See tracking/buffering.py.
DELIVERY_WAKEUP_INTERVAL = env.float("DELIVERY_WAKEUP_INTERVAL", default=0.1)
# The largest message accepted, by the API and by inbound SMTP (bytes of decoded content).
MAX_MESSAGE_SIZE = env.int("MAX_MESSAGE_SIZE", default=25 * 1024 * 1024)
# A JSON body carries attachments in base64 (4/3 of their size) plus the rest of the message.
MAX_REQUEST_SIZE = MAX_MESSAGE_SIZE * 4 // 3 + 1024 * 1024
# Days a received message's raw bytes are kept once routed, refused or failed (the Messages
# made from it keep their own copy).
INBOUND_RETENTION_DAYS = env.int("INBOUND_RETENTION_DAYS", default=30)
# Seconds before each new attempt at routing a received message that could not be routed (an
# error, or a DNS failure while authenticating its sender); after the last, it ends `failed`
# (or `refused`, for a sender that could not be authenticated).
INBOUND_RETRY_SCHEDULE = [
    int(s)
    for s in env.list("INBOUND_RETRY_SCHEDULE", default=["60", "300", "1800", "7200", "21600"])
]
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_SIZE

# --- REST API -------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tracking.api.authentication.SecureKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["tracking.api.parsers.BoundedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "EXCEPTION_HANDLER": "tracking.api.exceptions.errors_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Email tracking REST API",
    "DESCRIPTION": "Send tracked email, generate proxy addresses, search what happened, and "
    "manage nodes, links and contacts. Authenticate with the `username` and `secureKey` headers.",
    "VERSION": "1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "tracking.api.schema.add_error_responses",
    ],
}

# --- Worker (django-q2) ---------------------------------------------------------------------
REDIS_URL = env("REDIS_URL", default="")
Q_CLUSTER = {
    "name": "iovox",
    "workers": env.int("Q_WORKERS", default=2),
    # A task that runs longer than `timeout` is killed; `retry` must be longer so the broker
    # does not hand a still-running task to a second worker.
    "timeout": 300,
    "retry": 360,
    "max_attempts": 1,
    # -1: keep no success records (a positive limit halves throughput); failures are kept.
    "save_limit": -1,
    "queue_limit": 200,
    "bulk": 10,
    "catch_up": False,
    "ack_failures": True,
    "poll": 0.2,
    "label": "Tasks",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- Hostile input, outages and login throttling (issue 12: API hardening) -------------------
# Every request's path and query are refused when they hold a control character; a database
# error is a 503 (JSON on /rest/, a plain page elsewhere) rather than a 500.
INSTALLED_APPS += ["axes"]
MIDDLEWARE.insert(0, "iovox_email.middleware.DatabaseUnavailableMiddleware")
MIDDLEWARE.insert(0, "iovox_email.middleware.ControlCharactersMiddleware")
# django-axes must be last: it turns a lockout flagged during the view into its response.
MIDDLEWARE.append("axes.middleware.AxesMiddleware")
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Seconds a client is asked to wait (Retry-After) when the database is unavailable.
DATABASE_RETRY_AFTER = env.int("DATABASE_RETRY_AFTER", default=30)
# The portal's login (django-axes): this many failures for a username, or from an IP, lock it
# out for LOGIN_LOCKOUT_MINUTES (an admin may unlock sooner: Axes > Access attempts).
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_CLIENT_IP_CALLABLE = "tracking.engagement.views.client_ip"
AXES_LOCKOUT_TEMPLATE = "portal/locked_out.html"
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False  # no banner on every manage.py command; failures are still logged
# The API (tracking/services/auth_throttle.py): this many wrong secure keys for a username, or
# from an IP, within API_AUTH_FAILURE_WINDOW seconds answer 429 until the window ends (0: off).
API_AUTH_FAILURE_LIMIT = env.int("API_AUTH_FAILURE_LIMIT", default=10)
API_AUTH_FAILURE_WINDOW = env.int("API_AUTH_FAILURE_WINDOW", default=900)
# Where those counts are kept: Redis when REDIS_URL is set (shared by every web process),
# else each process's memory.
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}
# JSON bodies nested deeper than this are refused (400) before any code walks them.
API_MAX_JSON_DEPTH = 32

# --- Logging --------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "mail.log": {"level": "WARNING"},
        # dkimpy logs every signature that does not hold at ERROR: on inbound mail that is
        # routine (forged or altered mail), and the verdict is recorded on the message.
        "dkimpy": {"level": "CRITICAL"},
    },
}
