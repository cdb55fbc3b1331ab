"""The classroom kit: Binder's .binder/ files and the widget-state setting of `make lab`."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from test_environment import _split, environment_requirements

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / ".binder"
WIDGET_PLUGIN = "@jupyter-widgets/jupyterlab-manager:plugin"


def _pip_items(environment_text: str) -> list[str]:
    """The items of environment.yml's nested `pip:` list."""
    return re.findall(r"^      - (\S.*?)\s*$", environment_text, flags=re.MULTILINE)


def test_binder_environment_has_pyprojects_runtime_packages_and_a_cpu_torch():
    text = (BINDER / "environment.yml").read_text()
    runtime = dict(_split(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    conda = environment_requirements(text)
    assert conda == {name: spec for name, spec in runtime.items() if name != "torch"}
    pip = _pip_items(text)
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in pip
    torch_pins = [item for item in pip if item.startswith("torch")]
    ci_pin = re.search(r"TORCH=torch==([0-9.]+)", (ROOT / ".ci" / "run").read_text()).group(1)
    # the torch CI tests with, as its CPU-only build (+cpu: never the 6 GB CUDA one)
    assert torch_pins == [f"torch=={ci_pin}+cpu"]


def _override_written_by(text: str) -> dict:
    """The JSON that a shell line `echo '{...}' > .../overrides.json` writes."""
    found = re.search(r"echo '(\{.*\})' > \S*overrides\.json", text)
    assert found, "no echo '{...}' > .../overrides.json line"
    return json.loads(found.group(1))


def test_binder_and_make_lab_both_save_widget_state_with_the_notebook():
    post_build = (BINDER / "postBuild").read_text()
    assert os.access(BINDER / "postBuild", os.X_OK), "repo2docker runs postBuild only when it is executable"
    assert "pip install --no-deps -e ." in post_build
    expected = {WIDGET_PLUGIN: {"saveState": True}}
    assert _override_written_by(post_build) == expected
    makefile = (ROOT / "Makefile").read_text()
    state = re.search(r"^WIDGET_STATE := (.*)$", makefile, flags=re.MULTILINE).group(1)
    assert json.loads(state) == expected
    assert "echo '$(WIDGET_STATE)' > $(VENV)/share/jupyter/lab/settings/overrides.json" in makefile


def test_the_widget_setting_exists_in_the_installed_jupyterlab_manager():
    import sys

    schema = (Path(sys.prefix) / "share/jupyter/labextensions/@jupyter-widgets/jupyterlab-manager/schemas"
              / "@jupyter-widgets/jupyterlab-manager/plugin.json")
    if not schema.exists():
        pytest.skip("ipywidgets' JupyterLab extension is not installed in this environment")
    assert "saveState" in json.loads(schema.read_text())["properties"]
