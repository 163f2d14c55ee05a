"""Start and stop the real servers the tests use (Redis, the Dust simulator, the bridge).

Every server listens on a free loopback port, is awaited on readiness (never a fixed sleep) and is
stopped by pid, so a test run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20.0) -> None:
    """Block until something accepts connections on 127.0.0.1:port (or the process dies)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def wait_for_http(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30.0) -> None:
    """Block until `url` answers with any HTTP status below 500 (or the process dies)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        with contextlib.suppress(httpx2.HTTPError):
            if httpx2.get(url, timeout=1.0).status_code < 500:
                return
        time.sleep(0.02)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@dataclass
class Proc:
    """A child process with its log file; `stop()` ends it by pid."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal the process and wait for it; kill it if it does not go."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=timeout)
        return int(self.popen.returncode)


def spawn(args: Sequence[str], port: int, env: dict[str, str] | None = None, name: str = "proc") -> Proc:
    """Start `args` with stdout/stderr in a temp log file."""
    log_fd, log_name = tempfile.mkstemp(prefix=f"{name}-", suffix=".log")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("DUST_", "BRIDGE_", "REDIS_"))}
    full_env["BRIDGE_ENV_FILE"] = "none"  # a developer's .env never leaks into a test
    full_env.update(env or {})
    popen = subprocess.Popen(
        list(args), stdout=log_fd, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full_env, cwd=REPO
    )
    os.close(log_fd)
    return Proc(popen=popen, log_path=Path(log_name), port=port)


def redis_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found is None:
        raise RuntimeError("redis-server is not installed; `make test` installs it with apt")
    return found


def start_redis(port: int | None = None, data_dir: Path | None = None) -> Proc:
    """A throwaway redis-server on loopback (no persistence unless `data_dir` is given)."""
    port = port or free_port()
    workdir = data_dir or Path(tempfile.mkdtemp(prefix="redis-"))
    args = [
        redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--daemonize",
        "no",
        "--dir",
        str(workdir),
    ]
    if data_dir is None:
        args += ["--save", "", "--appendonly", "no"]
    else:
        args += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
    proc = spawn(args, port, name="redis")
    wait_for_port(port, proc.popen)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            if s.recv(64).startswith(b"+PONG"):
                return proc
        time.sleep(0.02)
    proc.stop()
    raise TimeoutError("redis did not answer PING")


def start_simulator(port: int | None = None, args: Sequence[str] = ()) -> Proc:
    """The project's Dust simulator as its own process."""
    port = port or free_port()
    proc = spawn(
        [sys.executable, "-m", "bridge.simulator", "--port", str(port), *args], port, name="simulator"
    )
    wait_for_http(f"http://127.0.0.1:{port}/_sim/health", proc.popen)
    return proc


@contextlib.contextmanager
def running(proc: Proc) -> Iterator[Proc]:
    """Stop `proc` on exit, whatever happens."""
    try:
        yield proc
    finally:
        proc.stop()


TEST_DUST_KEY = "sk-testkey0123456789abcdef"


def bridge_env(
    simulator: Proc | None, redis_port: int | None = None, clamd: Proc | None = None, **extra: str
) -> dict[str, str]:
    """Environment for a bridge talking to `simulator` (demo mode when None), optionally Redis and clamd."""
    env = {
        "BRIDGE_LOG_LEVEL": "INFO",
        "BRIDGE_HEARTBEAT_SECONDS": "1",
        "BRIDGE_COALESCE_MS": "20",
        # The test bridges share one Redis, so one request budget for the principal `local`: the
        # default 300 a minute would be the whole run's, not one test's. Rate-limit tests set theirs.
        "BRIDGE_RATE_LIMIT": "100000/minute",
        # One process, as the tests were written for (auto would start one per core with Redis); the
        # worker tests ask for theirs (tests/test_workers.py).
        "BRIDGE_WORKERS": "1",
    }
    if simulator is not None:
        env.update(
            {
                "DUST_BASE_URL": simulator.url,
                "DUST_API_KEY": TEST_DUST_KEY,
                "DUST_WORKSPACE_ID": "demo",
                "BRIDGE_DEMO": "off",
            }
        )
    if redis_port is not None:
        env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
    if clamd is not None:
        env["CLAMD_URL"] = f"unix://{clamd.extra['socket']}"
    env.update(extra)
    return env


def start_bridge(env: dict[str, str], port: int | None = None) -> Proc:
    """`dust-mcp-bridge serve` as its own process, awaited on /healthz."""
    port = port or free_port()
    proc = spawn([sys.executable, "-m", "bridge", "serve", "--port", str(port)], port, env=env, name="bridge")
    wait_for_http(f"http://127.0.0.1:{port}/healthz", proc.popen)
    return proc


# A one-line ndb signature (name:target:offset:hex) for the EICAR test string, per reference/infra.md §2.
# This is the hex of the string, not the string itself, so host antivirus tools leave the repo alone.
EICAR_NDB = (
    "Test.EICAR:0:*:58354f2150254041505b345c505a58353428505e2937434329377d2445494341522d5354414e444152"
    "442d414e544956495255532d544553542d46494c452124482b482a"
)


