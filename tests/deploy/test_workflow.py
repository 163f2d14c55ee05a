"""The GitHub Actions workflow and the pre-commit config, checked offline.

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


@pytest.fixture(scope="module")
def workflow(tool: Callable[[str], str]) -> dict[str, Any]:
    data = load_yaml(tool, WORKFLOW)
    assert isinstance(data, dict)
    # YAML 1.1 reads the bare key `on` as true (JSON then says "true"); GitHub reads it as "on".
    if "true" in data:
        data["on"] = data.pop("true")
    return data


def steps_of(job: dict[str, Any]) -> str:
    """Every `run:` script of a job, one after the other."""
    return "\n".join(str(step.get("run", "")) for step in job["steps"])


def make_target(name: str) -> str:
    """The recipe lines of a Makefile target."""
    match = re.search(rf"^{name}:.*\n((?:\t.*\n)+)", MAKEFILE, flags=re.MULTILINE)
    assert match, f"no `{name}` target in the Makefile"
    return match.group(1)


# --- linters ---------------------------------------------------------------------------------------


def test_actionlint_and_its_shellcheck_pass_on_the_workflow(tool: Callable[[str], str]) -> None:
    done = actionlint(tool, WORKFLOW)
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


@pytest.mark.parametrize("path", [WORKFLOW, PRECOMMIT], ids=lambda p: p.name)
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


def test_token_is_read_only_and_no_job_widens_it(workflow: dict[str, Any]) -> None:
    assert workflow["permissions"] == {"contents": "read"}
    for name, job in workflow["jobs"].items():
        assert job.get("permissions") in (None, {"contents": "read"}), name
        for step in job["steps"]:
            if str(step.get("uses", "")).startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, f"{name}: token left in .git/config"


def test_superseded_runs_are_grouped_and_cancelled(workflow: dict[str, Any]) -> None:
    concurrency = workflow["concurrency"]
    assert "github.workflow" in concurrency["group"] and "github.ref" in concurrency["group"]
    assert "cancel-in-progress" in concurrency


def test_every_job_has_a_timeout(workflow: dict[str, Any]) -> None:
    for name, job in workflow["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int) and 0 < job["timeout-minutes"] <= 60, name


def test_every_action_is_pinned_to_a_major_version_or_a_commit(workflow: dict[str, Any]) -> None:
    uses = [step["uses"] for job in workflow["jobs"].values() for step in job["steps"] if "uses" in step]
    assert uses
    for ref in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@(v\d+(\.\d+){0,2}|[0-9a-f]{40})", ref), ref


def test_setup_python_caches_pip(workflow: dict[str, Any]) -> None:
    for name, job in workflow["jobs"].items():
        for step in job["steps"]:
            if str(step.get("uses", "")).startswith("actions/setup-python@"):
                assert step["with"]["cache"] == "pip", name
                assert "pyproject.toml" in step["with"]["cache-dependency-path"], name


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


def test_audit_job_runs_pinned_pip_audit_and_bandit(workflow: dict[str, Any]) -> None:
    script = steps_of(workflow["jobs"]["audit"])
    assert re.search(r"pip install [^\n]*pip-audit==\d+\.\d+\.\d+", script)
    assert re.search(r"pip install [^\n]*bandit==\d+\.\d+\.\d+", script)
    # pip-audit looks at the venv the project is installed in, not at its own environment
    assert '"$RUNNER_TEMP/app/bin/pip" install --quiet -e .' in script
    assert re.search(r'PIPAPI_PYTHON_LOCATION="\$RUNNER_TEMP/app/bin/python"[\s\\]*pip-audit', script)
    assert re.search(r"^bandit -r bridge -ll$", script, flags=re.MULTILINE)


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
