"""The image, built and run for real: the Dockerfile built from the lock with podman, then run read-only.

test_dockerfile.py checks the Dockerfile without an engine; this builds it and runs what it makes.

* Engine: podman with runc and a containers.conf of this test's own (`default_ulimits = []`,
  `cgroup_manager = "cgroupfs"`: crun and the default ulimits fail on the machines this was written
  on, reference/infra.md; `lock_type = "file"`, so that libpod's locks stay out of the shared-memory
  segment every podman storage of the machine shares). The module is skipped only when
  `podman --runtime runc info` fails there, or podman is missing (`make test` installs it); the reason
  says which.
* Storage: a podman storage of this test's own (`--root`, `--runroot`, `--tmpdir` under
  ~/.cache/dust-mcp-bridge/image-test, or $XDG_CACHE_HOME's), not the machine's default one: its
  images and containers are not those of a plain `podman images` or `podman ps`, and those are left
  alone (the network, CNI's default bridge, is the machine's). One run at a time uses it (a file
  lock; another run waits). At the start and at the end the run removes every container in it,
  running or not (podman's and a build's working containers, and the RUN step of a build killed
  mid-way, which runs under an OCI runtime root of its own), every volume, and every image but the
  base and the Redis and clamd images. Its containers run with `--timeout` (the module's time
  limit): should the run be killed before its cleanup, conmon still kills them, and the next run
  removes them.
* Base image: no registry is reachable there, and the Dockerfile is built unchanged: its FROM lines
  name python:3.11.15-slim-bookworm (Dependabot proposes its updates), so in the private storage a
  Debian bookworm made with mmdebstrap (Debian's python3.11, linked at /usr/local/bin as in the
  official image) is given that name, docker.io/library/python:3.11.15-slim-bookworm, and the build runs with
  `--pull=never`: FROM finds the stand-in and nothing else, and the test checks that the image's
  layers start with the stand-in's. The stand-in is kept between runs (tagged besides with a hash of
  its recipe and the ISO week, so it is remade weekly), and so are the Redis and clamd images made on
  it; nothing else is cached: every instruction of the Dockerfile runs on every build
  (`--layers=false`). A FROM pinned by digest cannot be stood in for (the test fails saying so).
  CI's image job builds on the real image (`docker build --pull`).
* CA: builds reach the package registries over the host's network (`--network=host`); the host's CA
  bundle is mounted for the build only and named by BUILD_CA_BUNDLE. The test checks that the image
  carries the base image's bundle, not the host's.
* Run: as docs/deployment.md says: `--read-only` with a tmpfs /tmp and nothing else writable (podman's
  own extra tmpfs mounts are turned off), as the image's user, its CMD unchanged (0.0.0.0:8080 in its
  own network namespace), published on 127.0.0.1 only. Beside it: the Dust simulator, from the same
  image (`dust-mcp-bridge simulator`), owning the network namespace the bridge joins; and Redis and
  clamd, each a container of its own from an image of Debian's package (redis-server, clamav-daemon
  with the EICAR test signature only: freshclam has no internet there) built on the stand-in base and
  kept between runs as the base is (their tags hash their recipe and the base's tag). Both run
  read-only as their packages' users, with no network at all (`--network none`), and listen on unix
  sockets in a volume of their own each (podman named volumes, chowned to that user with `:U`),
  mounted read-only into the bridge: the shape of the chart's clamd sidecar (an emptyDir). Not a pod:
  its infra container needs a pause image, which podman 4.3 builds from catatonit (`podman pod
  create` fails without it) or takes from an `infra_image` a registry would serve; the simulator
  already holds the network namespace for the published ports, and Redis and clamd need none.
* Health: without systemd podman schedules no health check, so the image's HEALTHCHECK is run with
  `podman healthcheck run` until it passes; the time from `podman run` to that pass is printed with
  the image's size and the build time (`make image-test` shows them).
* Every container and volume is removed by name, and the built image by tag, in a `finally`; each wait
  is bounded.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import time
import tomllib
import uuid
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import httpx2
import pytest
from mcp import Client

from tests.deploy.test_dockerfile import DOCKERFILE, parse_dockerfile
from tests.helpers import text_of
from tests.procs import EICAR_NDB, REPO, TEST_DUST_KEY, clamd_ping, free_port, wait_for_http

# The first test's fixtures make the base (when it is not cached: about a minute here) and build the
# image (20-30 s here), longer than the suite's 120 s default allows on a slow machine.
MODULE_TIMEOUT = 1800
pytestmark = pytest.mark.timeout(MODULE_TIMEOUT)

# lock_type = "file": libpod's locks in the private --tmpdir, not in the shared-memory segment that every
# podman storage of the machine shares (a storage's first start frees every lock in that segment);
# events_logger = "file": its events in that --tmpdir too.
CONTAINERS_CONF = (
    "[containers]\ndefault_ulimits = []\n\n"
    '[engine]\ncgroup_manager = "cgroupfs"\nlock_type = "file"\nevents_logger = "file"\n'
)

SUITE = "bookworm"
# python-is-python3: `python` (the Dockerfile runs `python -m venv`); passwd: groupadd and useradd.
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates", "passwd")
# The official image's apt settings (Debian's docker images ship them as docker-clean): no package
# cache, no downloaded .deb left behind, so `apt-get install` in the Dockerfile adds only the package.
DOCKER_CLEAN = (
    'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb'
    ' /var/cache/apt/*.bin || true"; };',
    'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb'
    ' /var/cache/apt/*.bin || true"; };',
    'Dir::Cache::pkgcache "";',
    'Dir::Cache::srcpkgcache "";',
)
BASE_HOOKS = (
    # the Dockerfile's UV_PYTHON is the official image's /usr/local/bin/python3.11
    'ln -s /usr/bin/python3.11 "$1/usr/local/bin/python3.11"',
    f"printf '%s\\n' {' '.join(shlex.quote(line) for line in DOCKER_CLEAN)}"
    ' > "$1/etc/apt/apt.conf.d/docker-clean"',
    # (mmdebstrap's own clean-up, which follows, finds no cache to remove under those settings)
    'rm -f "$1"/var/cache/apt/*.bin',
)
BASE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)
BASE_REPO = "localhost/dust-mcp-bridge-test-base"
# Where the build sees the host's CA bundle (over the base's own, for the RUN steps only).
BUILD_CA_PATH = "/etc/ssl/certs/ca-certificates.crt"

SIM_PORT = 8787  # the simulator's port inside the shared network namespace
EICAR = bytes.fromhex(EICAR_NDB.rsplit(":", 1)[1])  # rebuilt here, never committed as such
PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)


@dataclass(frozen=True)
class Service:
    """Redis or clamd: Debian's package on the stand-in base, run as its user on a unix socket only."""

    name: str
    package: str
    user: str  # the package's system user, made by its postinst
    command: tuple[str, ...]
    socket: str  # in a directory that is a volume of its own, mounted read-only into the bridge
    tmpfs_size: str
    files: tuple[tuple[str, str], ...] = ()  # (path in the image, content)

    @property
    def socket_dir(self) -> str:
        return str(PurePosixPath(self.socket).parent)

    def containerfile(self, base: str) -> str:
        install = "apt-get install -y --no-install-recommends"
        lines = [
            f"FROM {base}",
            f"RUN apt-get update && DEBIAN_FRONTEND=noninteractive {install} {self.package}"
            " && rm -rf /var/lib/apt/lists/*",
            *(f"COPY {PurePosixPath(target).name} {target}" for target, _ in self.files),
            f"USER {self.user}",
            f"CMD {json.dumps(list(self.command))}",
        ]
        return "\n".join(lines) + "\n"

    def tag(self) -> str:
        """Kept between runs as the base is: a hash of this recipe on the base's own (weekly) tag."""
        recipe = json.dumps([self.containerfile(base_tag()), self.files]).encode()
        return f"localhost/dust-mcp-bridge-test-{self.name}:{hashlib.sha256(recipe).hexdigest()[:12]}"