def clamd_binary() -> str:
    found = shutil.which("clamd") or ("/usr/sbin/clamd" if Path("/usr/sbin/clamd").exists() else None)
    if found is None:
        raise RuntimeError("clamd is not installed; `make test` installs clamav-daemon with apt")
    return found


def clamd_ping(socket_path: str, timeout: float = 0.5) -> bool:
    """True when clamd answers zPING with PONG on its unix socket."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        sock.sendall(b"zPING\0")
        return sock.recv(16).startswith(b"PONG")
    return False


def start_clamd(
    tmpdir: Path | None = None,
    stream_max_length: str = "25M",
    *,
    max_scan_size: str | None = None,
    max_file_size: str | None = None,
    max_recursion: int = 16,
    max_files: int = 1000,
    max_scan_time_ms: int = 30_000,
    alert_exceeds_max: bool = True,
) -> Proc:
    """A clamd on a unix socket and a loopback TCP port, loading only the EICAR test signature.

    `.extra` carries `socket` (the unix socket path) and `tcp` (`tcp://127.0.0.1:PORT`). Debian
    ships no signature database, and clamd refuses to start without one, hence the ndb file.

    The scan limits are set explicitly, with `AlertExceedsMax yes`, as the README asks of a
    deployment: content clamd will not fully inspect is reported `Heuristics.Limits.Exceeded.*
    FOUND` instead of passing as clean. `MaxScanSize` defaults to the stream limit and
    `MaxFileSize` to `MaxScanSize`: with `MaxFileSize >= MaxScanSize`, an archive member that clamd
    would truncate at `MaxFileSize` always exhausts the scan budget and is flagged.
    """
    scan_size = max_scan_size or stream_max_length
    file_size = max_file_size or scan_size
    workdir = (tmpdir or Path(tempfile.mkdtemp(prefix="clamd-"))).resolve()
    (workdir / "db").mkdir(parents=True, exist_ok=True)
    (workdir / "tmp").mkdir(exist_ok=True)
    (workdir / "db" / "test-eicar.ndb").write_text(EICAR_NDB + "\n", encoding="ascii")
    port = free_port()
    sock_path = workdir / "clamd.sock"
    conf = workdir / "clamd.conf"
    conf.write_text(
        "\n".join(
            [
                f"DatabaseDirectory {workdir / 'db'}",
                f"TemporaryDirectory {workdir / 'tmp'}",
                f"LocalSocket {sock_path}",
                "FixStaleSocket yes",
                f"TCPSocket {port}",
                "TCPAddr 127.0.0.1",
                "Foreground yes",
                f"StreamMaxLength {stream_max_length}",
                f"MaxScanSize {scan_size}",
                f"MaxFileSize {file_size}",
                f"MaxRecursion {max_recursion}",
                f"MaxFiles {max_files}",
                f"MaxScanTime {max_scan_time_ms}",
                f"AlertExceedsMax {'yes' if alert_exceeds_max else 'no'}",
                f"LogFile {workdir / 'clamd.log'}",
                "SelfCheck 0",
                "",
            ]
        ),
        encoding="utf-8",
    )
    proc = spawn([clamd_binary(), f"--config-file={conf}"], port, name="clamd")
    proc.extra.update({"socket": str(sock_path), "tcp": f"tcp://127.0.0.1:{port}"})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(
                f"clamd exited with {proc.popen.returncode} before answering PING:\n{proc.log()}"
            )
        if clamd_ping(str(sock_path)):
            wait_for_port(port, proc.popen)
            return proc
        time.sleep(0.02)
    proc.stop()
    raise TimeoutError("clamd did not answer PING within 30s")


def tool_path(name: str) -> str:
    """A validator from .venv-tools (built by `make test` from tools/requirements.txt)."""
    path = REPO / ".venv-tools" / "bin" / name
    if not path.exists():
        raise RuntimeError(
            f"{path} is missing: run `make test` (it installs tools/requirements.txt into .venv-tools)"
        )
    return str(path)


def _resp(*args: str) -> bytes:
    return f"*{len(args)}\r\n".encode() + b"".join(f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args)


def redis_command(port: int, *args: str, password: str | None = None, timeout: float = 2.0) -> bytes:
    """One command over RESP on loopback (after AUTH when `password` is given); the raw reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        if password is not None:
            sock.sendall(_resp("AUTH", password))
            sock.recv(1024)
        sock.sendall(_resp(*args))
        return sock.recv(65536)


def _wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.05)
    raise TimeoutError(f"{what} within {timeout}s")


