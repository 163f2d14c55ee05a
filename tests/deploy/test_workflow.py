"""The GitHub Actions workflows, the Dependabot config and the pre-commit config, checked offline.

actionlint (with its shellcheck integration on every `run:` script) and yamllint on the files, and
on broken copies so a linter that checks nothing cannot pass; then the parsed YAML, for what the
project asks of its CI: least privilege, bounded runs, the same gates as `make test`.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.procs import REPO

WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"
LATEST_WORKFLOW = REPO / ".github" / "workflows" / "latest.yml"
DEPENDABOT = REPO / ".github" / "dependabot.yml"
PRECOMMIT = REPO / ".pre-commit-config.yaml"
MAKEFILE = (REPO / "Makefile").read_text(encoding="utf-8")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))

# The project's line length (ruff's in pyproject.toml); `on:` is a key GitHub requires, not a boolean.
YAMLLINT_CONFIG = "{extends: default, rules: {line-length: {max: 110}, truthy: {check-keys: false}}}"


def run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False, cwd=cwd)


def actionlint(tool: Callable[[str], str], path: Path) -> subprocess.CompletedProcess[str]:
    # An explicit -shellcheck: the integration must run, not be skipped because none is on PATH.
    return run(
        [tool("actionlint"), "-no-color", "-shellcheck", tool("shellcheck"), str(path)], cwd=path.parent
    )


TO_JSON = "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1], encoding='utf-8')), sys.stdout)"


def load_yaml(tool: Callable[[str], str], path: Path) -> Any:
    """Parsed with PyYAML from the tools venv (the project's own venv has no YAML library)."""
    done = run([tool("python"), "-c", TO_JSON, str(path)])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def load_workflow(tool: Callable[[str], str], path: Path) -> dict[str, Any]:
    data = load_yaml(tool, path)
    assert isinstance(data, dict)
    # YAML 1.1 reads the bare key `on` as true (JSON then says "true"); GitHub reads it as "on".
    if "true" in data:
        data["on"] = data.pop("true")
    return data


@pytest.fixture(scope="module")
def workflow(tool: Callable[[str], str]) -> dict[str, Any]:
    return load_workflow(tool, WORKFLOW)


@pytest.fixture(scope="module")
def latest_workflow(tool: Callable[[str], str]) -> dict[str, Any]:
    return load_workflow(tool, LATEST_WORKFLOW)


@pytest.fixture(scope="module", params=[WORKFLOW, LATEST_WORKFLOW], ids=lambda p: p.name)
def any_workflow(request: pytest.FixtureRequest, tool: Callable[[str], str]) -> dict[str, Any]:
    return load_workflow(tool, request.param)


def steps_of(job: dict[str, Any]) -> str:
    """Every `run:` script of a job, one after the other."""
    return "\n".join(str(step.get("run", "")) for step in job["steps"])


def make_target(name: str) -> str:
    """The recipe lines of a Makefile target."""
    match = re.search(rf"^{name}:.*\n((?:\t.*\n)+)", MAKEFILE, flags=re.MULTILINE)
    assert match, f"no `{name}` target in the Makefile"
    return match.group(1)


# --- linters ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [WORKFLOW, LATEST_WORKFLOW], ids=lambda p: p.name)
def test_actionlint_and_its_shellcheck_pass_on_the_workflow(tool: Callable[[str], str], path: Path) -> None:
    done = actionlint(tool, path)
    assert done.returncode == 0 and done.stdout.strip() == "", done.stdout + done.stderr


def test_actionlint_reports_a_broken_copy_of_the_workflow(tool: Callable[[str], str], tmp_path: Path) -> None:
    text = WORKFLOW.read_text(encoding="utf-8")
    broken = (
        text.replace("runs-on: ubuntu-latest", "runs-on: ubuntu-lates", 1)
        .replace("github.event_name", "github.event_nam", 1)
        .replace("run: make lint", "run: echo $HOME/lint; make lint", 1)
    )
    assert broken != text
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    path = tmp_path / ".github" / "workflows" / "ci.yml"
    path.write_text(broken, encoding="utf-8")
    done = actionlint(tool, path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "[runner-label]" in done.stdout, done.stdout  # unknown runner
    assert "[expression]" in done.stdout, done.stdout  # github.event_nam does not exist
    assert "SC2086" in done.stdout and "[shellcheck]" in done.stdout, done.stdout  # unquoted $HOME


@pytest.mark.parametrize("path", [WORKFLOW, LATEST_WORKFLOW, DEPENDABOT, PRECOMMIT], ids=lambda p: p.name)
def test_yamllint_is_clean(tool: Callable[[str], str], path: Path) -> None:
    done = run([tool("yamllint"), "--strict", "-f", "parsable", "-d", YAMLLINT_CONFIG, str(path)])
    assert done.returncode == 0, done.stdout + done.stderr


def test_yamllint_reports_a_broken_copy(tool: Callable[[str], str], tmp_path: Path) -> None:
    path = tmp_path / "ci.yml"
    path.write_text(WORKFLOW.read_text(encoding="utf-8").replace("    runs-on:", "     runs-on:", 1))
    done = run([tool("yamllint"), "--strict", "-f", "parsable", "-d", YAMLLINT_CONFIG, str(path)])
    assert done.returncode != 0 and "error" in done.stdout, done.stdout


# --- the parsed workflow -----------------------------------------------------------------------------


def test_runs_on_push_and_pull_request(workflow: dict[str, Any]) -> None:
    assert {"push", "pull_request"} <= set(workflow["on"])


def test_token_is_read_only_and_no_job_widens_it(any_workflow: dict[str, Any]) -> None:
    workflow = any_workflow
    assert workflow["permissions"] == {"contents": "read"}
    for name, job in workflow["jobs"].items():
        assert job.get("permissions") in (None, {"contents": "read"}), name
        for step in job["steps"]:
            if str(step.get("uses", "")).startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, f"{name}: token left in .git/config"


def test_superseded_runs_are_grouped_and_cancelled(any_workflow: dict[str, Any]) -> None:
    concurrency = any_workflow["concurrency"]
    assert "github.workflow" in concurrency["group"] and "github.ref" in concurrency["group"]
    assert "cancel-in-progress" in concurrency


def test_every_job_has_a_timeout(any_workflow: dict[str, Any]) -> None:
    for name, job in any_workflow["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int) and 0 < job["timeout-minutes"] <= 60, name


def test_every_action_is_pinned_to_a_major_version_or_a_commit(any_workflow: dict[str, Any]) -> None:
    jobs = any_workflow["jobs"].values()
    uses = [step["uses"] for job in jobs for step in job["steps"] if "uses" in step]
    assert uses
    for ref in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@(v\d+(\.\d+){0,2}|[0-9a-f]{40})", ref), ref


def test_python_packages_are_installed_only_through_the_make_targets(any_workflow: dict[str, Any]) -> None:
    """No job installs a Python package itself: the make targets install from the lock files only."""
    for name, job in any_workflow["jobs"].items():
        script = steps_of(job)
        assert not re.search(r"\b(pip|uv)\b[^\n]*\binstall\b", script), name
        assert not re.search(r"\buv (lock|sync|add)\b", script), name
        for step in job["steps"]:
            if str(step.get("uses", "")).startswith("actions/setup-python@"):
                # pip's cache would hold nothing the jobs install; uv's is restored instead (below)
                assert "cache" not in step.get("with", {}), name


def test_uv_cache_is_keyed_on_the_lock_files_and_fresh_check_has_none(workflow: dict[str, Any]) -> None:
    for name, job in workflow["jobs"].items():
        caches = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/cache@")]
        if name in ("fresh-check", "image"):
            assert not caches, f"{name}: starts from nothing on purpose"
            continue
        assert caches, f"{name}: no uv cache"
        (cache,) = caches
        assert cache["with"]["path"] == "~/.cache/uv"
        assert "hashFiles('uv.lock', 'tools/*.txt')" in cache["with"]["key"], name


def test_lint_job_runs_ruff_check_and_format_check(workflow: dict[str, Any]) -> None:
    script = steps_of(workflow["jobs"]["lint"])
    assert "make lint" in script
    recipe = make_target("lint")
    assert "ruff check" in recipe and "ruff format --check" in recipe


def test_typecheck_job_runs_mypy(workflow: dict[str, Any]) -> None:
    assert "make typecheck" in steps_of(workflow["jobs"]["typecheck"])
    assert "mypy" in make_target("typecheck")


def test_test_job_runs_make_test_on_ubuntu_latest(workflow: dict[str, Any]) -> None:
    job = workflow["jobs"]["test"]
    assert job["runs-on"] == "ubuntu-latest"
    assert re.search(r"^make test$", steps_of(job), flags=re.MULTILINE)
    assert any(str(s.get("uses", "")).startswith("actions/setup-python@") for s in job["steps"])
    # ...which is the same gate as .ci/run
    assert "make test" in (REPO / ".ci" / "run").read_text(encoding="utf-8")


def test_audit_job_runs_pip_audit_on_the_locked_dependencies_and_bandit(workflow: dict[str, Any]) -> None:
    assert re.search(r"^make audit$", steps_of(workflow["jobs"]["audit"]), flags=re.MULTILINE)
    recipe = make_target("audit")
    # pip-audit on uv.lock's runtime set, exported with hashes (the image's dependencies, no dev extra)
    assert re.search(r"\$\(UV\) export [^\n]*--frozen[^\n]*--no-emit-project", recipe), recipe
    assert "--extra" not in recipe
    assert re.search(r"pip-audit --strict --disable-pip --require-hashes -r ", recipe), recipe
    assert re.search(r"bandit -r bridge -ll$", recipe, flags=re.MULTILINE), recipe
    # the auditors themselves come from their own hashed lock, pinned in tools/audit.in
    assert "pip sync --quiet --require-hashes --python $(AUDIT)/bin/python tools/audit.txt" in recipe
    pins = (REPO / "tools" / "audit.in").read_text(encoding="utf-8")
    assert re.search(r"^pip-audit==\d+\.\d+\.\d+$", pins, flags=re.MULTILINE)
    assert re.search(r"^bandit==\d+\.\d+\.\d+$", pins, flags=re.MULTILINE)


def test_fresh_check_job_runs_make_fresh_check_on_a_bare_debian_with_the_readmes_prerequisites(
    workflow: dict[str, Any],
) -> None:
    job = workflow["jobs"]["fresh-check"]
    assert re.search(r"^make fresh-check$", steps_of(job), flags=re.MULTILINE)
    assert job["container"] == "debian:bookworm"
    # only what the README asks of a fresh machine, installed before the checkout that needs git
    first = job["steps"][0]["run"]
    (install,) = [line for line in first.splitlines() if "apt-get install" in line]
    assert install.split("--no-install-recommends")[1].split() == ["python3", "make", "git"]
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "fresh Debian/Ubuntu machine that has `python3` (3.11 or newer), `make`\nand `git`" in readme
    assert not any(str(s.get("uses", "")).startswith("actions/setup-python@") for s in job["steps"])
    recipe = make_target("fresh-check")
    # a clone of HEAD in a temporary directory
    assert 'fetch --quiet "$(CURDIR)" HEAD' in recipe and "mktemp -d" in recipe
    # both README commands, in the empty environment: make run until /healthz answers (then
    # stopped), make test
    assert re.search(r'setsid \$\(FRESH_ENV\) BRIDGE_PORT="\$\$port" make [^\n]*-C "\$\$tmp/src" run', recipe)
    assert "/healthz" in recipe and 'kill -TERM "-$$pid"' in recipe
    assert re.search(r'\$\(FRESH_ENV\) make --no-print-directory -C "\$\$tmp/src" test;', recipe)
    makes = re.findall(r"(\S+ )make --no-print-directory -C", recipe)
    assert makes == ['BRIDGE_PORT="$$port" ', "$(FRESH_ENV) ", "$(FRESH_ENV) "], makes


def test_fresh_check_environment_inherits_nothing_but_a_login_s_basics_and_the_network() -> None:
    """FRESH_ENV as the fresh-check recipe expands it, from a shell full of the bridge's settings."""
    probe = "fresh-env-probe: ; @tmp=/fresh; $(FRESH_ENV) env"
    inherited = {
        "PATH": "/opt/somewhere/bin:/usr/bin:/bin",
        "HOME": "/root",
        "DUST_API_KEY": "sk-fromthedevelopersshell",
        "DUST_WORKSPACE_ID": "ws1",
        "BRIDGE_DEMO": "off",
        "BRIDGE_ENV_FILE": "/somewhere/.env",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "CLAMD_URL": "tcp://127.0.0.1:3310",
        "VIRTUAL_ENV": "/somewhere/.venv",
        "UV_PYTHON": "3.13",
        "PIP_INDEX_URL": "https://mirror.example/simple",
        # how the machine reaches the network: kept
        "HTTPS_PROXY": "http://proxy.example:3128",
        "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
    }
    done = subprocess.run(
        ["make", "--no-print-directory", "--eval", probe, "fresh-env-probe"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
        env=inherited,
    )
    assert done.returncode == 0, done.stderr
    seen = dict(line.split("=", 1) for line in done.stdout.splitlines())
    assert seen == {
        "HOME": "/fresh/home",
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HTTPS_PROXY": "http://proxy.example:3128",
        "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
        "UV_CACHE_DIR": "/fresh/cache/uv",
        "PIP_CACHE_DIR": "/fresh/cache/pip",
        "npm_config_cache": "/fresh/cache/npm",
    }


def test_latest_workflow_runs_make_test_latest_weekly(latest_workflow: dict[str, Any]) -> None:
    triggers = latest_workflow["on"]
    (schedule,) = triggers["schedule"]
    _minute, _hour, day, month, weekday = schedule["cron"].split()
    assert day == month == "*" and weekday.isdigit(), "weekly"
    assert "workflow_dispatch" in triggers
    (job,) = latest_workflow["jobs"].values()
    assert re.search(r"^make test-latest$", steps_of(job), flags=re.MULTILINE)
    assert "moved.txt" in steps_of(job) and "GITHUB_STEP_SUMMARY" in steps_of(job)


def test_make_test_latest_upgrades_a_copy_of_the_lock_not_the_lock(workflow: dict[str, Any]) -> None:
    recipe = make_target("test-latest")
    assert 'cp pyproject.toml uv.lock "$$tmp/"' in recipe
    assert re.search(r'cd "\$\$tmp" && "\$\$uv" lock --quiet --upgrade', recipe), recipe
    assert "tools/lock.py diff uv.lock" in recipe
    # the same gate as make test, with the latest venv's tools
    gate = ("ruff check bridge tests bench", "ruff format --check bridge tests bench", "mypy", "pytest")
    for command in gate:
        assert re.search(rf"^\t\$\(LATEST\)/bin/{command}$", recipe, flags=re.MULTILINE), command


# --- the Makefile's installs: only from the lock files ------------------------------------------------


def recipe_lines() -> list[str]:
    """Every command line of every recipe (continuations joined)."""
    return [line for line in MAKEFILE.replace("\\\n", " ").splitlines() if line.startswith("\t")]


def test_make_installs_only_from_the_lock_files() -> None:
    lines = recipe_lines()
    installs = [line for line in lines if re.search(r"\b(pip install|UV\) sync|pip sync)\b", line)]
    assert installs
    bootstrap = make_target("uv-bootstrap")
    for line in installs:
        if line.rstrip().endswith("-r tools/uv.in"):
            # `make lock` without tools/uv.txt: the pinned version, unhashed, only to rebuild tools/uv.txt
            assert line in bootstrap.replace("\\\n", " ") and "--no-deps" in line, line
        elif "pip install" in line and "$(UV)" not in line and '"$$uv"' not in line:
            # otherwise pip only bootstraps uv, from its hashed pin
            assert "--require-hashes" in line and "-r tools/uv.txt" in line, line
        elif "pip sync" in line:
            assert "--require-hashes" in line, line
        elif "pip install" in line:
            # the one uv pip install: the bridge itself, editable, into the test-latest venv
            assert "--no-deps" in line and line.rstrip().endswith("-e ."), line
    syncs = [line for line in lines if re.search(r"\$\(UV\) sync\b", line)]
    assert len(syncs) == 2 and all("--locked" in line for line in syncs), syncs
    # `uv lock` writes a lock only in `make lock` and in test-latest's temporary copy
    locks = [line for line in lines if re.search(r"(\$\(UV\)|\"\$\$uv\") lock\b", line)]
    assert len(locks) == 3, locks
    for line in locks:
        assert "--check" in line or "$(UPGRADE_FLAG)" in line or 'cd "$$tmp"' in line, line


def test_install_targets_stop_on_a_stale_lock_with_the_make_lock_message() -> None:
    for target in ("$(STAMP)", "$(DEVSTAMP)", "$(TOOLSTAMP)"):
        assert "lock-check" in make_target(re.escape(target)), target
    recipe = make_target("lock-check")
    assert "$(UV) lock --check --offline" in recipe and "tools/lock.py check" in recipe
    assert "run \\`make lock\\`" in recipe


def test_make_lock_rewrites_every_lock_file() -> None:
    recipe = make_target("lock")
    for name in ("uv", "requirements", "audit"):
        assert f"\t$(call compile,{name})\n" in recipe, name
        assert (REPO / "tools" / f"{name}.in").exists() and (REPO / "tools" / f"{name}.txt").exists()
    compile_ = re.search(r"^define compile\n(.*?)^endef$", MAKEFILE, flags=re.MULTILINE | re.DOTALL)
    command = "$(UV) pip compile $(COMPILE) $(UPGRADE_FLAG) tools/$(1).in -o tools/$(1).txt"
    assert compile_ and command in compile_[1]
    assert "tools/lock.py build-constraints" in recipe and "$(UV) lock --quiet" in recipe
    assert re.search(r"^COMPILE := [^\n]*--universal --generate-hashes", MAKEFILE, flags=re.MULTILINE)


def test_node_tools_target_is_kept() -> None:
    assert "npm ci" in make_target(re.escape("$(NODE_TOOLSTAMP)"))
    assert re.search(r"^node-tools: \$\(NODE_TOOLSTAMP\)$", MAKEFILE, flags=re.MULTILINE)


# --- Dependabot ----------------------------------------------------------------------------------------


def test_dependabot_proposes_updates_for_every_lock(tool: Callable[[str], str]) -> None:
    config = load_yaml(tool, DEPENDABOT)
    assert config["version"] == 2
    updates = {(u["package-ecosystem"], u["directory"]): u for u in config["updates"]}
    assert set(updates) == {
        ("uv", "/"),
        ("pip", "/tools"),
        ("npm", "/tools/node"),
        ("github-actions", "/"),
        ("docker", "/"),
    }
    for update in updates.values():
        assert update["schedule"]["interval"] in ("daily", "weekly")
    # ...and each directory holds what the ecosystem reads
    assert (REPO / "uv.lock").exists() and (REPO / "tools" / "node" / "package-lock.json").exists()
    assert (REPO / "tools" / "requirements.in").exists() and (REPO / "Dockerfile").exists()


# --- the pre-commit config ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def precommit(tool: Callable[[str], str]) -> dict[str, Any]:
    data = load_yaml(tool, PRECOMMIT)
    assert isinstance(data, dict) and isinstance(data["repos"], list)
    return data


def test_precommit_runs_ruff_check_with_fix_and_ruff_format(precommit: dict[str, Any]) -> None:
    (ruff,) = [r for r in precommit["repos"] if r["repo"] == "https://github.com/astral-sh/ruff-pre-commit"]
    hooks = {h["id"]: h for h in ruff["hooks"]}
    assert set(hooks) == {"ruff-check", "ruff-format"}
    assert hooks["ruff-check"]["args"] == ["--fix"]
    # a release tag inside the ruff range the dev extra allows
    (spec,) = [d for d in PYPROJECT["project"]["optional-dependencies"]["dev"] if d.startswith("ruff")]
    assert spec == "ruff>=0.9,<1", "update this test with the dev extra's ruff range"
    version = re.fullmatch(r"v0\.(\d+)\.(\d+)", ruff["rev"])
    assert version and int(version.group(1)) >= 9, ruff["rev"]


def test_precommit_runs_the_projects_mypy_on_the_strict_config(precommit: dict[str, Any]) -> None:
    (local,) = [r for r in precommit["repos"] if r["repo"] == "local"]
    (mypy,) = [h for h in local["hooks"] if h["id"] == "mypy"]
    assert mypy["language"] == "system"
    assert mypy["entry"] == ".venv/bin/mypy", "the venv `make` builds, with the pydantic plugin"
    assert mypy["pass_filenames"] is False, "[tool.mypy] packages decides what is checked"
    assert re.search(mypy["files"], "bridge/app.py") and re.search(mypy["files"], "pyproject.toml")
    assert not re.search(mypy["files"], "tests/test_app.py")
    assert PYPROJECT["tool"]["mypy"]["strict"] is True and PYPROJECT["tool"]["mypy"]["packages"] == ["bridge"]
    assert "$(BIN)/mypy" in make_target("typecheck"), "the hook and `make typecheck` run the same mypy"