# Debian's own paths for them (redis.conf's commented unixsocket, clamd.conf's LocalSocket)
REDIS_SOCKET, CLAMD_SOCKET = "/run/redis/redis-server.sock", "/run/clamav/clamd.ctl"
# clamd's settings: those docs/deployment.md asks for (the 50 MiB upload cap), clamd in the foreground
# (its log on stdout: no LogFile), its socket readable by the bridge's uid, temporary files in its tmpfs.
CLAMD_CONF = {
    "DatabaseDirectory": "/var/lib/clamav",
    "TemporaryDirectory": "/tmp",
    "LocalSocket": CLAMD_SOCKET,
    "LocalSocketMode": "666",
    "FixStaleSocket": "yes",
    "Foreground": "yes",
    "AlertExceedsMax": "yes",
    "StreamMaxLength": "50M",
    "MaxScanSize": "200M",
    "MaxFileSize": "200M",
    "MaxRecursion": "16",
    "MaxFiles": "10000",
    "MaxScanTime": "60000",
    "SelfCheck": "0",
}
REDIS = Service(
    name="redis",
    package="redis-server",
    user="redis",
    # no TCP port, no persistence (a read-only root; the bridge needs none)
    command=(
        *("redis-server", "--port", "0", "--unixsocket", REDIS_SOCKET, "--unixsocketperm", "666"),
        *("--save", "", "--appendonly", "no", "--dir", "/tmp"),
    ),
    socket=REDIS_SOCKET,
    tmpfs_size="16m",
)
CLAMD = Service(
    name="clamd",
    package="clamav-daemon",
    user="clamav",
    command=("clamd",),  # Debian's, reading /etc/clamav/clamd.conf
    socket=CLAMD_SOCKET,
    tmpfs_size="64m",
    # the EICAR test signature only: Debian ships no signatures, and freshclam has no internet there
    files=(
        ("/etc/clamav/clamd.conf", "".join(f"{k} {v}\n" for k, v in CLAMD_CONF.items())),
        ("/var/lib/clamav/test-eicar.ndb", EICAR_NDB + "\n"),
    ),
)
SERVICES = (REDIS, CLAMD)


