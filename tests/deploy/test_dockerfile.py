"""The container image, checked without a Docker engine: linters, the parsed Dockerfile, the build context.

No image is built here (there is no engine). Instead: hadolint and checkov on the file (and on a broken
copy, so a silent linter cannot pass), the instructions parsed into stages and checked one by one, the
`.dockerignore` rules evaluated with Docker's own matching semantics, and the builder stage replayed:
its COPY lines on exactly the files Docker would send, its `uv sync --locked` commands with the pinned uv.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.procs import REPO, bridge_env, free_port, running, start_bridge

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))

# --- a small Dockerfile parser ---------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, ENV, ...
    args: str  # everything after the keyword, continuation lines joined with a space
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction (ENTRYPOINT ["x"]), else None."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value)
        return value


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """The ENV values the stage sets (KEY=VALUE form; quotes removed as the shell would)."""
        values: dict[str, str] = {}
        for ins in self.all("ENV"):
            for word in shlex.split(ins.args):
                assert "=" in word, f"line {ins.line}: use ENV KEY=VALUE, not the legacy `ENV KEY VALUE`"
                key, _, value = word.partition("=")
                values[key] = value
        return values

    def labels(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for ins in self.all("LABEL"):
            for word in shlex.split(ins.args):
                key, _, value = word.partition("=")
                values[key] = value
        return values


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions grouped by stage; comment lines are dropped, inside continuations too (as Docker does)."""
    stages: list[Stage] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        continued = stripped.endswith("\\")
        pending.append(stripped[:-1].strip() if continued else stripped)
        if continued:
            continue
        keyword, _, args = " ".join(pending).partition(" ")
        pending = []
        ins = Instruction(keyword.upper(), args.strip(), start)
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        else:
            assert stages, f"line {start}: {ins.keyword} before the first FROM"
            stages[-1].instructions.append(ins)
    assert not pending, "the Dockerfile ends inside a line continuation"
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def runtime(stages: list[Stage]) -> Stage:
    """The final stage: the image that is shipped."""
    return stages[-1]


@pytest.fixture(scope="module")
def builder(stages: list[Stage]) -> Stage:
    return stages[0]


def run(
    args: list[str], timeout: float = 300, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd, env=env
    )


# --- linters ---------------------------------------------------------------------------------------


def test_hadolint_reports_nothing(tool: Callable[[str], str]) -> None:
    done = run([tool("hadolint"), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)])
    assert done.returncode == 0 and done.stdout.strip() == "", done.stdout + done.stderr


def test_hadolint_would_flag_the_unpinned_apt_package_without_its_justified_ignore(
    tool: Callable[[str], str], tmp_path: Path
) -> None:
    """The one inline ignore is necessary and the linter is live: drop it and DL3008 is reported."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    ignores = re.findall(r"^# hadolint ignore=(\S+)$", text, flags=re.MULTILINE)
    assert ignores == ["DL3008"], f"every inline ignore needs a reason comment and a test: {ignores}"
    broken = tmp_path / "Dockerfile"
    broken.write_text(text.replace("# hadolint ignore=DL3008\n", ""), encoding="utf-8")
    done = run([tool("hadolint"), "--no-color", str(broken)])
    assert done.returncode != 0 and "DL3008" in done.stdout, done.stdout + done.stderr


# --skip-download: checkov otherwise asks Prisma Cloud for guideline links (no network here).
CHECKOV_ARGS = ["--framework", "dockerfile", "--quiet", "--compact", "--skip-download"]


def checkov(tool: Callable[[str], str], path: Path) -> subprocess.CompletedProcess[str]:
    return run([tool("checkov"), *CHECKOV_ARGS, "-f", str(path)], cwd=path.parent)


def test_checkov_reports_no_failed_check(tool: Callable[[str], str]) -> None:
    done = checkov(tool, DOCKERFILE)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = r"Passed checks: [1-9]\d*, Failed checks: 0, Skipped checks: 0"
    assert re.search(summary, done.stdout), done.stdout


def test_checkov_would_flag_an_image_without_user_and_healthcheck(
    tool: Callable[[str], str], tmp_path: Path
) -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    kept: list[str] = []
    skipping = False
    for line in lines:
        # drop USER and the whole (continued) HEALTHCHECK instruction
        if line.startswith(("USER ", "HEALTHCHECK ")) or skipping:
            skipping = line.rstrip().endswith("\\")
            continue
        kept.append(line)
    broken = tmp_path / "Dockerfile"
    broken.write_text("".join(kept), encoding="utf-8")
    done = checkov(tool, broken)
    assert done.returncode != 0
    assert "CKV_DOCKER_2" in done.stdout and "CKV_DOCKER_3" in done.stdout, done.stdout


# --- the parsed file -------------------------------------------------------------------------------


def test_image_is_multi_stage_on_one_pinned_slim_python_base(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    bases = {stage.base for stage in stages}
    # Both stages on the same image: the venv's python is a symlink into the base interpreter.
    assert len(bases) == 1, bases
    (base,) = bases
    assert re.fullmatch(r"python:3\.1[12]\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    assert stages[0].name == "builder"


def test_from_lines_name_the_base_image_literally_for_dependabot() -> None:
    """Dependabot's docker updater reads only literal FROM images: no ARG may stand in for the base."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    froms = re.findall(r"^FROM\s+(.*)$", text, flags=re.MULTILINE | re.IGNORECASE)
    assert len(froms) >= 2 and not [f for f in froms if "$" in f], froms
    before_first_from = text[: text.upper().index("\nFROM ")]
    assert not re.search(r"^ARG\s", before_first_from, flags=re.MULTILINE | re.IGNORECASE)