def start_sentinel(master_port: int, service: str = "mymaster", password: str | None = None) -> Proc:
    """A Redis Sentinel on loopback monitoring the master on `master_port` as `service`.

    With `password`, the sentinel requires it and uses it for the master (one secret for both).
    """
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-"))
    conf = workdir / "sentinel.conf"
    lines = [f"port {port}", "bind 127.0.0.1", f"dir {workdir}"]
    lines += [f"sentinel monitor {service} 127.0.0.1 {master_port} 1"]
    lines += [f"sentinel down-after-milliseconds {service} 5000"]
    if password is not None:
        lines += [f"requirepass {password}", f"sentinel auth-pass {service} {password}"]
    conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = spawn([redis_binary(), str(conf), "--sentinel"], port, name="sentinel")
    wait_for_port(port, proc.popen)
    _wait_until(
        lambda: (
            str(master_port).encode()
            in redis_command(port, "SENTINEL", "get-master-addr-by-name", service, password=password)
        ),
        "sentinel did not report the master",
    )
    return proc


@dataclass
class Cluster:
    """A Redis Cluster of master-only nodes on loopback."""

    nodes: list[Proc]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000, Redis's rule) is a valid port and free too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def start_redis_cluster(size: int = 3) -> Cluster:
    """`size` cluster-enabled redis-servers joined with `redis-cli --cluster create`, slots covered."""
    nodes: list[Proc] = []
    try:
        for _ in range(size):
            port = _cluster_port()
            workdir = Path(tempfile.mkdtemp(prefix="redis-cluster-"))
            args = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
            args += ["--save", "", "--appendonly", "no", "--cluster-enabled", "yes"]
            args += ["--cluster-config-file", str(workdir / "nodes.conf"), "--cluster-node-timeout", "5000"]
            node = spawn(args, port, name="redis-cluster")
            nodes.append(node)
            wait_for_port(port, node.popen)
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        subprocess.run(
            [cli, "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in nodes], "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for node in nodes:
            _wait_until(
                lambda port=node.port: b"cluster_state:ok" in redis_command(port, "CLUSTER", "INFO"),
                "the cluster did not reach cluster_state:ok",
            )
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return Cluster(nodes)


def nginx_binary() -> str | None:
    """Debian's nginx, or None when it is not installed (`make test` installs it with apt)."""
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


# Every proxied request, one line each: when it ended, its status, what it was, which upstream(s) it
# went to (a comma between servers nginx passed it on to, as `proxy_next_upstream` did) and their statuses.
NGINX_LOG_FORMAT = (
    "$msec $status $request_method $uri $upstream_addr|$upstream_status|$upstream_connect_time|$request_time"
)


def nginx_config(directory: Path, port: int, upstream_ports: Sequence[int], fail_timeout: float = 1.0) -> str:
    """A reverse proxy on 127.0.0.1:`port` spreading requests round-robin, with no affinity, over the
    bridges on `upstream_ports`: streaming-friendly (HTTP/1.1 and keep-alive to the upstreams, nothing
    buffered, hour-long reads), and passing a request on to the next bridge only when it could not
    reach one (`proxy_next_upstream error timeout`, never a request a bridge may have acted on: no
    `non_idempotent`). Every path it writes is inside `directory`."""
    servers = "\n".join(
        f"        server 127.0.0.1:{p} max_fails=1 fail_timeout={fail_timeout:g}s;" for p in upstream_ports
    )
    return f"""# generated by tests/procs.py: start_nginx
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    client_body_temp_path {directory}/client_body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    log_format upstreams '{NGINX_LOG_FORMAT}';
    access_log {directory}/access.log upstreams;
    client_max_body_size 64m;
    upstream bridges {{
        zone bridges 64k;
{servers}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://bridges;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
            proxy_cache off;
            proxy_connect_timeout 5s;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            proxy_next_upstream error timeout;
        }}
    }}
}}
"""


def start_nginx(upstream_ports: Sequence[int], port: int | None = None, fail_timeout: float = 1.0) -> Proc:
    """nginx in front of `upstream_ports` (see `nginx_config`), as an unprivileged child process:
    `daemon off`, its own prefix directory (config, pid, logs, temp files: `.extra["dir"]`, which the
    caller removes), run as `nobody` when this process is root. `.stop()` ends it by pid (SIGTERM: a
    fast shutdown, the workers with it)."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed; `make test` installs it with apt")
    port = port or free_port()
    directory = Path(tempfile.mkdtemp(prefix="nginx-")).resolve()
    conf = directory / "nginx.conf"
    conf.write_text(nginx_config(directory, port, upstream_ports, fail_timeout), encoding="utf-8")
    log_fd, log_name = tempfile.mkstemp(prefix="nginx-", suffix=".log")
    as_user: dict[str, Any] = {}
    if os.geteuid() == 0:
        import pwd

        nobody = pwd.getpwnam("nobody")
        for path in (directory, conf):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        as_user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    args = [binary, "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")]
    popen = subprocess.Popen(
        [*args, "-g", "daemon off;"],
        stdout=log_fd,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=directory,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        **as_user,
    )
    os.close(log_fd)
    proc = Proc(popen=popen, log_path=Path(log_name), port=port, extra={"dir": str(directory)})
    try:
        wait_for_port(port, popen)
    except BaseException:
        proc.stop()
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return proc
