# The two front-door commands: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 5000
export PORT

.PHONY: run test lint bench-help clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

run: $(VENV)/.runtime
	mkdir -p instance
	$(BIN)/flask --app wsgi db upgrade
	$(BIN)/flask --app wsgi staff ensure-demo
	@echo ""
	@echo "  Groundswell is starting on http://127.0.0.1:$(PORT)  (staff: http://127.0.0.1:$(PORT)/staff/)"
	@echo "  Press Ctrl-C to stop the web server, worker and scheduler."
	@echo ""
	@# Links in emails point at the port served here (honcho gives each process its own PORT).
	BASE_URL="$${BASE_URL:-http://127.0.0.1:$(PORT)}" PATH="$(CURDIR)/$(BIN):$$PATH" \
		$(BIN)/honcho start -f Procfile

test: $(VENV)/.dev
	$(BIN)/ruff check .
	@echo "== test suite on SQLite =="
	env -u TEST_DATABASE_URL -u REQUIRE_POSTGRES $(BIN)/pytest
	@if [ -n "$$TEST_DATABASE_URL" ]; then \
		echo "== test suite on PostgreSQL ($$TEST_DATABASE_URL) =="; \
		$(BIN)/pytest; \
	elif [ -n "$$REQUIRE_POSTGRES" ]; then \
		echo "REQUIRE_POSTGRES is set but TEST_DATABASE_URL is not"; exit 1; \
	fi

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/mypy privacy app/supporters/service.py app/staff/service.py app/mailings/service.py \
		app/actions/service.py app/actions/letters.py app/actions/targets.py app/actions/events.py app/actions/ics.py \
		app/mailings/pipeline.py app/mailings/campaigns.py app/mailings/checks.py app/mailings/composer.py \
		app/supporters/segments.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