# Set when the first fixture starts; the last teardown prints the whole module's duration.
_STARTED: list[float] = []


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


# The private storage: kept between runs for the base, used by one run at a time (LOCK).
HOME = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dust-mcp-bridge" / "image-test"
LOCK = HOME / "lock"
STORAGE = HOME / "storage"  # podman --root: images (the cached base), containers, libpod's database
# Volatile state, at fixed paths since libpod's database records them; emptied after a reboot as a tmpfs
# would be (BOOT_ID): podman --runroot and --tmpdir (libpod's locks: lock_type = "file" keeps them
# here, out of the machine's shared-memory lock segment), and the OCI runtime root of the build's RUN
# containers (`--runtime-flag root=`), so that one a killed build leaves behind is found and removed.
RUNROOT, TMPDIR, BUILD_RUNC = HOME / "run", HOME / "tmp", HOME / "build-runc"
BOOT_ID = HOME / "boot_id"


class Podman:
    """`podman --runtime runc ...` on this test's private storage, with its containers.conf."""

    def __init__(self, conf: Path, scratch: Path) -> None:
        # TMPDIR: where buildah puts the bundles of the build's RUN containers (and its copies of layers)
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf), "TMPDIR": str(scratch)}
        self.options = ["--runtime", "runc", "--root", str(STORAGE), "--runroot", str(RUNROOT)]
        self.options += ["--tmpdir", str(TMPDIR)]

    def __call__(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["podman", *self.options, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args)[:300]} exited with {done.returncode}:\n{tail(done.stdout)}\n"
                f"{tail(done.stderr)}"
            )
        return done

    def inspect(self, what: str, name: str) -> dict[str, object]:
        (data,) = json.loads(self(what, "inspect", name).stdout)
        assert isinstance(data, dict)
        return data

    def logs(self, name: str) -> str:
        done = self("logs", name, check=False, timeout=30)
        return tail(done.stdout + done.stderr, 60)

    def remove(self, name: str) -> None:
        """Remove the container `name` if it exists (stopping it first), and make sure it is gone."""
        self("rm", "--force", "--time", "5", name, check=False, timeout=60)
        assert self("container", "exists", name, check=False).returncode != 0, f"{name} is still there"

    def remove_volume(self, name: str) -> None:
        self("volume", "rm", "--force", name, check=False, timeout=60)
        assert self("volume", "exists", name, check=False).returncode != 0, f"volume {name} is still there"

    def containers(self) -> list[str]:
        """Every container of the private storage: podman's, and a build's working containers."""
        return self("ps", "--all", "--external", "--quiet", "--no-trunc", timeout=60).stdout.split()

    def layers(self, image: str) -> list[str]:
        found = json.loads(self("image", "inspect", "--format", "{{json .RootFS.Layers}}", image).stdout)
        assert isinstance(found, list)
        return found

    def sweep(self, keep: Collection[str]) -> None:
        """Remove every container and volume of the private storage, and every image but those `keep` names.

        The storage is this test's alone and held under LOCK: whatever is in it is this run's, or an
        earlier run's that was killed before its own cleanup."""
        if BUILD_RUNC.is_dir():  # the RUN step of a build killed mid-way is still running
            for runtime_id in run_checked(["runc", "--root", str(BUILD_RUNC), "list", "--quiet"]).split():
                run_checked(["runc", "--root", str(BUILD_RUNC), "delete", "--force", runtime_id])
        # one at a time, with those that depend on it (the bridge runs in the simulator's network namespace)
        for container in self.containers():
            self("rm", "--force", "--depend", "--ignore", "--time", "5", container, check=False, timeout=120)
        left = self.containers()
        assert not left, f"containers left in the private storage {STORAGE}: {left}"
        if volumes := self("volume", "ls", "--quiet", timeout=60).stdout.split():
            self("volume", "rm", "--force", *volumes, timeout=120)
        # (a name not made yet fails the inspect, which still prints the others' IDs)
        found = self("image", "inspect", "--format", "{{.Id}}", *keep, check=False).stdout.split()
        kept = {image.removeprefix("sha256:") for image in found}
        images = set(self("images", "--all", "--quiet", "--no-trunc", timeout=60).stdout.split())
        if stale := sorted(i for i in images if i.removeprefix("sha256:") not in kept):
            self("rmi", "--force", *stale, timeout=300)


def run_checked(args: list[str]) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{' '.join(args)} exited with {done.returncode}: {done.stderr}"
    return done.stdout


