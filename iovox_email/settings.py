"""Settings, read from the environment by django-environ.

Every variable has a working default, so `make run` needs nothing configured; `.env.example`
lists them all. A `.env` file beside manage.py is read when present.
"""

from __future__ import annotations

import ipaddress
import os
from datetime import timedelta
from pathlib import Path

import environ

from iovox_email.secret_key import secret_key_check_published, secret_key_from_file

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "csp",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "tracking",
    "conversations",
    "portal",
]

MIDDLEWARE = [
    # First: its request id is on every log line of the request, its latency covers it all.
    "iovox_email.observability.RequestObservabilityMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
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
# Connections are kept between requests (and between the SMTP server's database jobs): opening
# one costs more than most of what is done with it (on SQLite, its PRAGMAs too).
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
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
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # Parameters go to PostgreSQL beside the query, not written into its text: a large value
    # (a message's raw bytes) is then sent as it is, where client-side binding escaped it into
    # a SQL literal and held several copies of it in smtpd's memory.
    DATABASES["default"].setdefault("OPTIONS", {})["server_side_binding"] = True

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
# The step that sends a message through a proxy domain (tracking/services/sending.py): the
# conversations app's, so that tracking need not import it. None refuses every proxy_domain.
EMAIL_PROXY_STEP = "conversations.sending.ConversationProxyStep"
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
# Raw events kept per message: its first and its most recent; its counters count them all.
TRACKING_EVENTS_KEPT_FIRST = env.int("TRACKING_EVENTS_KEPT_FIRST", default=100)
TRACKING_EVENTS_KEPT_LAST = env.int("TRACKING_EVENTS_KEPT_LAST", default=100)
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
# Inbound SMTP limits (conversations/inbound/limits.py); 0 turns one off. Connections are
# counted per smtpd process, the others across all of them (in the database). A client is
# an IPv4 address or an IPv6 /64.
SMTPD_MAX_CONNECTIONS = env.int("SMTPD_MAX_CONNECTIONS", default=100)
SMTPD_MAX_CONNECTIONS_PER_CLIENT = env.int("SMTPD_MAX_CONNECTIONS_PER_CLIENT", default=10)
SMTPD_MESSAGES_PER_CLIENT_PER_MINUTE = env.int("SMTPD_MESSAGES_PER_CLIENT_PER_MINUTE", default=60)
# Bytes of mail one alias or proxy address may receive per day (UTC).
SMTPD_DAILY_BYTES_PER_RECIPIENT = env.int(
    "SMTPD_DAILY_BYTES_PER_RECIPIENT", default=100 * 1024 * 1024
)
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
# How mail leaves (docs/transports.md): "mx" straight to each recipient's MX, "smtp" through
# the relay below, "anymail" through the ESP ANYMAIL_ESP names. Admin can override it per account.
DELIVERY_TRANSPORT = env("DELIVERY_TRANSPORT", default="mx").strip().lower()
SMTP_RELAY_HOST = env("SMTP_RELAY_HOST", default="").strip()
SMTP_RELAY_PORT = env.int("SMTP_RELAY_PORT", default=587)
SMTP_RELAY_USERNAME = env("SMTP_RELAY_USERNAME", default="")
SMTP_RELAY_PASSWORD = env("SMTP_RELAY_PASSWORD", default="")
# "starttls" (port 587), "tls" (implicit TLS, port 465) or "none" (a relay on a trusted network).
SMTP_RELAY_SECURITY = env("SMTP_RELAY_SECURITY", default="starttls").strip().lower()
SMTP_RELAY_VERIFY = env.bool("SMTP_RELAY_VERIFY", default=True)
# A CA bundle for a relay with a certificate of a private CA; empty means the system's.
SMTP_RELAY_CA_FILE = env("SMTP_RELAY_CA_FILE", default="")
# The ESP for DELIVERY_TRANSPORT=anymail: mailgun, postmark, sendgrid, amazon_ses or sparkpost.
# Its own settings are anymail's, read from the environment (ANYMAIL_MAILGUN_API_KEY, ...).
ANYMAIL_ESP = env("ANYMAIL_ESP", default="").strip().lower()
ANYMAIL = {
    key.removeprefix("ANYMAIL_"): value
    for key, value in os.environ.items()
    if key.startswith("ANYMAIL_") and key != "ANYMAIL_ESP"
}
EMAIL_RETRY_SCHEDULE = [
    int(s) for s in env.list("EMAIL_RETRY_SCHEDULE", default=["60", "300", "900", "1800", "3600"])
]
EMAIL_EXPIRY = env.int("EMAIL_EXPIRY", default=259200)
# A delivery claim on a message lapses this long after the worker that holds it stopped renewing
# it (it renews while the attempt goes on): how soon the messages of a dead worker are retried.
DELIVERY_LOCK_SECONDS = env.int("DELIVERY_LOCK_SECONDS", default=15)
# How many messages to one recipient domain the delivery loop claims and sends over one connection.
DELIVERY_BATCH_SIZE = env.int("DELIVERY_BATCH_SIZE", default=50)
# SMTP connections the delivery loop keeps going at once (threads of its worker process), and
# how many delivery loops run at once in the whole system (each a worker process; see
# tracking/worker.py).
DELIVERY_CONNECTIONS = env.int("DELIVERY_CONNECTIONS", default=4)
DELIVERY_LOOPS = env.int("DELIVERY_LOOPS", default=2)
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
# Retention (docs/operations.md; the purge runs every 10 minutes, `manage.py purge --dry-run`
# says what it would delete). Days a finished message keeps its bodies, MIME and attachments
# (its metadata stays); days a message is kept at all, with its attempts and events; days an
# open or click is kept as a row (the message's counters keep counting it). Rows per batch,
# each batch a short transaction of its own.
MESSAGE_CONTENT_RETENTION_DAYS = env.int("MESSAGE_CONTENT_RETENTION_DAYS", default=90)
MESSAGE_RETENTION_DAYS = env.int("MESSAGE_RETENTION_DAYS", default=400)
EVENT_RETENTION_DAYS = env.int("EVENT_RETENTION_DAYS", default=180)
PURGE_BATCH_SIZE = env.int("PURGE_BATCH_SIZE", default=500)

# --- Webhooks (tracking/webhooks, docs/webhooks.md) -----------------------------------------
# Seconds between a failed delivery and its next attempt; after the last, the delivery fails.
WEBHOOK_RETRY_SCHEDULE = [
    int(s)
    for s in env.list(
        "WEBHOOK_RETRY_SCHEDULE", default=["5", "300", "1800", "7200", "18000", "36000", "36000"]
    )
]
# An endpoint that has failed for this long (seconds, no success since) is disabled.
WEBHOOK_DISABLE_AFTER = env.int("WEBHOOK_DISABLE_AFTER", default=5 * 24 * 3600)
# Allow URLs on loopback, private and link-local addresses (tests, development only).
WEBHOOK_ALLOW_PRIVATE = env.bool("WEBHOOK_ALLOW_PRIVATE", default=False)
# Our own public networks (CIDR, comma-separated): no webhook may point into them. The
# addresses of TRACKING_BASE_URL's host are refused as well.
WEBHOOK_DENIED_NETWORKS = [
    ipaddress.ip_network(n, strict=False) for n in env.list("WEBHOOK_DENIED_NETWORKS", default=[])
]
# Seconds one POST to an endpoint may take.
WEBHOOK_TIMEOUT = env.float("WEBHOOK_TIMEOUT", default=10.0)
# Posts in flight at once in the worker, and at most this many to one endpoint.
WEBHOOK_CONNECTIONS = env.int("WEBHOOK_CONNECTIONS", default=8)
WEBHOOK_ENDPOINT_CONCURRENCY = env.int("WEBHOOK_ENDPOINT_CONCURRENCY", default=2)
# Deliveries to one endpoint claimed at once and posted one after another over one connection.
WEBHOOK_BATCH_SIZE = env.int("WEBHOOK_BATCH_SIZE", default=50)
# Days events and their deliveries are kept once every delivery of them has finished.
WEBHOOK_RETENTION_DAYS = env.int("WEBHOOK_RETENTION_DAYS", default=30)
# Seconds a process remembers whether an account has an enabled endpoint for an event type
# (0: asks every time): an endpoint added or enabled misses at most this much of the events
# made in other processes.
WEBHOOK_SUBSCRIPTION_CACHE_SECONDS = env.float("WEBHOOK_SUBSCRIPTION_CACHE_SECONDS", default=5)

# --- Secrets, HTTPS and browser policies (docs/security.md) ---------------------------------
# Safe unless asked otherwise: DEBUG off; no SECRET_KEY is ever a public string; HTTPS
# everything (HSTS, secure cookies, redirect) when the public base URL is https.
DEBUG = env.bool("DEBUG", default=False)
# Signs click and pixel tokens, VERP bounce addresses (tracking/signatures.py) and sessions.
# Unset: a random key generated into var/secret_key (0600) on first run and reused, which
# suits one host; several hosts must share one key, so `check --deploy` fails on it.
# Read as they are: django-environ would take a value starting with "$" for the name of
# another variable, and a random key may start with one.
SECRET_KEY = os.environ.get("SECRET_KEY", "")
SECRET_KEY_FILE = None if SECRET_KEY else VAR_DIR / "secret_key"
if SECRET_KEY_FILE:
    SECRET_KEY = secret_key_from_file(SECRET_KEY_FILE)
# Rotation: the new key in SECRET_KEY, the old ones here (comma-separated) until the mail
# they signed no longer matters; what they signed still verifies meanwhile.
SECRET_KEY_FALLBACKS = [k for k in os.environ.get("SECRET_KEY_FALLBACKS", "").split(",") if k]
secret_key_check_published(SECRET_KEY, *SECRET_KEY_FALLBACKS)

HTTPS = env.bool("HTTPS", default=TRACKING_BASE_URL.startswith("https://"))
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=HTTPS)
# Load balancers probe over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
# Behind a proxy that terminates TLS: the header it sets on every request (and strips from
# the client's), e.g. X-Forwarded-Proto; without it SECURE_SSL_REDIRECT would loop.
_proxy_ssl_header = env("SECURE_PROXY_SSL_HEADER", default="")
if _proxy_ssl_header:
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
# Preloading binds the whole registrable domain, which only its owner can decide: opt-in.
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SILENCED_SYSTEM_CHECKS = ["security.W021"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Every page (portal, admin, API docs): scripts, styles and images of our own origin only;
# no inline script or style, no eval, no plugins, not framed by others. The message preview
# has a stricter policy of its own (portal/views/messages.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "frame-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}
# --- end of secrets, HTTPS and browser policies ---------------------------------------------

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
    # The resident loops take one worker process each (tracking/worker.py): DELIVERY_LOOPS
    # and routing's one; the rest run the other tasks.
    "workers": env.int("Q_WORKERS", default=6),
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

# --- Operations: health, metrics, logs (docs/operations.md) -------------------------------
# The worker's and smtpd's health and metrics port (`/healthz`, `/readyz`, `/metrics`); the web
# serves the same paths on its own port. -1 turns one off, 0 takes any free port.
HEALTH_HOST = env("HEALTH_HOST", default="127.0.0.1")
WORKER_HEALTH_PORT = env.int("WORKER_HEALTH_PORT", default=9102)
SMTPD_HEALTH_PORT = env.int("SMTPD_HEALTH_PORT", default=9103)
# When set, /metrics wants "Authorization: Bearer <METRICS_TOKEN>".
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
# "text" (one readable line per record) or "json" (one JSON object per line, with the
# request id, and the message id and account where there are some).
LOG_FORMAT = env("LOG_FORMAT", default="text")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "context": {"()": "iovox_email.observability.LogContextFilter"},
        "task_chatter": {"()": "iovox_email.observability.TaskChatterFilter"},
    },
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(process)d",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "text",
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "mail.log": {"level": "WARNING"},
        # dkimpy logs every signature that does not hold at ERROR: on inbound mail that is
        # routine (forged or altered mail), and the verdict is recorded on the message.
        "dkimpy": {"level": "CRITICAL"},
        # Names every detector it runs, for every bounce.
        "flufl.bounce": {"level": "WARNING"},
        # django-q2 says at INFO what its scheduler, pusher and workers did with each task,
        # several lines a minute: chatter, demoted to DEBUG; its cluster's start and stop stay.
        "django-q": {"filters": ["task_chatter"]},
    },
}