def test_build_ca_bundle_defaults_to_none_and_reaches_only_the_builders_downloads(
    builder: Stage, runtime: Stage
) -> None:
    """BUILD_CA_BUNDLE (a CA file mounted for the build only) is empty by default and never baked in."""
    assert [i.args for i in builder.all("ARG")] == ['BUILD_CA_BUNDLE=""']
    export = (
        'if [ -n "$BUILD_CA_BUNDLE" ]; '
        'then export SSL_CERT_FILE="$BUILD_CA_BUNDLE" PIP_CERT="$BUILD_CA_BUNDLE"; fi'
    )
    runs = [i.args for i in builder.all("RUN")]
    assert runs and all(r.startswith(export + " && ") for r in runs), runs
    assert not runtime.all("ARG") and "BUILD_CA_BUNDLE" not in str(runtime.instructions)
    assert not {"SSL_CERT_FILE", "PIP_CERT"} & (builder.env().keys() | runtime.env().keys())


def builder_commands(builder: Stage) -> list[str]:
    """Every command of the builder's RUN lines, `&&` chains split."""
    return [c.strip() for ins in builder.all("RUN") for c in ins.args.split("&&")]


def test_builder_installs_uv_from_its_hashed_pin_and_nothing_but_the_lock(builder: Stage) -> None:
    """No resolution in the image build: uv from tools/uv.txt (hashes), the rest `uv sync --locked`."""
    commands = builder_commands(builder)
    pips = [c for c in commands if re.search(r"\bpip install\b", c)]
    assert len(pips) == 1, pips
    words = pips[0].split()
    assert words[0] == "/opt/uv/bin/pip", "uv goes into a venv of its own, not into /opt/venv"
    for flag in ("--require-hashes", "--no-cache-dir", "--no-deps", "--only-binary"):
        assert flag in words, pips[0]
    assert words[words.index("-r") + 1] == "tools/uv.txt"
    assert "python -m venv /opt/uv" in commands
    uvs = [c for c in commands if c.startswith("/opt/uv/bin/uv ")]
    assert [c.split()[1] for c in uvs] == ["sync", "sync"], uvs
    for cmd in uvs:
        assert {"--locked", "--no-dev"} <= set(cmd.split()), cmd
    # the dependencies first (a layer that only the lock invalidates), then the bridge as a wheel
    assert "--no-install-project" in uvs[0].split() and "--no-editable" in uvs[1].split()
    joined = " ".join(commands)
    for forbidden in ("uv lock", "uv add", "uv pip", "--upgrade", "--frozen", "pip wheel"):
        assert forbidden not in joined, forbidden
    env = builder.env()
    assert env["UV_PROJECT_ENVIRONMENT"] == "/opt/venv"
    assert env["UV_COMPILE_BYTECODE"] == "1", "the runtime root is read-only: .pyc files are made here"
    assert env["UV_NO_CACHE"] == "1" and env["PIP_NO_CACHE_DIR"] == "1"
    assert env["UV_PYTHON_DOWNLOADS"] == "never"
    # the base image's own interpreter, the one the runtime stage has too
    version = re.search(r"python:(3\.\d+)\.", builder.base)
    assert version and env["UV_PYTHON"] == f"/usr/local/bin/python{version.group(1)}"