def prepare_home() -> None:
    """The private storage's directories; its volatile ones emptied if the machine rebooted since."""
    boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    if not BOOT_ID.is_file() or BOOT_ID.read_text(encoding="ascii").strip() != boot:
        for volatile in (RUNROOT, TMPDIR, BUILD_RUNC):
            shutil.rmtree(volatile, ignore_errors=True)
        BOOT_ID.write_text(boot + "\n", encoding="ascii")
    BUILD_RUNC.mkdir(mode=0o700, exist_ok=True)


@contextlib.contextmanager
def locked(timeout: float = 1200) -> Iterator[None]:
    """The private storage to this run alone: another image test on the same storage waits (bounded)."""
    HOME.mkdir(mode=0o700, parents=True, exist_ok=True)
    with LOCK.open("a") as handle:
        deadline, said = time.monotonic() + timeout, False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, f"{LOCK} still held by another run after {timeout} s"
                if not said:
                    print(f"\nwaiting for another image test to release {LOCK}")
                    said = True
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def base_tag() -> str:
    """The cached base's own tag: a hash of its recipe and the ISO week, so it is remade weekly."""
    recipe = json.dumps([SUITE, BASE_PACKAGES, BASE_HOOKS, BASE_CHANGES]).encode()
    year, week, _ = datetime.date.today().isocalendar()
    return f"{BASE_REPO}:{SUITE}-{hashlib.sha256(recipe).hexdigest()[:12]}-{year}w{week:02d}"


def kept_images() -> list[str]:
    """What the private storage keeps between runs: the base and the Redis and clamd images on it."""
    return [base_tag(), *(service.tag() for service in SERVICES)]


def production_base() -> str:
    """The image both of the Dockerfile's stages start FROM, fully qualified as podman names it."""
    (base,) = {stage.base for stage in parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))}
    # A stand-in can take a Docker Hub name and tag, never the digest of the real image.
    assert re.fullmatch(r"[a-z0-9][a-z0-9._-]*:[\w][\w.-]*", base), (
        f"FROM {base}: the image test can stand in only for an official Docker Hub image by tag"
    )
    return f"docker.io/library/{base}"


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    _STARTED.append(time.monotonic())
    if shutil.which("podman") is None:
        pytest.skip("no container engine: podman is not installed (`make test` installs podman and runc)")
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    conf.write_text(CONTAINERS_CONF, encoding="utf-8")
    engine = Podman(conf, tmp_path_factory.mktemp("podman-tmp"))
    with locked():
        prepare_home()
        try:
            info = engine("info", "--format", "json", timeout=60, check=False)
        except subprocess.TimeoutExpired:
            pytest.skip(
                "no container engine can start here: `podman --runtime runc info` did not answer in 60 s"
            )
        if info.returncode != 0:
            pytest.skip(
                f"no container engine can start here: `podman --runtime runc info` on {STORAGE} failed:\n"
                f"{info.stderr}"
            )
        engine.sweep(keep=kept_images())  # what a killed run left, and the bases of other weeks
        try:
            yield engine
        finally:
            engine.sweep(keep=kept_images())
            print(
                f"\nimage test: {time.monotonic() - _STARTED[0]:.1f} s in all (base, build, run, checks, "
                f"cleanup); no container or volume left in {STORAGE}"
            )


