# Two commands on a fresh machine with Python 3.11+: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench soak lint browser-deps services livekit-server vendor-js clean

# The real LiveKit server, built from source through the Go module proxy (pinned here only).
LIVEKIT_SERVER_VERSION := v1.13.5
LIVEKIT_SERVER := .bin/livekit-server
GO ?= $(shell command -v go || echo /usr/local/go/bin/go)

$(STAMP): requirements.txt requirements-dev.txt
	@echo "Installing the pinned dependencies into $(VENV) (when the requirements change)..."
	@$(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $(STAMP)

# Migrates, loads the demo and starts every process; the console stays quiet (logs: var/log/).
run: $(STAMP)
	@./bin/run-portal

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/run_all.py

# Ten minutes of steady load on gunicorn and Celery; prints their RSS at start and end (opt-in:
# not part of `make bench`).
soak: $(STAMP)
	$(PY) bench/soak.py

# Debian's Chromium for the browser tests (Playwright drives /usr/bin/chromium; it never
# downloads a browser). Needs root or sudo; does nothing when Chromium is already there.
browser-deps:
	@if [ -x /usr/bin/chromium ]; then echo "chromium: $$(/usr/bin/chromium --version 2>/dev/null)"; else \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y chromium chromium-driver; fi

# PostgreSQL and Redis on 127.0.0.1 (installed with apt when missing; a no-op when they answer).
# Needed by `.ci/run` and `make bench`; `make test` and `make run` do without them.
services:
	./bin/services

# LiveKit's own server at $(LIVEKIT_SERVER); a no-op when that version is already built.
livekit-server:
	@if [ -x $(LIVEKIT_SERVER) ] && $(LIVEKIT_SERVER) --version 2>/dev/null | grep -q "$(LIVEKIT_SERVER_VERSION:v%=%)"; then \
	  echo "livekit-server $(LIVEKIT_SERVER_VERSION): $(LIVEKIT_SERVER)"; else \
	  mkdir -p .bin/go && \
	  GOBIN=$(CURDIR)/.bin/go CGO_ENABLED=0 $(GO) install github.com/livekit/livekit-server/cmd/server@$(LIVEKIT_SERVER_VERSION) && \
	  mv .bin/go/server $(LIVEKIT_SERVER) && $(LIVEKIT_SERVER) --version; fi

# LiveKit's browser SDK for the test call page, vendored under static/vendor/livekit-client/:
# fetched again with `npm pack` and checked against VENDORED.json (version, integrity, sha256).
vendor-js:
	python3 bin/vendor_livekit_client.py

# Style, the one-way layers (import-linter's contracts in pyproject.toml) and the types (mypy).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy

clean:
	rm -rf var
