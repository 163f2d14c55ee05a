"""The Helm chart (helm/dust-mcp-bridge), checked offline.

There is no helm binary and no cluster here (reference/infra.md section 4). What runs instead, with
the validators of .venv-tools: helm-python-sdk (Helm SDK v4) lints, schema-checks and renders the
chart through tests/deploy/render_chart.py; the rendered YAML then goes through yamllint,
kubernetes-validate --strict for Kubernetes 1.29, checkov's Kubernetes checks and, where installed,
promtool. The prometheus-operator kinds (ServiceMonitor, PrometheusRule) are not in
kubernetes-validate's schemas, so their structure is checked here in Python.

Three renders: the defaults plus only dust.apiKey and dust.workspaceId (as `--set`),
ci/full-values.yaml (everything on) and ci/existing-secret-values.yaml (credentials, Redis URL and
metrics key from Secrets made outside the chart, an external clamd).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "dust-mcp-bridge"
HELPER = Path(__file__).with_name("render_chart.py")
NAMESPACE = "dust-mcp-bridge"  # not `default`: checkov's CKV_K8S_21 refuses the default namespace
RELEASE = "bridge"
FULLNAME = f"{RELEASE}-dust-mcp-bridge"
MINIMAL = ["--set", "dust.apiKey=sk-test-key", "--set", "dust.workspaceId=abc123XYZ"]
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}

ALERTS = {
    "DustMcpBridgeHighErrorRate",
    "DustMcpBridgeHighLatencyP99",
    "DustMcpBridgeHighCPU",
    "DustMcpBridgeHighMemory",
    "DustMcpBridgeReadinessFlapping",
    "DustMcpBridgeScannerDown",
    "DustMcpBridgeDustUnavailable",
    "DustMcpBridgeStoreUnavailable",
}
RUNBOOKS = "https://github.com/dust-mcp-bridge/dust-mcp-bridge/blob/main/docs/operations.md"
# The metrics the bridge exports (histograms also as _bucket, _sum, _count).
COUNTERS_AND_GAUGES = {
    "bridge_http_requests_total",
    "bridge_tool_calls_total",
    "bridge_active_streams",
    "bridge_mcp_sessions_active",
    "bridge_heartbeats_total",
    "bridge_cancellations_total",
    "bridge_stream_reconnects_total",
    "bridge_dust_requests_total",
    "bridge_uploads_total",
    "bridge_scanned_bytes_total",
    "bridge_dependency_up",
}
HISTOGRAMS = {
    "bridge_request_duration_seconds",
    "bridge_answer_first_chunk_seconds",
    "bridge_answer_duration_seconds",
    "bridge_store_operation_duration_seconds",
    "bridge_scan_duration_seconds",
    "bridge_dust_request_duration_seconds",
}
KNOWN_METRICS = COUNTERS_AND_GAUGES | {
    f"{h}{s}" for h in HISTOGRAMS for s in ("", "_bucket", "_sum", "_count")
}

# Values whose content is free-form Kubernetes (or label) structure: documented as a whole.
FREE_FORM = {
    "resources",
    "podSecurityContext",
    "securityContext",
    "strategy",
    "autoscaling.behavior",
    "ingress.annotations",
    "grafanaDashboard.labels",
    "clamav.sidecar.clamd.resources",
    "clamav.sidecar.freshclam.resources",
}


# --- Rendering -------------------------------------------------------------------------------------


@dataclass
class Render:
    returncode: int
    stderr: str
    yaml_path: Path
    documents: list[dict[str, Any]]
    notes: str
    defaults: dict[str, Any]

    def kind(self, kind: str, name: str | None = None) -> list[dict[str, Any]]:
        return [
            d for d in self.documents if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
        ]

    def one(self, kind: str, name: str = FULLNAME) -> dict[str, Any]:
        found = self.kind(kind, name)
        assert len(found) == 1, (
            f"expected one {kind} {name}, got {[d['metadata']['name'] for d in self.kind(kind)]}"
        )
        return found[0]


def render(tool: Callable[[str], str], out: Path, *args: str, chart: Path = CHART) -> Render:
    result = subprocess.run(
        [
            tool("python"),
            str(HELPER),
            str(chart),
            str(out),
            "--namespace",
            NAMESPACE,
            "--name",
            RELEASE,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    summary_file = out.with_name(out.name + ".json")
    summary = json.loads(summary_file.read_text()) if result.returncode == 0 and summary_file.exists() else {}
    return Render(
        result.returncode,
        result.stderr,
        out,
        summary.get("documents", []),
        summary.get("notes", ""),
        summary.get("defaults", {}),
    )


@pytest.fixture(scope="module")
def renders(tool: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Render]:
    out = tmp_path_factory.mktemp("helm")
    cases = {
        "default": MINIMAL,
        "full": ["-f", str(CHART / "ci" / "full-values.yaml")],
        "existing-secret": ["-f", str(CHART / "ci" / "existing-secret-values.yaml")],
    }
    done = {name: render(tool, out / f"{name}.yaml", *args) for name, args in cases.items()}
    for name, result in done.items():
        assert result.returncode == 0, f"{name} render failed: {result.stderr}"
    return done


@pytest.fixture(scope="module")
def default(renders: dict[str, Render]) -> Render:
    return renders["default"]


@pytest.fixture(scope="module")
def full(renders: dict[str, Render]) -> Render:
    return renders["full"]


@pytest.fixture(scope="module")
def existing(renders: dict[str, Render]) -> Render:
    return renders["existing-secret"]


def containers(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}


def env_example_names() -> set[str]:
    text = (REPO / ".env.example").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)=", text, re.MULTILINE))


# --- Chart metadata and lint -------------------------------------------------------------------------


def test_chart_yaml_declares_api_v2_and_version_0_1_0(default: Render) -> None:
    text = (CHART / "Chart.yaml").read_text(encoding="utf-8")
    assert re.search(r"^apiVersion: v2$", text, re.MULTILINE)
    assert re.search(r"^name: dust-mcp-bridge$", text, re.MULTILINE)
    assert re.search(r"^version: 0\.1\.0$", text, re.MULTILINE)
    assert re.search(r'^appVersion: "0\.1\.0"$', text, re.MULTILINE)
    assert default.documents[0]["metadata"]["labels"]["helm.sh/chart"] == "dust-mcp-bridge-0.1.0"


def test_helm_lint_strict_is_clean_with_the_chart_defaults(
    tool: Callable[[str], str], tmp_path: Path
) -> None:
    """`helm lint --strict` of the chart as shipped (no values given): no error and no warning."""
    result = render(tool, tmp_path / "lint.yaml", "--lint-only")
    assert result.returncode == 0, result.stderr


def test_helm_lint_reports_a_broken_template(tool: Callable[[str], str], tmp_path: Path) -> None:
    """The lint gate is live: a template with an unterminated action fails it (exit 1)."""
    copy = tmp_path / "dust-mcp-bridge"
    shutil.copytree(CHART, copy)
    service = copy / "templates" / "service.yaml"
    service.write_text(
        service.read_text(encoding="utf-8").replace("{{ .Values.service.type }}", "{{ .Values.service.type ")
    )
    result = render(tool, tmp_path / "broken.yaml", *MINIMAL, chart=copy)
    assert result.returncode == 1, result.stderr
    assert "lint:" in result.stderr and "service.yaml" in result.stderr


# --- values.schema.json --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("replicaCount=two", "/replicaCount"),
        ("replicaCount=0", "/replicaCount"),
        ("image.tag=1", "/image/tag"),
        ("config.shutdownGraceSeconds=3601", "/config/shutdownGraceSeconds"),
        ("config.logLevel=LOUD", "/config/logLevel"),
        ("config.scanMode=sometimes", "/config/scanMode"),
        ("clamav.url=http://clamd:3310", "/clamav/url"),
        ("replicas=3", "replicas"),  # a typo of replicaCount: unknown keys are refused
        ("workers=0", "/workers"),
        ("workers=257", "/workers"),
        ("workers=many", "/workers"),
        ("workers=0300", "/workers"),
        ("config.redisMaxConnections=0", "/config/redisMaxConnections"),
        ("config.redisPoolTimeoutSeconds=61", "/config/redisPoolTimeoutSeconds"),
    ],
)
def test_schema_rejects_a_bad_value(
    tool: Callable[[str], str], tmp_path: Path, setting: str, complaint: str
) -> None:
    result = render(tool, tmp_path / "bad.yaml", *MINIMAL, "--set", setting)
    assert result.returncode == 2, f"{setting} was not refused by the schema: {result.stderr}"
    assert result.stderr.startswith("schema:") and complaint in result.stderr, result.stderr


def test_schema_rejects_a_bad_values_file(tool: Callable[[str], str], tmp_path: Path) -> None:
    """A values file with three mistakes: each is named."""
    bad = tmp_path / "bad-values.yaml"
    bad.write_text(
        "dust: {apiKey: sk-x, workspaceId: abc123}\n"
        'replicaCount: "two"\n'
        "config: {shutdownGraceSeconds: -1}\n"
        "networkPolicy: {enable: true}\n"
    )
    result = render(tool, tmp_path / "out.yaml", "-f", str(bad))
    assert result.returncode == 2, result.stderr
    for complaint in ("/replicaCount", "/config/shutdownGraceSeconds", "enable"):
        assert complaint in result.stderr, result.stderr


def test_schema_is_draft_07_and_describes_every_value(default: Render) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    missing = []
    for path in leaf_paths(default.defaults):
        node = schema
        for part in path.split("."):
            props = node.get("properties", {})
            if part not in props:
                missing.append(path)
                break
            node = props[part]
        else:
            if "type" not in node:
                missing.append(f"{path} (no type)")
    assert not missing, f"values without a typed schema entry: {missing}"
    config = schema["properties"]["config"]["properties"]
    replicas = schema["properties"]["replicaCount"]
    assert (replicas["type"], replicas["minimum"]) == ("integer", 1)
    assert (config["shutdownGraceSeconds"]["minimum"], config["shutdownGraceSeconds"]["maximum"]) == (0, 3600)
    assert config["scanMode"]["enum"] == ["required", "off"]
    assert set(config["logLevel"]["enum"]) == {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


def leaf_paths(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Every value of values.yaml as a dotted path, stopping at free-form maps and at lists."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in FREE_FORM:
            yield from leaf_paths(value, f"{path}.")
        else:
            yield path


def test_readme_documents_every_value_and_the_redis_url_forms(default: Render) -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    paths = list(leaf_paths(default.defaults))
    assert len(paths) > 100
    undocumented = [path for path in paths if f"| `{path}` |" not in readme]
    assert not undocumented, f"README.md has no table row for {undocumented}"
    for form in (
        "redis://",
        "rediss://",
        "unix://",
        "redis+sentinel://[:password@]host1:26379,host2:26379/service_name/db",
        "redis+cluster://host:port",
    ):
        assert f"`{form}" in readme, form
    assert "helm install" in readme and "1.2 GB" in readme
    # Sessions live in Redis: the chart asks for no affinity, and says so.
    assert "## Session affinity\n\nNone is needed" in readme


# --- Validators on the rendered YAML -------------------------------------------------------------------

YAMLLINT_CONFIG = (
    # relaxed, without line length; toYaml writes block sequences unindented under their key while the
    # templates indent them: both are valid YAML, so the sequence indentation style is not enforced.
    "{extends: relaxed, rules: {line-length: disable, indentation: {indent-sequences: whatever}}}"
)


def test_rendered_yaml_and_values_files_pass_yamllint(
    tool: Callable[[str], str], renders: dict[str, Render]
) -> None:
    files = [str(r.yaml_path) for r in renders.values()]
    files += [str(CHART / "values.yaml"), *map(str, sorted((CHART / "ci").glob("*.yaml")))]
    result = subprocess.run(
        [tool("yamllint"), "--strict", "-f", "parsable", "-d", YAMLLINT_CONFIG, *files],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def kubernetes_validate(tool: Callable[[str], str], *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("kubernetes-validate"), "--strict", "-k", "1.29", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_rendered_manifests_pass_kubernetes_validate_strict(
    tool: Callable[[str], str], renders: dict[str, Render], tmp_path: Path
) -> None:
    """Every document but the two prometheus-operator kinds (checked below) against the 1.29 schemas.
    kubernetes-validate only warns about a kind it has no schema for, so such a warning fails here."""
    files = []
    for name, result in renders.items():
        core = [d for d in result.documents if d["kind"] not in CRD_KINDS]
        assert len(core) >= 6
        path = tmp_path / f"{name}-core.json"
        # A JSON document per line is a YAML stream, and JSON keeps the values exactly as rendered.
        path.write_text("---\n".join(json.dumps(doc) + "\n" for doc in core))
        files.append(path)
    result = kubernetes_validate(tool, *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Couldn't find schema" not in result.stdout + result.stderr, result.stdout + result.stderr
    assert result.stdout.count(" passed for resource ") == sum(
        1 for r in renders.values() for d in r.documents if d["kind"] not in CRD_KINDS
    ), result.stdout


def test_kubernetes_validate_rejects_an_unknown_field(
    tool: Callable[[str], str], default: Render, tmp_path: Path
) -> None:
    """The gate above is live: the rendered Deployment with a misspelt field fails --strict."""
    deployment = json.loads(json.dumps(default.one("Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {
        "httpGet": {"path": "/readyz", "port": 8080}
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(deployment))
    result = kubernetes_validate(tool, path)
    assert result.returncode != 0 and "readinesProbe" in result.stdout + result.stderr, (
        result.stdout + result.stderr
    )


INSECURE_CONTROL = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "insecure-control", "namespace": NAMESPACE},
    "spec": {
        "containers": [{"name": "app", "image": "nginx:latest", "securityContext": {"privileged": True}}]
    },
}


def test_checkov_passes_with_only_the_justified_skips(
    tool: Callable[[str], str], renders: dict[str, Render], tmp_path: Path
) -> None:
    """One checkov run over the three renders plus an insecure control Pod: the control must fail
    (the gate is live), the chart's manifests must not, and the only skips are the two annotated
    with their reasons in deployment.yaml."""
    control = tmp_path / "control.json"
    control.write_text(json.dumps(INSECURE_CONTROL))
    files = [str(r.yaml_path) for r in renders.values()] + [str(control)]
    # JSON rather than --quiet --compact text: the same checks, but the skipped ones are listed too.
    command = [tool("checkov"), "--framework", "kubernetes", "--compact", "--skip-download", "-o", "json"]
    for path in files:
        command += ["-f", path]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=tmp_path, check=False)
    report = json.loads(result.stdout)
    failed = report["results"]["failed_checks"]
    chart_failures = [
        (c["check_id"], c["resource"], c["file_abs_path"])
        for c in failed
        if c["file_abs_path"] != str(control)
    ]
    assert not chart_failures, f"checkov findings in the chart: {chart_failures}"
    control_ids = {c["check_id"] for c in failed}
    assert {"CKV_K8S_16", "CKV_K8S_14"} <= control_ids, control_ids  # privileged, :latest image
    skipped = report["results"]["skipped_checks"]
    assert {c["check_id"] for c in skipped} == {"CKV_K8S_43", "CKV_K8S_35"}, skipped
    assert all(c["check_result"].get("suppress_comment", "").strip() for c in skipped)
    assert report["summary"]["passed"] > 250
    templates = "".join(p.read_text(encoding="utf-8") for p in (CHART / "templates").glob("*"))
    assert len(re.findall(r"checkov\.io/skip\d+: (CKV_K8S_\d+)=\S", templates)) == 2


# --- The default deployment ----------------------------------------------------------------------------


def test_default_render_is_the_secure_minimum(default: Render) -> None:
    kinds = sorted(d["kind"] for d in default.documents)
    # Two ConfigMaps: the bridge's settings and the ClamAV sidecar's (on by default: fail closed
    # needs a scanner, so an install scans and becomes Ready out of the box).
    assert kinds == [
        "ConfigMap",
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "Secret",
        "Service",
        "ServiceAccount",
    ]
    assert all(d["metadata"]["namespace"] == NAMESPACE for d in default.documents)
    service = default.one("Service")["spec"]
    assert service["type"] == "ClusterIP"
    assert service["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}
    ]
    account = default.one("ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    secret = default.one("Secret")
    assert secret["stringData"] == {"DUST_API_KEY": "sk-test-key", "DUST_WORKSPACE_ID": "abc123XYZ"}
    config = default.one("ConfigMap")["data"]
    assert "sk-test-key" not in json.dumps(config)
    assert config["BRIDGE_DEMO"] == "off"
    assert config["BRIDGE_LOG_FORMAT"] == "json"
    assert config["BRIDGE_UPLOAD_DIR"] == "/tmp/dust-mcp-bridge"
    assert config["BRIDGE_UPLOAD_MAX_BYTES"] == "52428800"  # not 5.24288e+07
    # Workers: automatic (one per CPU of the limit with Redis, and here there is none: one).
    assert config["BRIDGE_WORKERS"] == "auto"
    pool = ("BRIDGE_REDIS_MAX_CONNECTIONS", "BRIDGE_REDIS_IDLE_SECONDS", "BRIDGE_REDIS_POOL_TIMEOUT_SECONDS")
    assert [config[name] for name in pool] == ["128", "60", "2"]
    assert config["BRIDGE_SESSION_TTL_SECONDS"] == "1800"
    assert config["BRIDGE_ANSWER_DEADLINE_SECONDS"] == "45"
    hosts = config["BRIDGE_ALLOWED_HOSTS"].split(",")
    assert {FULLNAME, f"{FULLNAME}.{NAMESPACE}.svc", f"{FULLNAME}.{NAMESPACE}.svc.cluster.local:*"} <= set(
        hosts
    )
    assert config["CLAMD_URL"].startswith("unix://")
    assert "WARNING: uploads are scanned" not in default.notes and "auth.apiKeys is empty" in default.notes


def test_default_deployment_probes_runs_non_root_read_only_and_waits_pre_stop_plus_grace_plus_10(
    default: Render,
) -> None:
    deployment = default.one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    bridge = containers(deployment)["bridge"]
    assert list(containers(deployment)) == ["bridge", "clamd", "freshclam"]
    assert bridge["image"] == "ghcr.io/dust-mcp-bridge/dust-mcp-bridge:0.1.0"
    assert bridge["args"] == ["serve", "--host", "0.0.0.0", "--port", "8080"]
    assert bridge["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert bridge["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert bridge["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert bridge["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert set(bridge["resources"]) == {"requests", "limits"}
    assert set(bridge["resources"]["limits"]) == {"cpu", "memory"}
    security = bridge["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == FULLNAME
    # Kubernetes drops the pod's endpoint while it terminates: it keeps accepting for 5 s first.
    assert bridge["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "5"]}}}
    grace = int(default.one("ConfigMap")["data"]["BRIDGE_SHUTDOWN_GRACE_SECONDS"])
    assert grace == 30 and pod["terminationGracePeriodSeconds"] == 5 + grace + 10
    assert {"name": "tmp", "mountPath": "/tmp"} in bridge["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}} in pod["volumes"]
    assert bridge["envFrom"] == [{"configMapRef": {"name": FULLNAME}}, {"secretRef": {"name": FULLNAME}}]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/secret"])
    spread = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    assert set(spread) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert (
        spread["kubernetes.io/hostname"]["labelSelector"]["matchLabels"]
        == deployment["spec"]["selector"]["matchLabels"]
    )


def test_every_rendered_environment_name_is_one_of_env_example(renders: dict[str, Render]) -> None:
    names = env_example_names()
    assert len(names) > 40
    for name, result in renders.items():
        used = set(result.one("ConfigMap")["data"])
        for secret in result.kind("Secret"):
            used |= set(secret["stringData"])
        assert used - names == set(), f"{name}: not in .env.example: {used - names}"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ([], "a Dust API key is required: set dust.apiKey (and dust.workspaceId), or existingSecret"),
        (["--set", "dust.apiKey=sk-x"], "dust.workspaceId is required with dust.apiKey"),
        (
            [*MINIMAL, "--set", "existingSecret=creds"],
            "existingSecret replaces the chart's Secret",
        ),
        (
            [*MINIMAL, "--set", "ingress.enabled=true"],
            "ingress.enabled needs at least one entry in ingress.hosts",
        ),
        (
            [*MINIMAL, "--set", "config.principalHeader=X-Auth-Request-Email"],
            "config.principalHeader needs config.principalProxies",
        ),
        (
            [*MINIMAL, "--set", "config.principalProxies={10.0.0.0/8}"],
            "config.principalProxies has no effect without config.principalHeader",
        ),
        (
            [*MINIMAL, "--set", "workers=2"],
            "workers above 1 needs redis.url (or redis.existingSecret): the workers share sessions,"
            " conversations and limits through Redis; leave workers empty (auto: 1 without Redis)"
            " or set it to 1",
        ),
    ],
)
def test_render_stops_with_a_clear_message(
    tool: Callable[[str], str], tmp_path: Path, settings: list[str], message: str
) -> None:
    result = render(tool, tmp_path / "out.yaml", *settings)
    assert result.returncode == 3, result.stderr
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("settings", "lifecycle", "termination"),
    [
        (["--set", "preStopSleepSeconds=0"], None, 30 + 10),
        (
            ["--set", "lifecycle.preStop.exec.command={/app/drain-hook}"],
            {"preStop": {"exec": {"command": ["/app/drain-hook"]}}},
            5 + 30 + 10,
        ),
    ],
)
def test_the_pre_stop_sleep_can_be_turned_off_or_replaced_by_own_hooks(
    tool: Callable[[str], str],
    tmp_path: Path,
    settings: list[str],
    lifecycle: dict[str, Any] | None,
    termination: int,
) -> None:
    result = render(tool, tmp_path / "out.yaml", *MINIMAL, *settings)
    assert result.returncode == 0, result.stderr
    deployment = result.one("Deployment")
    assert containers(deployment)["bridge"].get("lifecycle") == lifecycle
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == termination


# --- Everything on ----------------------------------------------------------------------------------------


def test_full_values_render_every_optional_object(full: Render) -> None:
    kinds = sorted(d["kind"] for d in full.documents)
    assert kinds == sorted(
        ["ConfigMap"] * 3
        + ["Deployment", "HorizontalPodAutoscaler", "Ingress", "NetworkPolicy", "PodDisruptionBudget"]
        + ["PrometheusRule", "Secret", "Service", "ServiceAccount", "ServiceMonitor"]
    )
    ingress = full.one("Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [
        {"hosts": ["bridge.example.com"], "secretName": "bridge-example-com-tls"}
    ]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": FULLNAME, "port": {"name": "http"}}
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    hpa = full.one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert {
        (m["type"], m["containerResource"]["name"], m["containerResource"]["container"])
        for m in hpa["spec"]["metrics"]
    } == {("ContainerResource", "cpu", "bridge"), ("ContainerResource", "memory", "bridge")}
    assert "replicas" not in full.one("Deployment")["spec"]  # the HPA owns it
    assert full.one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    config = full.one("ConfigMap")["data"]
    assert "bridge.example.com" in config["BRIDGE_ALLOWED_HOSTS"].split(",")
    assert config["BRIDGE_SHOW_CHAIN_OF_THOUGHT"] == "true"  # extraEnv wins over config.showChainOfThought
    assert config["BRIDGE_PRINCIPAL_HEADER"] == "X-Auth-Request-Email"
    assert config["BRIDGE_PRINCIPAL_PROXIES"] == "10.0.0.0/8"
    assert config["BRIDGE_WORKERS"] == "2"
    assert config["BRIDGE_REDIS_MAX_CONNECTIONS"] == "64" and config["BRIDGE_REDIS_IDLE_SECONDS"] == "30"
    assert config["BRIDGE_REDIS_POOL_TIMEOUT_SECONDS"] == "1.5"
    assert containers(full.one("Deployment"))["bridge"]["resources"]["limits"] == {
        "cpu": "2",
        "memory": "640Mi",
    }
    # The Redis URL carries a password: Secret, not ConfigMap.
    assert "REDIS_URL" not in config
    secret = full.one("Secret")["stringData"]
    assert secret["REDIS_URL"].startswith("rediss://:ci-password@")
    assert set(secret) == {
        "DUST_API_KEY",
        "DUST_WORKSPACE_ID",
        "BRIDGE_API_KEYS",
        "BRIDGE_METRICS_KEY",
        "BRIDGE_STORE_ENCRYPTION_KEY",
        "REDIS_URL",
    }
    pod = full.one("Deployment")["spec"]["template"]["spec"]
    assert containers(full.one("Deployment"))["bridge"]["lifecycle"]["preStop"]["exec"]["command"] == [
        "sleep",
        "10",
    ]
    assert pod["terminationGracePeriodSeconds"] == 10 + 120 + 10
    assert config["BRIDGE_SHUTDOWN_GRACE_SECONDS"] == "120"


def test_clamav_sidecar_shares_a_socket_and_a_signature_volume(full: Render) -> None:
    deployment = full.one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    by_name = containers(deployment)
    assert list(by_name) == ["bridge", "clamd", "freshclam"]
    assert full.one("ConfigMap")["data"]["CLAMD_URL"] == "unix:///run/clamav/clamd.sock"
    mounts = {name: {m["name"]: m["mountPath"] for m in c["volumeMounts"]} for name, c in by_name.items()}
    assert mounts["bridge"]["clamav-socket"] == mounts["clamd"]["clamav-socket"] == "/run/clamav"
    assert mounts["clamd"]["clamav-db"] == mounts["freshclam"]["clamav-db"] == "/var/lib/clamav"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["clamav-db"] and "emptyDir" in volumes["clamav-socket"]
    for name in ("clamd", "freshclam"):
        container = by_name[name]
        assert re.fullmatch(r"clamav/clamav-debian:\d+\.\d+\.\d+", container["image"]), container["image"]
        assert set(container["resources"]) == {"requests", "limits"}
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert "livenessProbe" in container and "readinessProbe" in container
    assert by_name["clamd"]["resources"]["requests"]["memory"] == "1280Mi"
    assert [c["name"] for c in pod["initContainers"]] == ["clamav-seed"]
    clamd_conf = full.one("ConfigMap", f"{FULLNAME}-clamav")["data"]["clamd.conf"]
    assert "LocalSocket /run/clamav/clamd.sock" in clamd_conf and "TCPSocket" not in clamd_conf
    assert "StreamMaxLength 104857600" in clamd_conf  # follows config.uploadMaxBytes
    # Archive bombs are flagged, not passed as clean: limits alert, and MaxFileSize >= MaxScanSize
    # (a truncated member then always exhausts the scan budget), scan time below the bridge's timeout.
    conf = dict(line.strip().split(" ", 1) for line in clamd_conf.splitlines() if line.strip()[:1].isalpha())
    assert conf["AlertExceedsMax"] == "yes"
    assert int(conf["MaxFileSize"]) >= int(conf["MaxScanSize"]) >= int(conf["StreamMaxLength"])
    scan_timeout = int(full.one("ConfigMap")["data"]["BRIDGE_SCAN_TIMEOUT_SECONDS"])
    assert 0 < int(conf["MaxScanTime"]) < scan_timeout * 1000
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert {"checksum/config", "checksum/secret", "checksum/clamav"} <= set(annotations)


def test_network_policy_limits_ingress_to_8080_and_egress_to_dns_https_redis(
    full: Render, existing: Render
) -> None:
    policy = full.one("NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert [r["ports"] for r in policy["ingress"]] == [[{"port": "http", "protocol": "TCP"}]]
    assert len(policy["ingress"][0]["from"]) == 2
    ports = [{(p["port"], p["protocol"]) for p in rule["ports"]} for rule in policy["egress"]]
    assert ports == [{(53, "UDP"), (53, "TCP")}, {(443, "TCP")}, {(6380, "TCP")}]
    assert policy["egress"][1]["to"][0]["ipBlock"]["except"] == ["10.0.0.0/8", "169.254.169.254/32"]
    other = existing.one("NetworkPolicy")["spec"]
    other_ports = [{(p["port"], p["protocol"]) for p in rule["ports"]} for rule in other["egress"]]
    assert {(6379, "TCP"), (26379, "TCP")} in other_ports and {(3310, "TCP")} in other_ports


def test_existing_secret_variant_renders_no_secret_and_references_the_given_ones(existing: Render) -> None:
    assert existing.kind("Secret") == []
    deployment = existing.one("Deployment")
    bridge = containers(deployment)["bridge"]
    assert {"secretRef": {"name": "dust-mcp-bridge-credentials"}} in bridge["envFrom"]
    redis = next(e for e in bridge["env"] if e["name"] == "REDIS_URL")
    assert redis["valueFrom"]["secretKeyRef"] == {"name": "dust-mcp-bridge-redis", "key": "url"}
    assert "checksum/secret" not in deployment["spec"]["template"]["metadata"]["annotations"]
    assert deployment["spec"]["replicas"] == 3
    config = existing.one("ConfigMap")["data"]
    assert config["CLAMD_URL"] == "tcp://clamav.security.svc.cluster.local:3310"
    assert config["BRIDGE_WORKERS"] == "auto"
    assert "REDIS_URL" not in config
    endpoint = existing.one("ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["authorization"]["credentials"] == {
        "name": "dust-mcp-bridge-credentials",
        "key": "BRIDGE_METRICS_KEY",
    }


# --- prometheus-operator objects -------------------------------------------------------------------


def test_service_monitor_scrapes_metrics_of_the_service_with_the_metrics_key(full: Render) -> None:
    monitor = full.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = full.one("Service")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] == "http"
    assert endpoint["path"] == "/metrics" and endpoint["scheme"] == "http"
    assert re.fullmatch(r"\d+s", endpoint["interval"]) and re.fullmatch(r"\d+s", endpoint["scrapeTimeout"])
    credentials = endpoint["authorization"]["credentials"]
    assert endpoint["authorization"]["type"] == "Bearer"
    assert credentials == {"name": FULLNAME, "key": "BRIDGE_METRICS_KEY"}
    assert "BRIDGE_METRICS_KEY" in full.one("Secret", credentials["name"])["stringData"]


def rules(result: Render) -> list[dict[str, Any]]:
    rule = result.one("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == NAMESPACE
    groups = rule["spec"]["groups"]
    assert groups and all(set(g) == {"name", "rules"} and g["rules"] for g in groups)
    return [r for g in groups for r in g["rules"]]


PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL (or Grafana) expression selects: what is left once strings, label
    matchers, durations, grouping clauses, template variables, function calls and keywords are gone."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\$\{[^}]*\}|\$\w+", "", text)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        following = text[match.end() :].lstrip()[:1]
        if following == "(" or word in PROMQL_WORDS or re.fullmatch(r"\d+[eE]\d+", word):
            continue
        names.add(word)
    return names


def unknown_metrics(expr: str) -> set[str]:
    return {
        n for n in metric_names(expr) if n not in KNOWN_METRICS and not n.startswith(("process_", "kube_"))
    }


def test_metric_name_checker_finds_an_unknown_metric() -> None:
    """The two checks below are live: a made-up metric is reported, the real ones are not."""
    expr = (
        'sum by (le, route) (rate(bridge_request_duration_seconds_bucket{route!~"/mcp|x"}[5m]))'
        " / bridge_bogus_total"
    )
    assert metric_names(expr) == {"bridge_request_duration_seconds_bucket", "bridge_bogus_total"}
    assert unknown_metrics(expr) == {"bridge_bogus_total"}
    assert (
        unknown_metrics(
            "changes(kube_pod_status_ready[15m]) + rate(process_cpu_seconds_total[$__rate_interval])"
        )
        == set()
    )


def test_prometheus_rule_has_every_alert_with_labels_annotations_and_known_metrics(
    full: Render, existing: Render
) -> None:
    for result in (full, existing):
        alerts = rules(result)
        assert {a["alert"] for a in alerts} == ALERTS
        for alert in alerts:
            name = alert["alert"]
            assert alert["labels"]["severity"] in {"critical", "warning"}, name
            assert set(alert["annotations"]) >= {"summary", "description", "runbook_url"}, name
            assert alert["annotations"]["runbook_url"] == f"{RUNBOOKS}#{name.lower()}", name
            assert re.fullmatch(r"\d+[smh]", alert["for"]), name
            assert not unknown_metrics(alert["expr"]), (name, unknown_metrics(alert["expr"]))
            assert f'namespace="{NAMESPACE}"' in alert["expr"], name
    exprs = {a["alert"]: a["expr"] for a in rules(full)}
    assert 'dependency="scanner"} == 0' in exprs["DustMcpBridgeScannerDown"]
    assert 'dependency="dust"} == 0' in exprs["DustMcpBridgeDustUnavailable"]
    assert 'dependency="store"} == 0' in exprs["DustMcpBridgeStoreUnavailable"]
    # Against the whole pod's limits (full-values: two workers, limits.cpu "2", limits.memory 640Mi).
    assert "/ 2 > 0.9" in exprs["DustMcpBridgeHighCPU"]
    assert f"/ {640 * 1024 * 1024} > 0.9" in exprs["DustMcpBridgeHighMemory"]
    assert "changes(bridge_dependency_up" in exprs["DustMcpBridgeReadinessFlapping"]
    latency = " ".join(a["expr"] for a in rules(full) if a["alert"] == "DustMcpBridgeHighLatencyP99")
    assert "histogram_quantile(0.99" in latency and "bridge_answer_first_chunk_seconds_bucket" in latency
    assert 'route!~"/mcp|/sse|/messages|/v1/uploads"' in latency
    errors = " ".join(a["expr"] for a in rules(full) if a["alert"] == "DustMcpBridgeHighErrorRate")
    assert 'status=~"5.."' in errors and "bridge_tool_calls_total" in errors


def test_prometheus_rules_pass_promtool(full: Render, tmp_path: Path) -> None:
    """promtool (apt package `prometheus`, installed by `make test`) checks the PromQL and alert
    templates and replays two alerts on synthetic series."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: `make test` installs it (apt package prometheus)")
    rule_file = tmp_path / "rules.json"
    rule_file.write_text(json.dumps(full.one("PrometheusRule")["spec"]))
    check = subprocess.run(
        [promtool, "check", "rules", str(rule_file)], capture_output=True, text=True, timeout=30, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    series = f'namespace="{NAMESPACE}", job="{FULLNAME}", pod="p1"'
    inputs = {  # 10 of 100 /mcp requests a minute fail; the /readyz 503s must be left out
        f'bridge_http_requests_total{{{series}, route="/mcp", status="200"}}': "0+90x30",
        f'bridge_http_requests_total{{{series}, route="/mcp", status="502"}}': "0+10x30",
        f'bridge_http_requests_total{{{series}, route="/readyz", status="503"}}': "0+900x30",
        f'bridge_dependency_up{{{series}, dependency="scanner"}}': "1 1 0x28",
    }
    error_rate = {
        "exp_labels": {"severity": "critical", "signal": "http"},
        "exp_annotations": {
            "summary": "dust-mcp-bridge answers many requests with 5xx",
            "description": f"10% of the requests to {NAMESPACE}/{FULLNAME} ended in a 5xx over the last"
            " 5 minutes (threshold 0.05).",
            "runbook_url": f"{RUNBOOKS}#dustmcpbridgehigherrorrate",
        },
    }
    scanner_down = {
        "exp_labels": {"severity": "critical", "namespace": NAMESPACE, "job": FULLNAME, "pod": "p1"}
        | {"dependency": "scanner"},
        "exp_annotations": {
            "summary": "dust-mcp-bridge cannot reach clamd",
            "description": "Pod p1 cannot reach the virus scanner (CLAMD_URL): every upload is refused"
            " (scanner_unavailable) and the pod is not ready.",
            "runbook_url": f"{RUNBOOKS}#dustmcpbridgescannerdown",
        },
    }
    unit = {
        "rule_files": [str(rule_file)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": name, "values": values} for name, values in inputs.items()],
                "alert_rule_test": [
                    {
                        "eval_time": "20m",
                        "alertname": "DustMcpBridgeHighErrorRate",
                        "exp_alerts": [error_rate],
                    },
                    {
                        "eval_time": "20m",
                        "alertname": "DustMcpBridgeScannerDown",
                        "exp_alerts": [scanner_down],
                    },
                ],
            }
        ],
    }
    unit_file = tmp_path / "unit.json"
    unit_file.write_text(json.dumps(unit))
    test = subprocess.run(
        [promtool, "test", "rules", str(unit_file)], capture_output=True, text=True, timeout=30, check=False
    )
    assert test.returncode == 0, test.stdout + test.stderr