@pytest.fixture(scope="module")
def base_image(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The stand-in for the Dockerfile's base, under its name: made once a week, reused in between."""
    tag, name = base_tag(), production_base()
    if podman("image", "exists", tag, check=False).returncode == 0:
        podman("tag", tag, name)
        print(f"\nbase image: {tag} as {name}, reused")
        return name
    mmdebstrap = shutil.which("mmdebstrap")
    assert mmdebstrap, "mmdebstrap is not installed: `make test` installs it (it makes the base image)"
    tar = tmp_path_factory.mktemp("base") / "rootfs.tar"
    started = time.monotonic()
    args = [mmdebstrap, "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}"]
    args += [f"--customize-hook={hook}" for hook in BASE_HOOKS]
    done = subprocess.run(
        [*args, SUITE, str(tar)],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, f"mmdebstrap failed:\n{tail(done.stderr)}"
    changes = [arg for change in BASE_CHANGES for arg in ("--change", change)]
    podman("import", *changes, str(tar), tag, timeout=600)
    tar.unlink()
    podman("tag", tag, name)
    print(f"\nbase image: {tag} as {name}, made in {time.monotonic() - started:.1f} s")
    return name


@pytest.fixture(scope="module")
def service_images(podman: Podman, base_image: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Redis's and clamd's images, Debian's packages on the stand-in: made with the base, then reused."""
    base = base_tag()
    base_layers = podman.layers(base)
    base_size = int(podman("image", "inspect", "--format", "{{.Size}}", base).stdout)
    for service in SERVICES:
        tag, started = service.tag(), time.monotonic()
        # (the same tag on an older base: the base was removed by hand and made again)
        if podman("image", "exists", tag, check=False).returncode == 0 and (
            podman.layers(tag)[: len(base_layers)] == base_layers
        ):
            made = "reused"
        else:
            context = tmp_path_factory.mktemp(service.name)
            (context / "Containerfile").write_text(service.containerfile(base), encoding="utf-8")
            for target, content in service.files:
                (context / PurePosixPath(target).name).write_text(content, encoding="utf-8")
            # apt reaches Debian's mirror (plain HTTP, signed indexes: no CA needed) over the host's network
            args = ["build", "--network", "host", "--layers=false", "--pull=never"]
            podman(*args, "--runtime-flag", f"root={BUILD_RUNC}", "--tag", tag, str(context), timeout=1200)
            made = f"made in {time.monotonic() - started:.1f} s"
        size = int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout)
        above = (size - base_size) / 1e6
        print(f"\n{service.name} image: {tag} {made}; {size / 1e6:.0f} MB, {above:.0f} MB above the base")


def host_ca_bundle() -> Path | None:
    for candidate in (os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate).resolve()
    return None


@dataclass
class Image:
    tag: str
    base: str
    build_seconds: float
    size: int
    base_size: int
    host_ca: Path | None


@pytest.fixture(scope="module")
def image(podman: Podman, base_image: str) -> Iterator[Image]:
    """The Dockerfile, unchanged, built on `base_image`: every instruction run, from the committed lock."""
    tag = f"localhost/dust-mcp-bridge:test-{uuid.uuid4().hex[:12]}"
    # docker format: the OCI image format has no HEALTHCHECK (podman drops it with a warning);
    # --pull=never: FROM finds the stand-in under the production name, and nothing else
    args = ["build", "--format", "docker", "--network", "host", "--layers=false", "--pull=never"]
    args += ["--runtime-flag", f"root={BUILD_RUNC}", "--tag", tag, "--file", str(DOCKERFILE)]
    ca = host_ca_bundle()
    if ca is not None:
        args += ["--build-arg", f"BUILD_CA_BUNDLE={BUILD_CA_PATH}", "--volume", f"{ca}:{BUILD_CA_PATH}:ro"]
    started = time.monotonic()
    try:
        podman(*args, str(REPO), timeout=1200)
        seconds = time.monotonic() - started
        size = int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout)
        base_size = int(podman("image", "inspect", "--format", "{{.Size}}", base_image).stdout)
        above = (size - base_size) / 1e6
        print(f"\nimage: {tag} built in {seconds:.1f} s; {size / 1e6:.0f} MB, {above:.0f} MB above the base")
        yield Image(tag, base_image, seconds, size, base_size, ca)
    finally:
        podman("rmi", "--force", tag, check=False, timeout=120)


def one_off(podman: Podman, *args: str) -> str:
    """`podman run --rm --network none ARGS` (options, image, command): its output; removed by name."""
    name = f"dmb-test-{uuid.uuid4().hex[:12]}-once"
    try:
        return podman("run", "--rm", "--name", name, "--network", "none", *args).stdout
    finally:
        podman.remove(name)


# --- Redis and clamd, answering on their sockets ---------------------------------------------------


def unix_command(path: Path, command: bytes, timeout: float = 2.0) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(command)
        return sock.recv(256)


def redis_answers(path: Path) -> bool:
    with contextlib.suppress(OSError):
        return unix_command(path, b"PING\r\n").startswith(b"+PONG")
    return False


ANSWERS: dict[str, Callable[[Path], bool]] = {
    REDIS.name: redis_answers,
    CLAMD.name: lambda path: clamd_ping(str(path)),
}


def wait_answering(podman: Podman, name: str, service: Service, path: Path, timeout: float = 60) -> None:
    """Until the service answers on its socket, as the host sees it in the volume (bounded)."""
    deadline = time.monotonic() + timeout
    while not ANSWERS[service.name](path):
        state = podman("inspect", "--format", "{{.State.Status}}", name, check=False).stdout.strip()
        assert state == "running", (
            f"{name} is {state} before answering on {service.socket}:\n{podman.logs(name)}"
        )
        assert time.monotonic() < deadline, (
            f"{name}: no answer on {service.socket} in {timeout} s:\n{podman.logs(name)}"
        )
        time.sleep(0.1)


# --- the deployment -------------------------------------------------------------------------------


@dataclass
class Deployment:
    bridge: str  # container names
    simulator: str
    services: dict[str, str]  # Service.name: its container's name, also its volume's
    url: str  # the bridge, as published on 127.0.0.1
    sim_url: str
    sockets: dict[str, Path]  # Service.name: its socket, as the host sees it in the volume
    run_seconds: float  # `podman run` of the bridge, until it returned
    healthy_seconds: float  # `podman run` of the bridge, until its HEALTHCHECK first passed


def read_only_run(name: str) -> list[str]:
    """`podman run` options as docs/deployment.md runs the image (podman's extra tmpfs mounts off).

    --timeout: should this run be killed before its cleanup, conmon still kills the container once the
    module's time limit is over (and the next run removes it)."""
    run = ["run", "--detach", "--name", name, "--read-only", "--read-only-tmpfs=false"]
    return [*run, "--timeout", str(MODULE_TIMEOUT)]


def wait_healthy(podman: Podman, name: str, started: float, timeout: float = 120) -> tuple[float, float]:
    """Run the image's HEALTHCHECK until it passes: (seconds since `started`, seconds that check took)."""
    while True:
        begun = time.monotonic()
        if podman("healthcheck", "run", name, check=False, timeout=30).returncode == 0:
            now = time.monotonic()
            return now - started, now - begun
        state = podman("inspect", "--format", "{{.State.Status}}", name, check=False).stdout.strip()
        assert state == "running", f"{name} is {state} before its health check passed:\n{podman.logs(name)}"
        assert time.monotonic() - started < timeout, (
            f"{name} not healthy in {timeout} s:\n{podman.logs(name)}"
        )
        time.sleep(0.2)


def start_service(podman: Podman, name: str, service: Service) -> Path:
    """Its volume, then its container, until it answers: its socket, as the host sees it in the volume."""
    podman("volume", "create", name)
    mountpoint = podman("volume", "inspect", "--format", "{{.Mountpoint}}", name).stdout.strip()
    path = Path(mountpoint) / PurePosixPath(service.socket).name
    tmpfs = f"/tmp:rw,size={service.tmpfs_size},mode=1777"
    volume = f"{name}:{service.socket_dir}:U"  # chowned to the service's user, who makes its socket there
    started = time.monotonic()
    podman(*read_only_run(name), "--network", "none", "--tmpfs", tmpfs, "--volume", volume, service.tag())
    wait_answering(podman, name, service, path)
    seconds = time.monotonic() - started
    print(f"\n{service.name} container: answering on its socket {seconds:.2f} s after `podman run` began")
    return path


@pytest.fixture(scope="module")
def deployment(podman: Podman, image: Image, service_images: None) -> Iterator[Deployment]:
    prefix = f"dmb-test-{uuid.uuid4().hex[:12]}"
    bridge, simulator = f"{prefix}-bridge", f"{prefix}-simulator"
    services = {service.name: f"{prefix}-{service.name}" for service in SERVICES}
    port, sim_port = free_port(), free_port()
    try:
        sockets = {
            service.name: start_service(podman, services[service.name], service) for service in SERVICES
        }

        # The simulator owns the network namespace (and the published ports); the bridge joins it.
        run = [*read_only_run(simulator), "--tmpfs", "/tmp:rw,size=64m,mode=1777"]
        run += ["--publish", f"127.0.0.1:{port}:8080", "--publish", f"127.0.0.1:{sim_port}:{SIM_PORT}"]
        args = ["simulator", "--host", "0.0.0.0", "--port", str(SIM_PORT)]
        podman(*run, image.tag, *args, "--public-url", f"http://127.0.0.1:{SIM_PORT}")
        sim_url = f"http://127.0.0.1:{sim_port}"
        wait_for_http(f"{sim_url}/_sim/health", timeout=60)

        env = {
            "DUST_API_KEY": TEST_DUST_KEY,
            "DUST_WORKSPACE_ID": "demo",
            "DUST_BASE_URL": f"http://127.0.0.1:{SIM_PORT}",
            "REDIS_URL": f"unix://{REDIS.socket}",
            "CLAMD_URL": f"unix://{CLAMD.socket}",
        }
        run = [*read_only_run(bridge), "--tmpfs", "/tmp:rw,size=256m,mode=1777"]
        run += ["--network", f"container:{simulator}"]
        run += [f"--volume={services[service.name]}:{service.socket_dir}:ro" for service in SERVICES]
        run += [arg for key, value in env.items() for arg in ("--env", f"{key}={value}")]
        started = time.monotonic()
        podman(*run, image.tag)  # its own USER and CMD
        run_seconds = time.monotonic() - started
        healthy_seconds, check_seconds = wait_healthy(podman, bridge, started)
        print(
            f"\nbridge container: `podman run` returned after {run_seconds:.2f} s; its HEALTHCHECK passed "
            f"{healthy_seconds:.2f} s after `podman run` began (that check took {check_seconds:.2f} s)"
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while (ready := httpx2.get(f"{url}/readyz", timeout=5)).status_code != 200:
            assert time.monotonic() < deadline, f"/readyz: {ready.text}\n{podman.logs(bridge)}"
            time.sleep(0.5)
        yield Deployment(bridge, simulator, services, url, sim_url, sockets, run_seconds, healthy_seconds)
    finally:
        for name in (bridge, simulator, *services.values()):
            podman.remove(name)
        for name in services.values():
            podman.remove_volume(name)


# --- the checks -----------------------------------------------------------------------------------


def canonical(name: str) -> str:
    return name.replace("_", "-").replace(".", "-").lower()


def test_image_has_the_locked_packages_its_user_its_healthcheck_and_no_build_ca(
    podman: Podman, image: Image
) -> None:
    runtime = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))[-1]
    (check,) = runtime.all("HEALTHCHECK")
    inspected = podman.inspect("image", image.tag)
    config = inspected["Config"]
    assert isinstance(config, dict)
    # (podman 4 reports the health check at the top level, docker and later podman under Config)
    healthcheck = config.get("Healthcheck") or inspected.get("Healthcheck")
    assert isinstance(healthcheck, dict), "no HEALTHCHECK in the image: was it built in OCI format?"
    assert config["User"] == "10001"
    assert config["Entrypoint"] == ["dust-mcp-bridge"]
    assert config["Cmd"] == ["serve", "--host", "0.0.0.0", "--port", "8080", "--workers"]
    assert healthcheck["Test"] == ["CMD", *json.loads(check.args.partition(" CMD ")[2])]
    assert not [e for e in config["Env"] if e.startswith(("SSL_CERT_FILE=", "PIP_CERT=", "BUILD_CA"))]

    # Built FROM the production name, which here is the stand-in (--pull=never): its layers come first
    base_layers = podman.layers(image.base)
    assert base_layers and podman.layers(image.tag)[: len(base_layers)] == base_layers

    # The venv holds what uv.lock pins (the dev extra left out), and the bridge as a wheel.
    probe = (
        "import json, bridge, importlib.metadata as md; "
        "print(json.dumps({'file': bridge.__file__, "
        "'installed': {d.metadata['Name']: d.version for d in md.distributions()}}))"
    )
    info = json.loads(one_off(podman, "--entrypoint", "/opt/venv/bin/python", image.tag, "-c", probe))
    assert info["file"] == "/opt/venv/lib/python3.11/site-packages/bridge/__init__.py"
    lock = tomllib.loads((REPO / "uv.lock").read_text(encoding="utf-8"))
    locked: dict[str, set[str]] = {}
    for package in lock["package"]:
        locked.setdefault(canonical(package["name"]), set()).add(package["version"])
    installed = {canonical(name): version for name, version in info["installed"].items()}
    assert installed.pop("dust-mcp-bridge") in locked["dust-mcp-bridge"]
    assert "mcp" in installed and "uvicorn" in installed
    moved = {n: v for n, v in installed.items() if v not in locked.get(n, set())}
    assert not moved, f"installed in the image but not as uv.lock pins them: {moved}"
    assert not {"pytest", "pytest-asyncio", "mypy", "ruff", "hypothesis", "uv", "pip"} & installed.keys()

    # The host's CA bundle reached the build only: the image has the base image's own bundle.
    def bundle(of: str) -> str:
        return one_off(podman, "--entrypoint", "sha256sum", of, BUILD_CA_PATH).split()[0]

    # (CI's and this machine's host bundles differ from Debian's: a baked-in host bundle would show)
    assert bundle(image.tag) == bundle(image.base)