def test_builder_copies_the_lock_before_the_sources(builder: Stage) -> None:
    """The dependency layer is rebuilt when uv.lock changes, not at every change of bridge/."""
    order = [(i.keyword, i.args) for i in builder.instructions if i.keyword in ("COPY", "RUN")]
    copies = [args.split()[:-1] for keyword, args in order if keyword == "COPY"]
    assert copies == [["tools/uv.txt"], ["pyproject.toml", "uv.lock"], ["README.md"], ["bridge"]], copies
    lock_copy = next(n for n, (k, a) in enumerate(order) if k == "COPY" and "uv.lock" in a)
    deps_sync = next(n for n, (k, a) in enumerate(order) if k == "RUN" and "--no-install-project" in a)
    bridge_copy = next(n for n, (k, a) in enumerate(order) if k == "COPY" and a.startswith("bridge"))
    assert lock_copy < deps_sync < bridge_copy


def test_runtime_stage_copies_only_the_venv_from_the_builder(runtime: Stage) -> None:
    copies = [i.args.split() for i in runtime.all("COPY")]
    assert copies == [["--from=builder", "/opt/venv", "/opt/venv"]], copies
    assert not runtime.all("ADD")
    assert runtime.env()["PATH"].startswith("/opt/venv/bin:")


def test_runtime_stage_installs_only_libmagic1_without_recommends_and_drops_apt_lists(runtime: Stage) -> None:
    apt_runs = [i.args for i in runtime.all("RUN") if "apt-get" in i.args]
    assert len(apt_runs) == 1, apt_runs
    (cmd,) = apt_runs
    install = re.search(r"apt-get install (.*?)(?:&&|$)", cmd)
    assert install, cmd
    words = install.group(1).split()
    assert "--no-install-recommends" in words and "-y" in words
    assert [w for w in words if not w.startswith("-")] == ["libmagic1"]
    update, install_at, cleanup = (cmd.index(s) for s in ("apt-get update", "apt-get install", "rm -rf"))
    assert update < install_at < cleanup and "rm -rf /var/lib/apt/lists/*" in cmd


def test_final_stage_runs_as_numeric_non_root_uid_10001(runtime: Stage) -> None:
    users = runtime.all("USER")
    assert users, "the final stage sets no USER: it would run as root"
    uid, _, gid = users[-1].args.partition(":")
    assert uid.isdigit() and int(uid) != 0, "USER must be numeric (runAsNonRoot can only verify a number)"
    assert uid == "10001" and gid in ("", "10001")
    # ...and that uid exists in the image, with the same gid, no home and no login shell.
    runs = " ".join(i.args for i in runtime.all("RUN"))
    assert re.search(r"groupadd [^&]*--gid 10001", runs)
    assert re.search(r"useradd [^&]*--uid 10001 --gid 10001 --no-create-home", runs)
    assert "--shell /usr/sbin/nologin" in runs
    # USER comes after every RUN: nothing runs as root once it is set... and nothing after it needs root.
    assert all(i.line < users[-1].line for i in runtime.all("RUN"))


def test_production_environment_is_set(runtime: Stage) -> None:
    env = runtime.env()
    expected = {
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "BRIDGE_DEMO": "off",
        "BRIDGE_LOG_FORMAT": "json",
        "BRIDGE_HOST": "0.0.0.0",
        "BRIDGE_PORT": "8080",
        "BRIDGE_UPLOAD_DIR": "/tmp/dust-mcp-bridge",
    }
    assert {k: env.get(k) for k in expected} == expected
    # No secret is baked into the image.
    assert not {k for k in env if k in ("DUST_API_KEY", "BRIDGE_API_KEYS", "BRIDGE_STORE_ENCRYPTION_KEY")}


