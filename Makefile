# Two commands matter: `make run` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)
DEV_STAMP := $(VENV)/.installed-dev-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
WEB_PORT ?= 8000

.PHONY: run test lint format venv dev migrate demo bench-send bench-tracking bench-search bench-inbound bench-portal bench-webhooks bench-purge bench-small clean

# Runtime packages only (requirements.txt): what `make run` needs.
$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed; $(PYTHON) is " + sys.version.split()[0])'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@rm -f $(VENV)/.installed-[0-9]*
	@touch $(STAMP)

# Runtime plus development and test packages (requirements-dev.txt): tests, lint, benchmarks.
$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@rm -f $(VENV)/.installed-dev-*
	@touch $(DEV_STAMP)

venv: $(STAMP)

dev: $(DEV_STAMP)

migrate: venv
	$(PY) manage.py migrate --noinput

demo: migrate
	$(PY) manage.py seed_demo

# Web, worker and inbound SMTP together; Ctrl-C (or a TERM to make or to its process group)
# stops all three. Each runs in a session of its own (setsid), so it gets exactly one TERM, from
# this shell: a second signal while qcluster stops (Ctrl-C reaches the whole foreground group)
# deadlocks django-q2's cluster. The worker stops once its resident loops end their runs (up to
# 15 s). `migrate` has made its schedules; its loops start with it.
run: demo
	@echo "web http://127.0.0.1:$(WEB_PORT)/  (portal demo/demo, API docs /rest/v1/docs)"
	@bash -c 'pids=""; \
		stop() { trap - INT TERM EXIT; kill -TERM $$pids 2>/dev/null; wait; }; \
		trap stop INT TERM EXIT; \
		setsid $(PY) manage.py runserver 127.0.0.1:$(WEB_PORT) --noreload & pids="$$pids $$!"; \
		setsid $(PY) manage.py worker & pids="$$pids $$!"; \
		setsid $(PY) manage.py smtpd & pids="$$pids $$!"; \
		wait'

test: dev
	$(PY) -m pytest $(PYTEST_ARGS)

lint: dev
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench-send: dev
	$(PY) bench/send.py

bench-tracking: dev
	$(PY) bench/tracking.py

bench-search: dev
	$(PY) bench/search.py

bench-inbound: dev
	$(PY) bench/inbound.py

bench-portal: dev
	$(PY) bench/portal.py

bench-webhooks: dev
	$(PY) bench/webhooks.py

# BENCH_ROWS=1000000 for the issue's million rows (default 100,000).
bench-purge: dev
	$(PY) bench/purge.py

# Every benchmark in its small mode (a few seconds each), so a benchmark that breaks fails CI.
bench-small: dev
	BENCH_SMALL=1 $(PY) bench/send.py
	BENCH_SMALL=1 $(PY) bench/search.py
	BENCH_SMALL=1 $(PY) bench/tracking.py
	BENCH_SMALL=1 $(PY) bench/portal.py
	BENCH_SMALL=1 $(PY) bench/webhooks.py
	BENCH_SMALL=1 $(PY) bench/inbound.py
	BENCH_SMALL=1 $(PY) bench/purge.py

clean:
	rm -rf $(VENV) var/*.sqlite3* .pytest_cache
