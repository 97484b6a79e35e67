"""docker/Dockerfile and docker/multibox.def are checked here, where no Docker daemon runs: the base image's CUDA
matches the torch wheel's, the image installs through `make install` (one install path, no second dependency
list), and the entry point is the console script. `make test-all` also runs the install step itself
(docker/check_install.sh)."""

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import torch
from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(str(REPO / "docker" / "Dockerfile"))


def _instructions(parser: DockerfileParser, name: str) -> list[str]:
    return [item["value"] for item in parser.structure if item["instruction"] == name]


def test_base_image_cuda_matches_the_torch_wheel(dockerfile):
    assert torch.version.cuda, "the pinned torch is a CUDA build"
    for image in dockerfile.parent_images:
        match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-(base|runtime)-ubuntu\d+\.\d+", image)
        assert match, f"not an official CUDA runtime image: {image}"
        assert f"{match[1]}.{match[2]}" == torch.version.cuda


def test_image_installs_through_make_install(dockerfile):
    runs = _instructions(dockerfile, "RUN")
    installs = [run for run in runs if run.startswith("make install")]
    assert len(installs) == 1, runs
    assert "VENV=/opt/venv" in installs[0]
    assert not any("pip install" in run for run in runs), "a second dependency list would drift from pyproject.toml"
    # What that line makes pip do: plain pip, a regular (non-editable) install of the project and its extras.
    # A clean environment for the inner make: under `make test` MAKEFLAGS names the outer make's jobserver file
    # descriptors, which in a pytest-xdist worker are its channel to the controller; the inner make used them and
    # the worker died ("node down") in CI.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    quiet = {"cwd": REPO, "capture_output": True, "text": True, "check": True, "env": env, "stdin": subprocess.DEVNULL}
    dry = subprocess.run(["make", "-n", "-B", "install", "VENV=/opt/venv", "EDITABLE=", "EXTRAS="], **quiet).stdout
    assert "/opt/venv/bin/python -m pip install --quiet  '.'" in dry
    dev = subprocess.run(["make", "-n", "-B", "install"], **quiet).stdout
    assert ".venv/bin/python -m pip install --quiet -e '.[test]'" in dev
    for copy in _instructions(dockerfile, "COPY"):
        if not copy.startswith("--from"):
            *sources, _ = copy.split()
            assert all((REPO / source).exists() for source in sources), copy


def test_entrypoint_user_and_workdir(dockerfile):
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert _instructions(dockerfile, "ENTRYPOINT") == ['["multibox"]'] and "multibox" in scripts
    users = _instructions(dockerfile, "USER")
    assert users and users[-1] not in {"root", "0"}
    assert _instructions(dockerfile, "WORKDIR")[-1] == "/workspace"
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    apt_installs = [run for run in _instructions(dockerfile, "RUN") if "apt-get install" in run]
    assert requires == ">=3.11" and len(apt_installs) == 2 and all("python3.11" in run for run in apt_installs)


def test_apptainer_definition_wraps_the_same_image():
    definition = (REPO / "docker" / "multibox.def").read_text()
    assert re.search(r"^Bootstrap: docker-daemon$", definition, re.M)
    assert re.search(r"^From: multibox:latest$", definition, re.M)
    assert 'exec multibox "$@"' in definition
    readme = (REPO / "README.md").read_text()
    assert "docker build -f docker/Dockerfile -t multibox ." in readme
    assert "apptainer build multibox.sif docker/multibox.def" in readme
