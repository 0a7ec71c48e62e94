# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""The package's layout: a light import (no torch for the command line's options), lazy names, global logging left
alone, one source of the released settings, the entry points, and no import cycles."""

import ast
import dataclasses
import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

from diffusers_dit4sr import StableDiffusion3SRPipeline, UpscaleSettings
from diffusers_dit4sr.cli.options import build_parser
from diffusers_dit4sr.inference_defaults import INFERENCE_DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "diffusers_dit4sr"


def run_python(code: str) -> subprocess.CompletedProcess:
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    return completed


def test_the_options_module_and_help_do_not_import_torch():
    code = """
import contextlib, io, sys
import diffusers_dit4sr.cli.options as options
with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
    options.build_parser().parse_args(["--help"])
assert "usage: dit4sr-upscale" in out.getvalue()
with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
    options.build_parser().parse_args(["--version"])
assert out.getvalue().startswith("dit4sr-upscale ")
heavy = sorted(name for name in ("torch", "diffusers", "transformers", "PIL", "tqdm") if name in sys.modules)
print(",".join(heavy))
"""
    assert run_python(code).stdout.strip() == ""


@pytest.mark.parametrize("command", ["evaluate", "demo"])
def test_the_evaluate_and_demo_commands_help_imports_no_heavy_library(command):
    code = f"""
import contextlib, io, sys
from diffusers_dit4sr.cli import {command}
with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
    {command}.main(["--help"])
assert "usage: dit4sr-{command}" in out.getvalue()
print(",".join(sorted(name for name in ("torch", "pyiqa", "gradio", "PIL", "tqdm") if name in sys.modules)))
"""
    assert run_python(code).stdout.strip() == ""


def test_only_the_command_lines_know_argparse():
    for path in PACKAGE.rglob("*.py"):
        if "cli" not in path.relative_to(PACKAGE).parts:
            assert "argparse" not in local_imports(path) | third_party_imports(path), path


@pytest.mark.slow
def test_package_names_are_imported_on_first_use():
    code = """
import sys
import diffusers_dit4sr
assert "torch" not in sys.modules, "importing the package imported torch"
from diffusers_dit4sr import StableDiffusion3SRPipeline, DiT4SRTransformer2DModel, upscale_files
assert StableDiffusion3SRPipeline.__module__ == "diffusers_dit4sr.pipelines.pipeline_stable_diffusion_3_sr"
assert "diffusers_dit4sr.models.transformer_dit4sr" in sys.modules  # what model_index.json records
print(sorted(set(diffusers_dit4sr.__all__) - set(dir(diffusers_dit4sr))))
"""
    assert run_python(code).stdout.strip() == "[]"
    import diffusers_dit4sr

    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        diffusers_dit4sr.nothing  # noqa: B018


@pytest.mark.slow
def test_importing_the_package_leaves_global_logging_alone():
    code = """
import importlib.util, logging
import diffusers.utils.logging, transformers.utils.logging, huggingface_hub.utils.logging
for library in (diffusers.utils.logging, transformers.utils.logging, huggingface_hub.utils.logging):
    library.set_verbosity(logging.INFO)
logging.getLogger().setLevel(logging.DEBUG)
handlers = list(logging.getLogger().handlers)
import diffusers_dit4sr
from diffusers_dit4sr import StableDiffusion3SRPipeline, Captioner, upscale_files
import diffusers_dit4sr.cli.main, diffusers_dit4sr.runtime, diffusers_dit4sr.cli.demo
if importlib.util.find_spec("gradio") is not None:  # the `demo` extra
    import diffusers_dit4sr.demo
levels = [library.get_verbosity() for library in
          (diffusers.utils.logging, transformers.utils.logging, huggingface_hub.utils.logging)]
