"""pyproject.toml, environment.yml and requirements.lock describe the same environment."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def name_of(requirement: str) -> str:
    """The normalised distribution name of a requirement string such as ``torch>=2.1``."""
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return {name_of(r): r.replace(" ", "") for r in reqs}


def conda_pip_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {name_of(r): r.replace(" ", "") for r in pip if not r.startswith("-")}


def locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name_of(name)] = version
    return pins


def test_environment_yml_lists_the_same_packages_as_pyproject() -> None:
    assert conda_pip_requirements() == pyproject_requirements()


def test_lock_pins_every_declared_package_exactly() -> None:
    pins = locked()
    missing = sorted(set(pyproject_requirements()) - set(pins))
    assert not missing, f"requirements.lock lacks {missing}"


def test_lock_pins_the_versions_the_book_was_executed_with() -> None:
    pins = locked()
    assert pins["torch"] == "2.13.0"
    assert pins["jupyter-book"] == "1.0.4.post1"
