# dust-mcp-bridge container image: `docker build -t dust-mcp-bridge .`
#
# Two stages from the same base. The builder installs exactly what uv.lock pins (hashes checked, nothing
# resolved: a stale lock fails the build) into /opt/venv, then the bridge itself as a wheel, built by the
# hatchling version pinned with hashes in pyproject.toml's [tool.uv]; uv comes from tools/uv.txt (pip,
# --require-hashes) and stays in the builder. The runtime stage gets only that venv and libmagic1
# (python-magic's shared library), and runs as uid/gid 10001.
#
# Base image: pinned to the exact Python patch release and Debian release. Not pinned by digest: the
# digest cannot be resolved or verified from where this file is maintained (no registry access), and a
# digest copied unverified would be worse than none. To pin, append `@sha256:…` from
# `docker buildx imagetools inspect python:3.11.15-slim-bookworm` to both FROM lines (or let
# Dependabot do it: .github/dependabot.yml watches this file); both stages must stay on the same image,
# since the venv's python is a symlink to the base image's interpreter.
#
# Read-only root: the process writes only under /tmp (uploads are spooled to BRIDGE_UPLOAD_DIR, and
# Python's tempfile uses /tmp); no .pyc is written at run time (PYTHONDONTWRITEBYTECODE=1; the venv and
# the standard library are byte-compiled at build time instead). /tmp is deliberately NOT a `VOLUME`:
# Kubernetes ignores VOLUME anyway, and under Docker an anonymous volume would keep spooled user
# uploads on the host's disk after the container is gone. Give the container a memory-backed /tmp
# sized for BRIDGE_UPLOAD_MAX_BYTES plus headroom instead:
#   docker run --read-only --tmpfs /tmp:rw,size=256m,mode=1777 -e DUST_API_KEY=… -e DUST_WORKSPACE_ID=… \
#     -p 8080:8080 dust-mcp-bridge
#   Kubernetes: readOnlyRootFilesystem: true plus an emptyDir (medium: Memory, sizeLimit) at /tmp.

# Build argument, empty by default (so `docker build .` is the production build):
#   BUILD_CA_BUNDLE  a CA bundle for the builder's HTTPS (pip and uv) behind a TLS-inspecting proxy: a
#                    path to a file mounted for the build only (`podman build -v host.pem:PATH:ro`),
#                    never copied into a layer; empty (the default): pip and uv use their own roots.
# tests/deploy/test_image.py builds this file unchanged where no registry is reachable: it makes a Debian
# bookworm base with mmdebstrap and gives it this base's name in a podman storage of its own.

FROM python:3.11.15-slim-bookworm AS builder

# uv: the base image's interpreter (never a download), no cache left in a layer, the venv byte-compiled
# (the runtime root is read-only), files copied rather than linked from a cache.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_NO_CACHE=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/venv

# Empty in production; each RUN below that downloads exports it to pip and uv only when it is set.
ARG BUILD_CA_BUNDLE=""

WORKDIR /src

# uv itself, pinned with the hashes of its wheels, in a venv of its own that stays in this stage.
COPY tools/uv.txt ./tools/
RUN if [ -n "$BUILD_CA_BUNDLE" ]; then export SSL_CERT_FILE="$BUILD_CA_BUNDLE" PIP_CERT="$BUILD_CA_BUNDLE"; fi \
    && python -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir --require-hashes --no-deps --only-binary :all: -r tools/uv.txt

# The runtime dependencies, exactly as uv.lock pins them (no dev extra); a layer of its own, rebuilt
# only when the lock changes.
COPY pyproject.toml uv.lock ./
RUN if [ -n "$BUILD_CA_BUNDLE" ]; then export SSL_CERT_FILE="$BUILD_CA_BUNDLE" PIP_CERT="$BUILD_CA_BUNDLE"; fi \
    && /opt/uv/bin/uv sync --locked --no-dev --no-install-project

# The bridge: a wheel (not editable) built from README.md and bridge/ by the hash-pinned hatchling.
COPY README.md ./
COPY bridge ./bridge
RUN if [ -n "$BUILD_CA_BUNDLE" ]; then export SSL_CERT_FILE="$BUILD_CA_BUNDLE" PIP_CERT="$BUILD_CA_BUNDLE"; fi \
    && /opt/uv/bin/uv sync --locked --no-dev --no-editable


FROM python:3.11.15-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="dust-mcp-bridge" \
      org.opencontainers.image.description="Dust (dust.tt) agents as MCP tools: streamed answers, lasting conversation context, safe uploads" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.15-slim-bookworm"

# libmagic1 is left unpinned on purpose: Debian stable only changes it for security fixes, and the
# security archive drops superseded versions, so a pinned version would break the build exactly when
# a fix lands. The release (bookworm) is pinned through the base image tag.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libmagic1 \
    && rm -rf /var/lib/apt/lists/*

# No home directory and a nologin shell: the bridge needs neither.
RUN groupadd --system --gid 10001 bridge \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin bridge

# The base image ships its standard library without .pyc files; compile them once here so a
# read-only root does not mean recompiling every module at each start.
RUN python -m compileall -q -j 0 /usr/local/lib/python3.11

COPY --from=builder /opt/venv /opt/venv

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BRIDGE_DEMO=off \
    BRIDGE_LOG_FORMAT=json \
    BRIDGE_HOST=0.0.0.0 \
    BRIDGE_PORT=8080 \
    BRIDGE_UPLOAD_DIR=/tmp/dust-mcp-bridge

EXPOSE 8080

# Liveness only (/readyz also needs Dust, the store and clamd). slim has no curl: the venv's python
# does the GET; urlopen raises on anything but 2xx, so the exit code is non-zero on failure.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=3)"]

USER 10001

# Worker processes: BRIDGE_WORKERS decides (`docker run -e BRIDGE_WORKERS=4`); unset or auto, one per
# CPU the container may use (its CPU limit, else the host's cores) when REDIS_URL is set, else one.
ENTRYPOINT ["dust-mcp-bridge"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080", "--workers"]
