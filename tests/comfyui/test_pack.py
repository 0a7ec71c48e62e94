# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""What ComfyUI's registry and ComfyUI-Manager read from the node pack (`comfyui/`), and the rule that only the pack
imports ComfyUI; no ComfyUI needed."""

import json
import re

import PIL.Image
import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

import diffusers_dit4sr
from diffusers_dit4sr.downloads import DIT4SR_FOLDER, SD3_FOLDER

from .server import REPOSITORY

PACK = REPOSITORY / "comfyui"


def test_registry_metadata_and_requirements_agree():
    project = tomllib.loads((PACK / "pyproject.toml").read_text())
    metadata = project["project"]
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9._-]*", metadata["name"]) and "comfyui" not in metadata["name"].lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+", metadata["version"])  # the registry's X.Y.Z
    assert metadata["license"] == {"text": "Apache-2.0"}
    assert metadata["urls"]["Repository"].startswith("https://")
    assert set(project["tool"]["comfy"]) >= {"PublisherId", "DisplayName", "Icon"}

    requirements = [line for line in (PACK / "requirements.txt").read_text().splitlines() if line.strip()]
    assert requirements == metadata["dependencies"]
    for requirement in map(Requirement, requirements):
        # ComfyUI-Manager will not change torch or transformers; loose lower bounds only.
        assert requirement.name not in ("torch", "transformers")
        assert all(spec.operator == ">=" for spec in requirement.specifier), requirement
    (library,) = [Requirement(line) for line in requirements if line.startswith("diffusers-dit4sr")]
    assert library.specifier.contains(Version(diffusers_dit4sr.__version__), prereleases=True)


def test_the_example_workflows_and_the_readme():
    workflow = json.loads((PACK / "example_workflows" / "dit4sr_upscale.json").read_text())
    api = json.loads((PACK / "example_workflows" / "api" / "dit4sr_upscale.json").read_text())
    assert sorted(node["type"] for node in workflow["nodes"]) == sorted(node["class_type"] for node in api.values())
    assert PIL.Image.open(PACK / "example_workflows" / "dit4sr_upscale.jpg").size[0] >= 600

    readme = (PACK / "README.md").read_text()
    for folder in (f"{SD3_FOLDER}/", f"{DIT4SR_FOLDER}/", "dit4sr_q/transformer/", "model_index.json"):
        assert folder in readme
    assert "requirements.txt" in readme and "custom_nodes" in readme


def test_only_the_node_pack_imports_comfyui():
    pattern = re.compile(r"^\s*(import|from)\s+(comfy|comfy_api|comfy_execution|folder_paths)\b", re.MULTILINE)
    offenders = [
        str(path.relative_to(REPOSITORY))
        for folder in ("src", "examples", "scripts", "benchmarks")
        for path in (REPOSITORY / folder).rglob("*.py")
        if pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
    assert pattern.search((PACK / "nodes.py").read_text())  # the pattern finds what it looks for
