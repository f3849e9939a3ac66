# The two commands: `make run` and `make test`. Both set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
BROWSER_STAMP := $(VENV)/.installed-browser
CLAMAV_STAMP := $(VENV)/.installed-clamav

.PHONY: run test lint typecheck bench campaigns clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

run: $(STAMP)
	$(BIN)/gateway serve

# The browser tests drive Debian's chromium (Playwright's own browser download is not used).
# Installed when missing and root; otherwise tests/test_browser.py skips with the reason.
$(BROWSER_STAMP): | $(BIN)/python
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (apt-get) for tests/test_browser.py"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	      >/dev/null || exit 1; \
	  else \
	    echo "chromium missing (installing it needs root and apt-get):" \
	      "tests/test_browser.py will be skipped; apt-get install chromium"; \
	  fi; \
	fi
	@if command -v chromium >/dev/null 2>&1; then touch $@; fi

# tests/test_scanning.py (and the upload-scanning tests) start Debian's clamd with a local
# EICAR-only database (tests/_clamav.py): no freshclam, no network. Installed when missing
# and root; otherwise those tests skip with the reason. The tests never use the package's
# own clamd service or its database.
$(CLAMAV_STAMP): | $(BIN)/python
	@if ! [ -x /usr/sbin/clamd ] && ! command -v clamd >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing clamav-daemon (apt-get) for tests/test_scanning.py"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      clamav-daemon >/dev/null || exit 1; \
	  else \
	    echo "clamd missing (installing it needs root and apt-get):" \
	      "the scanning tests will be skipped; apt-get install clamav-daemon"; \
	  fi; \
	fi
	@if [ -x /usr/sbin/clamd ] || command -v clamd >/dev/null 2>&1; then touch $@; fi

# Most tests wait on real server processes, so three workers fit two cores; a test module
# stays on one worker (its fixtures and upstream servers are shared by its tests).
PYTEST_WORKERS ?= 3

test: $(TEST_STAMP) $(BROWSER_STAMP) $(CLAMAV_STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The load generators are wrk and hey (for HEAD), Debian's packages, and the large transfers
# use curl: installed when missing and root. BENCH_ARGS: e.g. --quick, --readme.
bench: $(TEST_STAMP)
	@for tool in wrk hey curl; do command -v $$tool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$tool \
	      >/dev/null || exit 1; \
	  else echo "make bench needs $$tool: apt-get install $$tool"; exit 1; fi; }; done
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# The reliability and security campaigns (campaigns/): the test suite runs their short
# versions; this runs the long ones. CAMPAIGN_ARGS: e.g. "crash soak", or nothing for all.
campaigns: $(TEST_STAMP)
	$(BIN)/python -m campaigns --long $(CAMPAIGN_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