def test_image_environment_is_valid_config_and_fails_closed_without_dust_credentials(
    runtime: Stage, tmp_path: Path
) -> None:
    """The image's ENV loads as settings with credentials, and BRIDGE_DEMO=off makes a missing key fatal."""
    probe = (
        "import json; from bridge.config import load_settings; s = load_settings(); "
        "print(json.dumps({'demo': s.demo_active, 'host': s.host, 'port': s.port, "
        "'log_format': s.log_format, 'upload_dir': s.upload_dir}))"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DUST_", "BRIDGE_", "REDIS_"))}
    image_env = {k: v for k, v in runtime.env().items() if k != "PATH"}
    creds = {"DUST_API_KEY": "sk-test-0123456789abcdef", "DUST_WORKSPACE_ID": "abc123XYZ"}
    # cwd=tmp_path: no .env file is read
    ok = run([sys.executable, "-c", probe], env={**base, **image_env, **creds}, cwd=tmp_path, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {
        "demo": False,
        "host": "0.0.0.0",
        "port": 8080,
        "log_format": "json",
        "upload_dir": "/tmp/dust-mcp-bridge",
    }
    missing = run([sys.executable, "-c", probe], env={**base, **image_env}, cwd=tmp_path, timeout=60)
    assert missing.returncode != 0
    assert "DUST_API_KEY is required when BRIDGE_DEMO=off" in missing.stderr


def test_writes_only_under_tmp_and_tmp_is_not_an_anonymous_volume(runtime: Stage) -> None:
    assert runtime.env()["BRIDGE_UPLOAD_DIR"].startswith("/tmp/")
    # Deliberate (see the Dockerfile header): /tmp is a tmpfs/emptyDir supplied at run time, not a VOLUME.
    assert not runtime.all("VOLUME")
    assert "--tmpfs /tmp" in DOCKERFILE.read_text(encoding="utf-8")


def test_exposes_8080_the_port_it_serves_on(runtime: Stage) -> None:
    assert [i.args for i in runtime.all("EXPOSE")] == ["8080"]
    (cmd,) = runtime.all("CMD")
    argv = cmd.exec_form() or []
    assert argv[argv.index("--port") + 1] == "8080" == runtime.env()["BRIDGE_PORT"]


def test_entrypoint_is_the_console_script_and_cmd_serves_on_all_interfaces(runtime: Stage) -> None:
    (entry,) = runtime.all("ENTRYPOINT")
    assert entry.exec_form() == ["dust-mcp-bridge"], "exec form, so the bridge is PID 1 and gets SIGTERM"
    assert PYPROJECT["project"]["scripts"]["dust-mcp-bridge"] == "bridge.cli:main"
    (cmd,) = runtime.all("CMD")
    # --workers without a count: BRIDGE_WORKERS decides, auto when unset (one per CPU with Redis).
    assert cmd.exec_form() == ["serve", "--host", "0.0.0.0", "--port", "8080", "--workers"]
    assert "BRIDGE_WORKERS" not in runtime.env()


def healthcheck_argv(runtime: Stage) -> list[str]:
    (check,) = runtime.all("HEALTHCHECK")
    options, _, command = check.args.partition(" CMD ")
    assert "--timeout=" in options, "a hung /healthz must not hang the check"
    argv = json.loads(command)
    assert isinstance(argv, list)
    return argv


def test_healthcheck_gets_healthz_with_the_venv_python_and_a_short_timeout(runtime: Stage) -> None:
    (check,) = runtime.all("HEALTHCHECK")
    timeout = re.search(r"--timeout=(\d+)s", check.args)
    assert timeout and int(timeout.group(1)) <= 10
    argv = healthcheck_argv(runtime)
    assert argv[0] == "/opt/venv/bin/python", "slim has no curl or wget"
    assert "http://127.0.0.1:8080/healthz" in argv[-1]
    assert re.search(r"timeout=\d", argv[-1]), "the GET itself needs a timeout below the check's"


def test_healthcheck_command_passes_against_a_live_bridge_and_fails_without_one(runtime: Stage) -> None:
    """The exact command of the HEALTHCHECK, run with this venv's python and the bridge's port."""
    argv = healthcheck_argv(runtime)

    def check(port: int) -> subprocess.CompletedProcess[str]:
        args = [sys.executable, *[a.replace("127.0.0.1:8080", f"127.0.0.1:{port}") for a in argv[1:]]]
        return run(args, timeout=30)

    with running(start_bridge(bridge_env(None))) as bridge:
        healthy = check(bridge.port)
    assert healthy.returncode == 0, healthy.stderr
    assert check(free_port()).returncode != 0


def test_oci_labels_match_the_project(runtime: Stage) -> None:
    labels = runtime.labels()
    project = PYPROJECT["project"]
    assert labels["org.opencontainers.image.title"] == project["name"]
    assert labels["org.opencontainers.image.version"] == project["version"]
    assert labels["org.opencontainers.image.licenses"] == project["license"]["text"]
    assert labels["org.opencontainers.image.description"] == project["description"]


# --- .dockerignore, with Docker's matching rules ------------------------------------------------------


@dataclass
class IgnorePattern:
    regex: re.Pattern[str]
    negated: bool
    text: str


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """moby/patternmatcher's translation: `**` spans directories, `*` and `?` stay within one."""
    out = ""
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if pattern[i + 1 : i + 2] == "*":
                i += 1
                if pattern[i + 1 : i + 2] == "/":
                    i += 1
                out += ".*" if i + 1 >= len(pattern) else "(.*/)?"
            else:
                out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(f"^{out}$")


def load_dockerignore(text: str) -> list[IgnorePattern]:
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        body = os.path.normpath(line[1:].strip() if negated else line).lstrip("/")
        patterns.append(IgnorePattern(_pattern_regex(body), negated, line))
    return patterns


def is_excluded(path: str, patterns: list[IgnorePattern]) -> bool:
    """Docker's rule: a pattern matches a path or any of its parent directories; the last match wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for pattern in patterns:
        if any(pattern.regex.match(c) for c in candidates):
            excluded = not pattern.negated
    return excluded


def context_files(patterns: list[IgnorePattern]) -> Iterator[str]:
    """The files Docker would send as the build context (directories with no possible re-include pruned)."""
    negations = [p.text[1:].strip().strip("/") for p in patterns if p.negated]
    for root, dirs, files in os.walk(REPO):
        rel_root = os.path.relpath(root, REPO)
        rel_root = "" if rel_root == "." else rel_root + "/"
        for d in list(dirs):
            rel = rel_root + d
            if is_excluded(rel, patterns) and not any(n == rel or n.startswith(rel + "/") for n in negations):
                dirs.remove(d)
        for f in files:
            rel = rel_root + f
            if not is_excluded(rel, patterns):
                yield rel


@pytest.fixture(scope="module")
def ignore_patterns() -> list[IgnorePattern]:
    return load_dockerignore(DOCKERIGNORE.read_text(encoding="utf-8"))


def test_dockerignore_matcher_follows_docker_semantics() -> None:
    """The matcher the next tests rely on: parent matches, `**`, negation, last match wins."""
    patterns = load_dockerignore("*\n!keep/\n**/__pycache__\n*.log\n!important.log\n")
    assert is_excluded("a.txt", patterns) and is_excluded("dir/x.py", patterns)
    assert not is_excluded("keep/x.py", patterns) and not is_excluded("keep/sub/y.py", patterns)
    assert is_excluded("keep/sub/__pycache__/y.pyc", patterns)
    assert is_excluded("debug.log", patterns) and not is_excluded("important.log", patterns)


@pytest.mark.parametrize(
    "path",
    [
        ".env",
        ".env.production",
        ".git/HEAD",
        ".git/config",
        ".github/workflows/ci.yml",
        ".venv/bin/python",
        ".venv-tools/bin/checkov",
        ".mypy_cache/3.11/bridge/app.data.json",
        ".ruff_cache/CACHEDIR.TAG",
        ".pytest_cache/v/cache/lastfailed",
        ".hypothesis/examples/x",
        "bridge/__pycache__/app.cpython-311.pyc",
        "bridge/simulator/__pycache__/app.cpython-311.pyc",
        "tests/test_app.py",
        "bench/upload.py",
        "docs/security.md",
        "helm/dust-mcp-bridge/Chart.yaml",
        "terraform/main.tf",
        "bridge.log",
        "bridge/debug.log",
        "dist/dust_mcp_bridge-0.1.0-py3-none-any.whl",
        ".venv-uv/bin/uv",
        "tools/requirements.txt",
        "tools/uv.in",
        "tools/lock.py",
        "tools/node/package.json",
    ],
)
def test_dockerignore_keeps_out_of_the_context(path: str, ignore_patterns: list[IgnorePattern]) -> None:
    assert is_excluded(path, ignore_patterns)


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "uv.lock",
        "tools/uv.txt",
        "README.md",
        "bridge/__init__.py",
        "bridge/cli.py",
        "bridge/simulator/app.py",
    ],
)
def test_dockerignore_keeps_what_the_wheel_is_built_from(
    path: str, ignore_patterns: list[IgnorePattern]
) -> None:
    assert not is_excluded(path, ignore_patterns)


def test_every_file_the_builder_copies_is_in_the_context(
    builder: Stage, ignore_patterns: list[IgnorePattern]
) -> None:
    sources = [w for i in builder.all("COPY") for w in i.args.split()[:-1] if not w.startswith("--")]
    assert sources, "the builder copies nothing from the context"
    sent = set(context_files(ignore_patterns))
    for src in sources:
        src = src.rstrip("/")
        assert src in sent or any(f.startswith(src + "/") for f in sent), f"{src} is not in the build context"
    # ...and every file of the package goes with it.
    package = {
        p.relative_to(REPO).as_posix()
        for p in (REPO / "bridge").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert package <= sent, sorted(package - sent)


def copy_into(ins: Instruction, sent: set[str], root: Path) -> None:
    """One COPY line of the builder, from the context files only, the way Docker copies them."""
    words = [w for w in ins.args.split() if not w.startswith("--")]
    *srcs, target = words
    for src in srcs:
        src = src.rstrip("/")
        into = root / target / Path(src).name if target.endswith("/") else root / target
        for rel in sorted(f for f in sent if f == src or f.startswith(src + "/")):
            out = into / Path(rel).relative_to(src) if rel != src else into
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, out)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_builder_stage_replayed_installs_the_locked_dependencies_and_the_bridge_wheel(
    builder: Stage, ignore_patterns: list[IgnorePattern], uv: str, tmp_path: Path
) -> None:
    """The builder stage without an engine: its COPY lines (context files only), then its uv commands.

    The uv is this checkout's .venv-uv (installed from tools/uv.txt, as the builder's is); the venv goes
    to a temporary directory instead of /opt/venv, and the local uv cache is used (the image keeps none).
    The pip step that installs uv is checked by the test above, not run.
    """
    pinned = re.search(r"^uv==(\S+)", (REPO / "tools" / "uv.txt").read_text(encoding="utf-8"), re.MULTILINE)
    version = run([uv, "--version"]).stdout.split()
    assert pinned and version[:2] == ["uv", pinned.group(1)], version
    sent = set(context_files(ignore_patterns))
    (workdir,) = [i.args for i in builder.all("WORKDIR")]
    root = tmp_path / "image" / workdir.lstrip("/")
    root.mkdir(parents=True)
    venv = tmp_path / "opt-venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    env |= {k: v for k, v in builder.env().items() if k.startswith("UV_") and k != "UV_NO_CACHE"}
    env |= {"UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON": sys._base_executable}
    ran = 0
    for ins in builder.instructions:
        if ins.keyword == "COPY":
            copy_into(ins, sent, root)
        elif ins.keyword == "RUN":
            for command in (c.strip() for c in ins.args.split("&&")):
                if command.startswith("/opt/uv/bin/uv "):
                    done = run([uv, *shlex.split(command)[1:]], cwd=root, env=env, timeout=600)
                    assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
                    ran += 1
    assert ran == 2
    assert (venv / "bin" / "dust-mcp-bridge").exists(), "no console script"
    probe = (
        "import json, bridge, importlib.metadata as md; "
        "d = md.distribution('dust-mcp-bridge'); "
        "print(json.dumps({'file': bridge.__file__, 'files': [str(f) for f in d.files or []], "
        "'installed': {x.metadata['Name']: x.version for x in md.distributions()}}))"
    )
    done = run([str(venv / "bin" / "python"), "-c", probe], cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    site = Path(info["file"]).parent.parent
    assert site.is_relative_to(venv), "the bridge must be imported from the venv (a wheel, not editable)"
    # every file of the package that went into the build (the snapshot, not the live tree, which others
    # may be editing meanwhile) is installed, and byte-compiled
    package = {p.relative_to(root).as_posix() for p in (root / "bridge").rglob("*") if p.is_file()}
    assert "bridge/simulator/app.py" in package
    assert package <= set(info["files"]), sorted(package - set(info["files"]))
    assert (site / "bridge" / "simulator" / "__pycache__").is_dir(), "not byte-compiled"
    assert not [f for f in info["files"] if f.startswith(("tests/", "bench/"))]
    # ...and every dependency at its uv.lock version, the dev extra left out
    lock = tomllib.loads((REPO / "uv.lock").read_text(encoding="utf-8"))
    # (a universal lock may hold two versions of a package, each for its own Pythons)
    locked: dict[str, set[str]] = {}
    for package in lock["package"]:
        if "registry" in package.get("source", {}):
            locked.setdefault(canonical(package["name"]), set()).add(package["version"])
    installed = {canonical(name): v for name, v in info["installed"].items()}
    assert installed.pop("dust-mcp-bridge") == PYPROJECT["project"]["version"]
    assert len(installed) >= len(PYPROJECT["project"]["dependencies"])
    moved = {n: (v, locked.get(n)) for n, v in installed.items() if v not in locked.get(n, set())}
    assert not moved, f"installed (version, uv.lock version): {moved}"
    assert not {"pytest", "pytest-asyncio", "mypy", "ruff", "hypothesis"} & installed.keys()