INSIDE = """
import json, os
def write(path):
    try:
        with open(path, "w") as f:
            f.write("x")
    except OSError as exc:
        return exc.strerror
    os.unlink(path)
    return "written"
with open("/proc/1/cmdline", "rb") as f:
    pid1 = [arg.decode() for arg in f.read().split(b"\\0") if arg]
paths = ("/opt/venv/x", "/etc/x", "/x", "/var/tmp/x", "/run/x", "/run/redis/x", "/run/clamav/x", "/tmp/x")
writes = {p: write(p) for p in paths}
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "pid1": pid1, "writes": writes}))
"""


def test_runs_read_only_as_its_user_and_its_healthcheck_passes(
    podman: Podman, deployment: Deployment
) -> None:
    state = podman.inspect("container", deployment.bridge)
    assert state["State"]["Health"]["Status"] == "healthy", state["State"]  # type: ignore[index]
    assert state["HostConfig"]["ReadonlyRootfs"] is True  # type: ignore[index]
    done = podman("exec", deployment.bridge, "/opt/venv/bin/python", "-c", INSIDE)
    inside = json.loads(done.stdout)
    assert (inside["uid"], inside["gid"]) == (10001, 10001)
    # PID 1 is the bridge itself (exec-form ENTRYPOINT): it gets the SIGTERM of `podman stop`
    assert inside["pid1"][1:] == [
        "/opt/venv/bin/dust-mcp-bridge",
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
        "--workers",
    ]
    writes = inside["writes"]
    assert writes.pop("/tmp/x") == "written"
    assert set(writes.values()) == {"Read-only file system"}, writes


