"""Session fixtures of the deployment tests: the pinned outside tools (helm, CRDs, the Compose
schema), installed on first use by tools.py, and the chart rendered with each values set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import tools
from tests.deploy.chart import VALUE_SETS, template
from tests.deploy.schemas import CrdValidator


@pytest.fixture(scope="session")
def helm() -> Path:
    return tools.helm()


@pytest.fixture(scope="session")
def rendered(helm: Path) -> dict[str, list[dict[str, Any]]]:
    """helm template's documents for the chart's defaults and each example values file."""
    return {name: template(helm, files) for name, files in VALUE_SETS.items()}


@pytest.fixture(scope="session")
def keda_crd() -> CrdValidator:
    return CrdValidator(tools.keda_scaledobject_crd())


@pytest.fixture(scope="session")
def servicemonitor_crd() -> CrdValidator:
    return CrdValidator(tools.servicemonitor_crd())


@pytest.fixture(scope="session")
def compose_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(tools.compose_spec().read_text())
    return schema