assert levels == [logging.INFO] * 3, levels
assert logging.getLogger().level == logging.DEBUG and logging.getLogger().handlers == handlers
"""
    run_python(code)


def test_the_released_settings_have_one_source():
    defaults = dataclasses.asdict(INFERENCE_DEFAULTS)
    signature = inspect.signature(StableDiffusion3SRPipeline.__call__).parameters
    assert {name: signature[name].default for name in defaults} == defaults
    assert (defaults["upscale"], defaults["num_inference_steps"], defaults["guidance_scale"]) == (4.0, 40, 8.0)

    args = build_parser().parse_args(["photo.png"])
    settings = UpscaleSettings()
    for option, parameter in {
        "scale": "upscale",
        "steps": "num_inference_steps",
        "guidance": "guidance_scale",
        "color_fix": "color_fix",
        "process_size": "process_size",
        "tile_size": "tile_size",
        "tile_overlap": "tile_overlap",
        "tile_batch_size": "tile_batch_size",
    }.items():
        assert getattr(args, option) == getattr(settings, option) == defaults[parameter], option


def test_the_docs_state_the_released_settings():
    """docs/cli.md's option table gives each upscaling option's default: the released one."""
    table = (ROOT / "docs" / "cli.md").read_text()
    for option, parameter in {
        "--scale": "upscale",
        "--steps": "num_inference_steps",
        "--guidance": "guidance_scale",
        "--color-fix": "color_fix",
        "--process-size": "process_size",
        "--tile-size": "tile_size",
        "--tile-overlap": "tile_overlap",
        "--tile-batch-size": "tile_batch_size",
    }.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| `{option}"))
        default = getattr(INFERENCE_DEFAULTS, parameter)
        assert re.search(
            rf"\|\s*`?{re.escape(f'{default:g}' if isinstance(default, float) else str(default))}`?\s*\|", row
        ), row


ENTRY_POINTS = dict(
    re.findall(
        r'^(\S+) = "(\S+)"$',
        (ROOT / "pyproject.toml").read_text().split("[project.scripts]")[1].split("\n[")[0],
        flags=re.MULTILINE,
    )
)


def test_the_entry_points_are_the_three_commands():
    assert set(ENTRY_POINTS) == {"dit4sr-upscale", "dit4sr-evaluate", "dit4sr-demo"}
    assert ENTRY_POINTS["dit4sr-upscale"] == "diffusers_dit4sr.cli.main:main"
    assert ENTRY_POINTS["dit4sr-demo"] == "diffusers_dit4sr.cli.demo:main"


@pytest.mark.parametrize("script", sorted(ENTRY_POINTS))
def test_entry_points_resolve(script):
    if script == "dit4sr-demo" and importlib.util.find_spec("gradio") is None:
        pytest.skip("the demo needs gradio (the `demo` extra), which is not installed")
    module, name = ENTRY_POINTS[script].split(":")
    assert callable(getattr(__import__(module, fromlist=[name]), name))


def test_dependency_floors_are_above_known_fixed_vulnerabilities():
    from packaging.requirements import Requirement
    from packaging.version import Version

    text = (ROOT / "pyproject.toml").read_text()
    dependencies = text.split("dependencies = [")[1].split("]")[0]
    eval_extra = re.search(r"^eval = \[(.*)\]$", text, flags=re.MULTILINE)[1]
    requirements = {
        requirement.name.lower(): requirement
        for requirement in map(Requirement, re.findall(r'"([^"]+)"', dependencies + eval_extra))
    }
    floors = {"torch": "2.6", "transformers": "4.48", "pillow": "10.3", "tqdm": "4.66.3", "setuptools": "78.1.1"}
    for name, fixed in floors.items():
        lowest = [Version(spec.version) for spec in requirements[name].specifier if spec.operator == ">="]
        assert lowest and min(lowest) >= Version(fixed), f"{requirements[name]} allows versions below {fixed}"


def local_imports(path: Path) -> set[str]:
    """The package modules `path` imports at module level (relative imports resolved)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if path.name == "__init__.py":
        package += ".__init__"
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: -node.level]
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("diffusers_dit4sr"):
            names.add(node.module)
    return names


def third_party_imports(path: Path) -> set[str]:
    """The top-level names of the modules `path` imports by absolute name, anywhere in it."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_module_imports_upward_or_in_a_cycle():
    modules = {
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): path
        for path in PACKAGE.rglob("*.py")
    }
    graph = {
        name: {imported for imported in local_imports(path) if imported in modules} for name, path in modules.items()
    }
    for name, imported in graph.items():
        package = name if modules[name].name == "__init__.py" else name.rsplit(".", 1)[0]
        for other in imported:
            # Upward: a module importing the package it is in (or one above), other than the package root's names.
            assert not (package.startswith(other + ".") or package == other) or other == "diffusers_dit4sr", (
                f"{name} imports {other}, a package above it"
            )

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        for other in graph[name]:
            if other != name:
                visit(other, (*path, name))

    for name in graph:
        if not name.endswith("__init__"):
            visit(name, ())


def test_no_source_module_is_over_700_lines_but_the_pipeline():
    long = {
        path.name: count
        for path in PACKAGE.rglob("*.py")
        if (count := len(path.read_text().splitlines())) > 700 and path.name != "pipeline_stable_diffusion_3_sr.py"
    }
    assert long == {}


@pytest.mark.slow
def test_importing_the_package_prints_nothing():
    """torchao, torch and Diffusers log on torchao's import (kernels that do not fit this torch): hidden, exactly."""
    code = """
import importlib.util
from diffusers_dit4sr import StableDiffusion3SRPipeline, DiT4SRTransformer2DModel, Captioner, upscale_files
import diffusers_dit4sr.runtime, diffusers_dit4sr.cli.main
if importlib.util.find_spec("gradio") is not None:  # the `demo` extra
    import diffusers_dit4sr.demo
"""
    completed = run_python(code)
    assert (completed.stdout, completed.stderr) == ("", "")


def test_only_the_import_noise_is_hidden():
    code = """
import logging, sys
import diffusers_dit4sr
logging.basicConfig(stream=sys.stdout, format="%(name)s: %(message)s")
logging.getLogger("torchao").warning("Failed to load /x/torchao/_C_mxfp8.so: Could not load this library")
logging.getLogger("torchao").warning("a real problem")
logging.getLogger("torch.utils._pytree").warning("another warning")
logging.getLogger("diffusers.quantizers.torchao.torchao_quantizer").warning("Unable to import `torchao` Tensor objects")
"""
    assert run_python(code).stdout.splitlines() == ["torchao: a real problem", "torch.utils._pytree: another warning"]


LICENCE_HEADER = "# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0."


def tracked_python_files() -> list[Path]:
    """Every `.py` file of the repository: git's list in a checkout, else the files under the source folders."""
    listed = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode == 0 and listed.stdout.strip():
        return [ROOT / name for name in listed.stdout.splitlines()]
    folders = ("src", "comfyui", "tests", "examples", "scripts", "benchmarks")
    return [path for folder in folders for path in (ROOT / folder).rglob("*.py")]


def test_every_python_file_starts_with_the_licence_header():
    files = tracked_python_files()
    assert len(files) > 100
    without = []
    for path in files:
        lines = path.read_text(encoding="utf-8").splitlines()[:2]
        if lines and lines[0].startswith("#!"):  # an executable script: the header follows the shebang
            lines = lines[1:]
        if not lines or lines[0] != LICENCE_HEADER:
            without.append(str(path.relative_to(ROOT)))
    assert without == []