def test_redis_and_clamd_are_containers_read_only_as_their_users_with_no_network(
    podman: Podman, deployment: Deployment
) -> None:
    for service in SERVICES:
        state = podman.inspect("container", deployment.services[service.name])
        assert state["State"]["Status"] == "running", state["State"]  # type: ignore[index]
        assert state["ImageName"] == service.tag()
        assert state["Config"]["User"] == service.user  # type: ignore[index]
        assert state["HostConfig"]["ReadonlyRootfs"] is True  # type: ignore[index]
        assert state["HostConfig"]["NetworkMode"] == "none"  # type: ignore[index]
        # its socket, the only way in, made by the service's process: not root's
        assert deployment.sockets[service.name].stat().st_uid != 0, service.name


def post_upload(url: str, name: str, data: bytes, content_type: str) -> httpx2.Response:
    return httpx2.post(f"{url}/v1/uploads", files={"file": (name, data, content_type)}, timeout=60)


async def test_mcp_lists_answers_and_uploads_through_redis_and_clamd(deployment: Deployment) -> None:
    url = deployment.url
    async with Client(f"{url}/mcp") as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        first = await client.call_tool("ask_agent", {"agent": "echo", "message": "hello from the image"})
        handle = (first.structured_content or {}).get("conversation")
        second = await client.call_tool(
            "ask_agent", {"agent": "echo", "message": "and again", "conversation": handle}
        )
        picture = base64.b64encode(PNG_1X1).decode()
        uploaded = await client.call_tool("upload_file", {"filename": "dot.png", "content_base64": picture})
        refused = await client.call_tool(
            "upload_file", {"filename": "eicar.txt", "content_base64": base64.b64encode(EICAR).decode()}
        )
    assert {"list_agents", "ask_agent", "upload_file"} <= tools, tools
    assert not first.is_error and text_of(first).startswith("Echo (turn 1): hello from the image")
    # the conversation handle is kept in Redis: the second turn continues the first
    assert not second.is_error and text_of(second).startswith("Echo (turn 2): and again")
    assert not uploaded.is_error, text_of(uploaded)
    assert (uploaded.structured_content or {}).get("mime_type") == "image/png"
    assert refused.is_error and "virus scanner found Test.EICAR" in text_of(refused)

    # POST /v1/uploads: scanned by clamd (the EICAR signature is refused), then posted to Dust
    clean = post_upload(url, "notes.txt", b"plain text, nothing to see\n", "text/plain")
    assert clean.status_code in (200, 201), clean.text
    infected = post_upload(url, "eicar.txt", EICAR, "text/plain")
    assert infected.status_code == 422 and infected.json()["type"] == "infected", infected.text
    in_dust = {
        f["fileName"] for f in httpx2.get(f"{deployment.sim_url}/_sim/files", timeout=5).json()["files"]
    }
    assert {"dot.png", "notes.txt"} <= in_dust and "eicar.txt" not in in_dust, in_dust

    status = httpx2.get(f"{url}/status", timeout=5).json()
    assert status["mode"] == "dust" and status["store"] == "redis" and status["uploads"]["scan"] == "required"
    keys = unix_command(deployment.sockets[REDIS.name], b"DBSIZE\r\n")
    assert keys.startswith(b":") and int(keys[1:].strip()) > 0, keys
    ready = httpx2.get(f"{url}/readyz", timeout=5).json()
    assert ready["checks"] == {"store": "ok", "dust": "ok", "scanner": "ok"}, ready