# --- Grafana dashboard -----------------------------------------------------------------------------------


def dashboard_exprs(dashboard: dict[str, Any]) -> dict[str, list[str]]:
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    return {p["title"]: [t["expr"] for t in p["targets"]] for p in panels}


def test_dashboard_json_covers_the_topics_and_queries_only_known_metrics() -> None:
    dashboard = json.loads((CHART / "dashboards" / "dust-mcp-bridge.json").read_text(encoding="utf-8"))
    exprs = dashboard_exprs(dashboard)
    every = [e for panel in exprs.values() for e in panel]
    for expr in every:
        assert not unknown_metrics(expr), (expr, unknown_metrics(expr))
    queried = set().union(*(metric_names(e) for e in every))
    expected = {
        "bridge_http_requests_total",
        "bridge_tool_calls_total",
        "bridge_answer_first_chunk_seconds_bucket",
        "bridge_answer_duration_seconds_bucket",
        "bridge_active_streams",
        "bridge_mcp_sessions_active",
        "bridge_dust_requests_total",
        "bridge_stream_reconnects_total",
        "bridge_heartbeats_total",
        "bridge_cancellations_total",
        "bridge_store_operation_duration_seconds_bucket",
        "bridge_dust_request_duration_seconds_bucket",
        "bridge_uploads_total",
        "bridge_scan_duration_seconds_bucket",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    }
    assert expected <= queried, expected - queried
    assert any("histogram_quantile(0.5," in e for e in every) and any(
        "histogram_quantile(0.99," in e for e in every
    )
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"datasource", "namespace"}
    assert dashboard["uid"] == "dust-mcp-bridge"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_configmap_carries_the_json_with_the_sidecar_label(full: Render) -> None:
    configmap = full.one("ConfigMap", f"{FULLNAME}-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "dashboards" / "dust-mcp-bridge.json").read_text(encoding="utf-8"))
    assert json.loads(configmap["data"]["dust-mcp-bridge.json"]) == shipped
