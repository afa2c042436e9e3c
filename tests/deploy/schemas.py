"""Validating rendered manifests: Kubernetes' own kinds against the JSON schemas that
kubernetes-validate ships (strict: unknown fields are errors), custom resources against the
openAPIV3Schema of their CRD, made strict the same way (what ``kubectl --validate=strict`` and
the API server's strict field validation refuse)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

#: The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas.
K8S_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())


def strict(schema: Any) -> Any:
    """A copy of a structural schema in which objects refuse properties they do not declare,
    except where Kubernetes keeps unknown fields (x-kubernetes-preserve-unknown-fields)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


class CrdValidator:
    """Validates one custom resource kind against a CRD file, version by version."""

    def __init__(self, crd_path: Path) -> None:
        crd = yaml.safe_load(crd_path.read_text())
        spec = crd["spec"]
        self.group: str = spec["group"]
        self.kind: str = spec["names"]["kind"]
        self.versions: dict[str, jsonschema.protocols.Validator] = {}
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            schema = strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
            # metadata is checked by the API server's ObjectMeta, not by the CRD.
            schema.get("properties", {}).pop("metadata", None)
            schema["properties"]["metadata"] = {"type": "object"}
            self.versions[f"{self.group}/{version['name']}"] = jsonschema.Draft4Validator(schema)

    def errors(self, doc: dict[str, Any]) -> list[str]:
        validator = self.versions.get(doc.get("apiVersion", ""))
        if validator is None or doc.get("kind") != self.kind:
            return [f"{doc.get('apiVersion')}/{doc.get('kind')} is not served by this CRD"]
        return [
            f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(doc)
        ]


def builtin_errors(doc: dict[str, Any], k8s_version: str) -> list[str]:
    """Strict validation of a built-in kind against the schemas of one Kubernetes version."""
    try:
        kubernetes_validate.validate(doc, k8s_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(map(str, exc.path)) or "<root>"
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        return [f"{name} (Kubernetes {k8s_version}): {where}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [exc.message]
    return []
