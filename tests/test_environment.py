"""The environment files agree, and notebooks are committed clean."""

import tomllib

import nbformat
import pytest
import yaml

from xcross_lib.paths import NOTEBOOKS_DIR, REPO_ROOT

pytestmark = pytest.mark.unit


def test_environment_yml_lists_the_pyproject_pins():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip_section) - {"-e ."} == pins
    assert all("==" in p for p in pins), "every dependency is pinned"


def test_notebooks_are_committed_without_outputs():
    for path in NOTEBOOKS_DIR.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name


def test_pinned_versions_are_the_installed_ones():
    from importlib.metadata import version

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    for pin in project["dependencies"]:
        name, wanted = pin.split("==")
        assert version(name).split("+")[0] == wanted, name
