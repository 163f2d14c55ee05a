"""Schema-check, lint and render the Helm chart offline (run it with .venv-tools/bin/python).

    render_chart.py CHART OUT [-f values.yaml ...] [--set key=value ...] [--namespace NS] [--name NAME]
                    [--lint-only]

Values files are merged in order (maps deeply, the later file winning), then each --set on top, as
`helm template -f ... --set ...` does. Exit status, with the reason on stderr:
  0  rendered: the manifests in OUT (one YAML stream with `# Source:` comments, NOTES.txt left out)
     and, in OUT.json, {"documents": [the manifests parsed], "notes": NOTES.txt rendered,
     "defaults": the chart's values.yaml}; with --lint-only nothing is written
  2  the values do not meet values.schema.json
  1  `helm lint --strict` reports an error or a warning
  3  a template failed (e.g. its `fail` or `required`)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import helm_python
import yaml


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge two values trees: maps merge, everything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("chart", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("-f", "--values", action="append", default=[], type=Path)
    parser.add_argument("--set", action="append", default=[], dest="sets")
    parser.add_argument("--namespace", default="dust-mcp-bridge")
    parser.add_argument("--name", default="bridge")
    parser.add_argument("--lint-only", action="store_true")
    args = parser.parse_args()

    helm_python.disable_logging()
    values: dict[str, Any] = {}
    for path in args.values:
        values = merge(values, helm_python.values_from_yaml(path.read_text(encoding="utf-8")))
    for expression in args.sets:
        values = merge(values, helm_python.parse_set_string(expression))

    with helm_python.Chart.load(str(args.chart)) as chart:
        try:
            chart.validate_schema(values)
        except helm_python.HelmError as exc:
            print(f"schema: {exc}", file=sys.stderr)
            return 2

        report = helm_python.lint(str(args.chart), values, strict=True, namespace=args.namespace)
        problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        if report.get("errors") or problems:
            for message in problems:
                print(f"lint: {message.get('path')}: {message.get('error')}", file=sys.stderr)
            for error in report.get("errors") or []:
                print(f"lint: {error}", file=sys.stderr)
            return 1
        if args.lint_only:
            return 0

        try:
            rendered = chart.render(values, name=args.name, namespace=args.namespace, is_install=True)
        except helm_python.HelmError as exc:
            print(f"render: {exc}", file=sys.stderr)
            return 3
        defaults = chart.values

    documents, notes = [], ""
    for source in sorted(rendered):
        text = rendered[source]
        if source.endswith("NOTES.txt"):
            notes = text
        elif text.strip():
            documents.append(f"---\n# Source: {source}\n{text.strip()}\n")
    stream = "".join(documents)
    args.out.write_text(stream, encoding="utf-8")
    parsed = [doc for doc in yaml.safe_load_all(stream) if doc is not None]
    summary = {"documents": parsed, "notes": notes, "defaults": defaults}
    Path(f"{args.out}.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