def test_stops_on_sigterm_within_the_grace_period_with_json_logs(
    podman: Podman, deployment: Deployment
) -> None:
    started = time.monotonic()
    podman("stop", "--time", "30", deployment.bridge, timeout=60)
    seconds = time.monotonic() - started
    state = podman.inspect("container", deployment.bridge)["State"]
    done = podman("logs", deployment.bridge)
    logs = done.stdout + done.stderr
    print(f"\nbridge container: stopped {seconds:.2f} s after `podman stop` (exit code {state['ExitCode']})")  # type: ignore[index]
    assert state["ExitCode"] == 0 and seconds < 25, (state, tail(logs))  # type: ignore[index]
    # BRIDGE_LOG_FORMAT=json: every log record is a JSON object (the CLI's own start-up lines,
    # `dust-mcp-bridge: ...` and `dust-mcp-bridge 0.1.0 listening on ...`, are plain text)
    records = [line for line in logs.splitlines() if line.strip() and not line.startswith("dust-mcp-bridge")]
    assert records, tail(logs)
    events = [json.loads(line) for line in records]
    assert {"tool_call", "upload_accepted", "upload_refused"} <= {e.get("event") for e in events}
    messages = [str(e.get("message")) for e in events]
    started = [m for m in messages if m.startswith("Started server process [")]
    print(f"bridge container: {len(started)} worker process(es) (the image's CMD: BRIDGE_WORKERS, auto)")
    if "Started parent process [1]" in messages:
        # Workers (REDIS_URL is set and the container has more than one CPU): PID 1 is their
        # supervisor, which stops last, once every worker has finished.
        finished = {m.replace("Finished", "Started") for m in messages if m.startswith("Finished server")}
        assert len(started) > 1 and set(started) == finished, messages
        assert messages[-1] == "Stopping parent process [1]", messages[-1]
    else:
        assert started == ["Started server process [1]"], started
        assert messages[-1] == "Finished server process [1]", messages[-1]
