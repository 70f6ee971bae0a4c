"""Static checks of docker/ (no Docker engine needed): compose services, healthchecks, volumes,
commands that the real CLI parser accepts, environment variables that the code reads and the
README documents, Dockerfiles that install the package like the README, and the nuclio function.

Where Docker Compose v2 or podman-compose 1.3+ is installed, its ``config`` validates the files as well;
the README's self-hosting section is checked against the files, tools/container_standins.sh and .ci/run.
tests/containers runs the images and the stack for real.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML not installed (pip install -e '.[test]')")

from dextr_backend.cli import build_parser  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
COMPOSE_CPU = DOCKER / "docker-compose.cpu.yml"
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERFILES = (DOCKER / "Dockerfile.cpu", DOCKER / "Dockerfile.gpu")
NUCLIO = DOCKER / "nuclio" / "dextr"
OURS = ("api", "worker", "trainer")  # services running dextr-backend
README = (REPO / "README.md").read_text(encoding="utf-8")
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


class Tagged:
    """A value carrying one of Compose's merge tags (``!reset``, ``!override``)."""

    def __init__(self, tag, value):
        self.tag, self.value = tag, value


class ComposeLoader(yaml.SafeLoader):
    pass


def _tagged(loader, node):
    if isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    return Tagged(node.tag, value)


for _tag in ("!reset", "!override"):
    ComposeLoader.add_constructor(_tag, _tagged)


def load(path: Path) -> dict:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=ComposeLoader)


@pytest.fixture(scope="module")
def compose() -> dict:
    return load(COMPOSE)


@pytest.fixture(scope="module")
def compose_cpu() -> dict:
    return load(COMPOSE_CPU)


def env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            out[name.strip()] = value.strip()
    return out


def settings_table() -> str:
    """README's ``## Settings`` section."""
    match = re.search(r"^## Settings\n(.*?)(?=^## )", README, flags=re.S | re.M)
    assert match, "README.md has no '## Settings' section"
    return match.group(1)


def source_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "dextr_backend").rglob("*.py"))


def reads(name: str, source: str) -> bool:
    """The code reads ``name``: it appears as a string literal (os.environ / env.get / a constant)."""
    return f'"{name}"' in source or f"'{name}'" in source


def parse_cli(argv: list[str]):
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse's way of saying no
        raise AssertionError(f"dextr-backend {shlex.join(argv)} is not a valid command line") from exc


# --------------------------------------------------------------------------- compose: structure
def test_services_present(compose):
    services = compose["services"]
    assert {"redis", "api", "worker", "trainer", "label-studio"} <= set(services)
    assert services["label-studio"]["profiles"] == ["label-studio"]
    for name in ("redis", *OURS):
        assert "profiles" not in services[name], f"{name} must start without a profile"
    assert services["label-studio"]["image"].startswith("heartexlabs/label-studio:")


def test_healthchecks(compose):
    services = compose["services"]
    for name in ("redis", *OURS, "label-studio"):
        check = services[name].get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    api_test = " ".join(services["api"]["healthcheck"]["test"])
    assert "/health" in api_test and "9090" in api_test
    for name in ("worker", "trainer"):
        assert "dextr:alive:" in " ".join(services[name]["healthcheck"]["test"])  # queue/worker.py's heartbeat
    for name in OURS:
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_volumes_declared_and_mounted(compose):
    declared = set(compose["volumes"])
    assert {"weights", "data"} <= declared
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0] if isinstance(mount, str) else mount["source"]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} mounts undeclared volume {source!r}"
    for name in OURS:
        service = compose["services"][name]
        assert "weights:/data/weights" in service["volumes"]
        assert service["environment"]["DEXTR_WEIGHTS_DIR"] == "/data/weights"
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"


def test_gpu_reservation(compose):
    for name in ("worker", "trainer"):
        devices = compose["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices and devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "deploy" not in compose["services"]["api"]  # the API only queues work


def test_images_and_builds(compose):
    for name in OURS:
        service = compose["services"][name]
        assert service["image"] == "dextr-backend:gpu"
        assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == (
            DOCKER / "Dockerfile.gpu"
        ).resolve()


def test_label_studio_is_prewired(compose):
    ls = compose["services"]["label-studio"]
    env = ls["environment"]
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert "LABEL_STUDIO_USER_TOKEN" in env
    assert env["ML_BLOCK_LOCAL_IP"] == "false" and env["SSRF_PROTECTION_ENABLED"] == "false"
    assert any(str(m).endswith(":/label-studio/data") for m in ls["volumes"])
    api_env = compose["services"]["api"]["environment"]
    assert "http://label-studio:8080" in api_env["LABEL_STUDIO_URL"]
    assert "LABEL_STUDIO_USER_TOKEN" in api_env["LABEL_STUDIO_API_KEY"]  # the same token by default
    assert env_example()["LABEL_STUDIO_URL"] == "http://label-studio:8080"


# --------------------------------------------------------------------------- compose: commands
def test_commands_are_real_cli_commands(compose):
    expected = {"api": ("serve", None), "worker": ("worker", "dextr-predict"), "trainer": ("worker", "dextr-train")}
    for name, (command, queues) in expected.items():
        argv = compose["services"][name]["command"]
        assert isinstance(argv, list), f"{name}: use the exec form so no shell reparses the command"
        args = parse_cli(argv)
        assert args.command == command
        if queues:
            assert args.queues == queues
    assert parse_cli(compose["services"]["api"]["command"]).port == 9090


def test_dockerfile_entrypoint_and_default_command():
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text(encoding="utf-8")
        assert 'ENTRYPOINT ["dextr-backend"]' in text, dockerfile.name
        cmd = re.search(r"^CMD (\[.*\])$", text, flags=re.M)
        assert cmd, f"{dockerfile.name} has no exec-form CMD"
        assert parse_cli(yaml.safe_load(cmd.group(1))).command == "serve"
        assert "EXPOSE 9090" in text


# --------------------------------------------------------------------------- CPU-only override
def test_cpu_override(compose, compose_cpu):
    services = compose_cpu["services"]
    assert set(services) == set(OURS)
    for name in OURS:
        assert services[name]["image"] == "dextr-backend:cpu"
        assert services[name]["build"]["dockerfile"] == "docker/Dockerfile.cpu"
        assert "command" not in services[name]  # same commands as the base file
    for name in ("worker", "trainer"):
        reset = services[name]["deploy"]
        assert isinstance(reset, Tagged) and reset.tag == "!reset", "the GPU reservation must be removed"
        assert services[name]["environment"]["DEXTR_DEVICE"] == "cpu"
    assert "docker compose -f docker/docker-compose.yml -f docker/docker-compose.cpu.yml up -d" in README


def compose_command() -> tuple[list[str], str] | None:
    """``docker compose`` (the plugin) or a v2 ``docker-compose`` binary, else ``podman-compose`` 1.3
    or later, where one is installed; with the format its ``config`` prints (json or yaml)."""
    for argv in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(argv[0]) is None:
            continue
        probe = subprocess.run([*argv, "version"], capture_output=True, text=True)
        if probe.returncode == 0 and re.search(r"v?2\.\d+", probe.stdout):
            return argv, "json"
    if shutil.which("podman-compose"):
        probe = subprocess.run(["podman-compose", "--version"], capture_output=True, text=True)
        found = re.search(r"podman-compose version (\d+)\.(\d+)", probe.stdout)
        if probe.returncode == 0 and found and (int(found.group(1)), int(found.group(2))) >= (1, 3):
            return ["podman-compose"], "yaml"
    return None


def test_docker_compose_config_validates(tmp_path):
    """The real Compose parser accepts both files, interpolates docker/.env and honours ``!reset``."""
    found = compose_command()
    if found is None:
        pytest.skip(
            "no Docker Compose v2 (docker compose plugin or docker-compose binary) and no podman-compose >= 1.3"
        )
    argv, fmt = found
    env = tmp_path / ".env"
    env.write_text(ENV_EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    for files, gpu in ((["-f", str(COMPOSE)], True), (["-f", str(COMPOSE), "-f", str(COMPOSE_CPU)], False)):
        proc = subprocess.run(
            [
                *argv,
                "--env-file",
                str(env),
                *files,
                "--profile",
                "label-studio",
                "config",
                *(["--format", "json"] if fmt == "json" else []),
            ],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
        services = (json.loads(proc.stdout) if fmt == "json" else yaml.safe_load(proc.stdout))["services"]
        assert {"redis", "api", "worker", "trainer", "label-studio"} <= set(services)
        for name in ("worker", "trainer"):
            assert ("deploy" in services[name]) == gpu, "only the CPU override drops the GPU reservation"
        assert services["worker"]["image"] == ("dextr-backend:gpu" if gpu else "dextr-backend:cpu")
        assert services["api"]["environment"]["LABEL_STUDIO_API_KEY"] == env_example()["LABEL_STUDIO_USER_TOKEN"]


# --------------------------------------------------------------------------- environment variables
def test_service_environment_is_read_by_the_code(compose, compose_cpu):
    source = source_text()
    table = settings_table()
    for data in (compose, compose_cpu):
        for name in OURS:
            for var in data["services"][name].get("environment", {}):
                assert reads(var, source), f"{name} sets {var}, which nothing in dextr_backend/ reads"
                assert f"`{var}`" in table, f"{var} is not in README's Settings table"


def test_every_variable_is_documented():
    """Each ${VAR} of the compose files is in .env.example and README's Settings table; nothing stale."""
    table = settings_table()
    used = set()
    for path in (COMPOSE, COMPOSE_CPU):
        used |= set(INTERPOLATION.findall(path.read_text(encoding="utf-8")))
    documented = env_example()
    for var in sorted(used):
        assert var in documented, f"{var} is used in the compose files but missing from docker/.env.example"
    for var in documented:
        assert var in used, f"docker/.env.example sets {var}, which the compose files never use"
        assert f"`{var}`" in table, f"{var} (docker/.env.example) is not in README's Settings table"


# --------------------------------------------------------------------------- Dockerfiles
BUILD_ARGS = ("TORCH_INDEX_URL", "TORCH_VERSION", "INDEX_URL", "EXTRA_INDEX_URL", "CONSTRAINTS")


def stages(text: str) -> list[tuple[str, str]]:
    """``(FROM line, body)`` of each stage, comments dropped."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    out, current = [], None
    for line in lines:
        if line.startswith("FROM "):
            current = [line, []]
            out.append(current)
        elif current is not None:
            current[1].append(line)
    return [(head, "\n".join(body)) for head, body in out]


def global_args(text: str) -> dict[str, str]:
    """The ``ARG NAME=default`` lines before the first FROM."""
    head = text.split("\nFROM ", 1)[0]
    return dict(re.findall(r"^ARG (\w+)=(.*)$", head, flags=re.M))


def test_dockerfiles_install_like_the_readme():
    """A wheel of the package (what `pip install .` installs) built and installed in a `build` stage;
    the image copies in only what was installed: the source and the weights are not stored twice."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert "make demo" in README  # the README's quick start
    assert re.search(r"pip install (-q )?-e '\.\[test\]'", makefile)  # ... is what make installs
    assert "pip install ." in README  # the Docker section says how images do it
    setup = (REPO / "setup.py").read_text(encoding="utf-8")
    needs = ["setup.py", "dextr_backend"]
    if "README.md" in setup:
        needs.append("README.md")  # long_description is read at install time
    if '"weights"' in setup:
        needs.append("weights")  # shipped weights: package_dir of shipped_weights
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text(encoding="utf-8")
        (torch_from, torch), (build_from, build), (final_from, final) = stages(text)
        assert torch_from == "FROM python:3.11-slim AS torch", dockerfile.name
        assert build_from == "FROM torch AS build" and final_from == "FROM torch", dockerfile.name
        assert "COPY" not in torch
        assert re.search(r"pip wheel --use-pep517 --no-deps -w /wheel \.(\s|$)", build), (
            f"{dockerfile.name}: no wheel of ."
        )
        assert "pip install --prefix /install /wheel/*.whl" in build
        copied = " ".join(re.findall(r"^COPY (.+)$", build, flags=re.M))
        for path in needs:
            assert re.search(rf"(^|\s){re.escape(path)}(\s|$)", copied), f"{dockerfile.name} does not COPY {path}"
        assert re.findall(r"^(?:COPY|ADD) .*$", final, flags=re.M) == ["COPY --from=build /install/ /opt/venv/"], (
            f"{dockerfile.name}: the image may copy in only what the build stage installed"
        )
        assert "pip check" in final
        assert "pip install -e" not in text and not re.search(r"pip install \.(\s|$)", torch + build + final), (
            f"{dockerfile.name}: install the wheel, not the source tree"
        )
        ignore = dockerfile.with_name(dockerfile.name + ".dockerignore").read_text(encoding="utf-8")
        for path in needs:
            assert f"!{path}" in ignore, f"{dockerfile.name}.dockerignore leaves out {path}"


def test_dockerfiles_build_arguments():
    """Mirrors and pins by build argument; CPU-only torch for the CPU image, the same torch release in both."""
    cpu, gpu = (global_args(d.read_text(encoding="utf-8")) for d in DOCKERFILES)
    for args in (cpu, gpu):
        assert set(BUILD_ARGS) <= set(args)
        assert (
            args["INDEX_URL"] == "https://pypi.org/simple"
            and args["EXTRA_INDEX_URL"] == ""
            and args["CONSTRAINTS"] == ""
        )
        assert re.fullmatch(r"\d+\.\d+\.\d+", args["TORCH_VERSION"])
    assert cpu["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert gpu["TORCH_INDEX_URL"] == "https://pypi.org/simple"  # Linux wheels with their own CUDA runtime
    assert cpu["TORCH_VERSION"] == gpu["TORCH_VERSION"]
    for dockerfile in DOCKERFILES:
        for head, body in stages(dockerfile.read_text(encoding="utf-8")):
            declared = set(re.findall(r"^ARG (\w+)$", body, flags=re.M))
            used = {name for name in BUILD_ARGS if f"${name}" in body or f'"${name}"' in body}
            assert used <= declared, f"{dockerfile.name} ({head}): {used - declared} used but not declared in the stage"


def test_torch_is_pinned_when_the_package_is_installed():
    """``pip install`` of the package must not replace the CPU torch by PyPI's CUDA build: the same
    RUN step pins torch to the installed version (its local label, e.g. +cpu, included)."""
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text(encoding="utf-8")
        (_, torch), (_, build), _ = stages(text)
        assert 'PIP_INDEX_URL="$TORCH_INDEX_URL" PIP_EXTRA_INDEX_URL= ' in torch and '"torch==$TORCH_VERSION"' in torch
        steps = re.split(r"\n(?=[A-Z]+ )", build)
        package = next(s for s in steps if "/wheel/*.whl" in s)
        assert package.startswith(
            "RUN python3 -c 'from importlib.metadata import version; "
            """print("torch==" + version("torch"))' > /tmp/constraints.txt"""
        )
        assert (
            'PIP_INDEX_URL="$INDEX_URL" PIP_EXTRA_INDEX_URL="$EXTRA_INDEX_URL" PIP_CONSTRAINT=/tmp/constraints.txt'
            in package
        )
        assert "torchvision" not in text


def test_dockerfiles_in_step():
    """Dockerfile.gpu is Dockerfile.cpu but for TORCH_INDEX_URL's default and NVIDIA_DRIVER_CAPABILITIES."""

    def body(path):
        text = "\n".join(ln for ln in path.read_text(encoding="utf-8").splitlines() if not ln.startswith("#"))
        text = re.sub(r"^ARG TORCH_INDEX_URL=.*$", "ARG TORCH_INDEX_URL=", text, flags=re.M)
        return re.sub(r"^ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility\n", "", text, flags=re.M)

    cpu, gpu = DOCKERFILES
    assert body(cpu) == body(gpu)
    assert "ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility" in gpu.read_text(encoding="utf-8")


def test_torchvision_is_not_required():
    """Nothing imports torchvision, and PyPI's CUDA torchvision beside a CPU torch fails on import."""
    assert not re.search(r"^\s*(import|from) torchvision", source_text(), flags=re.M)
    assert "torchvision" not in (REPO / "setup.py").read_text(encoding="utf-8")
    for name in ("function.yaml", "function-gpu.yaml"):
        assert "torchvision" not in (NUCLIO / name).read_text(encoding="utf-8")


# --------------------------------------------------------------------------- nuclio function
@pytest.mark.parametrize("name", ["function.yaml", "function-gpu.yaml"])
def test_nuclio_function(name):
    function = yaml.safe_load((NUCLIO / name).read_text(encoding="utf-8"))
    notes = function["metadata"]["annotations"]
    assert notes["type"] == "interactor" and notes["version"] == 2
    assert notes["min_pos_points"] == 4 and notes["spec"] == "" and notes["help_message"]
    assert notes["min_neg_points"] == 0  # CVAT offers negative clicks: they correct
    assert not any(k.startswith("startswith_box") for k in notes)  # CVAT reads any value as True
    spec = function["spec"]
    assert spec["handler"] == "main:handler" and spec["eventTimeout"] == "30s"
    assert spec["runtime"].startswith("python:3.")
    assert any(t["kind"] == "http" for t in spec["triggers"].values())
    directives = spec["build"]["directives"]
    runs = " ".join(d["value"] for d in directives["preCopy"] + directives["postCopy"] if d["kind"] == "RUN")
    assert "pip3 install --no-cache-dir -c /tmp/torch-pin.txt /opt/nuclio/dist/dextr_backend-" in runs
    assert """print("torch==" + version("torch"))' > /tmp/torch-pin.txt""" in runs  # torch stays as installed
    version = global_args(DOCKERFILES[0].read_text(encoding="utf-8"))["TORCH_VERSION"]
    assert f'"torch=={version}"' in runs, "the nuclio functions install the images' torch release"
    assert "pip wheel --no-deps -w docker/nuclio/dextr/dist ." in README
    assert f"--file docker/nuclio/dextr/{name}" in (NUCLIO / name).read_text() + README
    assert (NUCLIO / "main.py").exists()


# --------------------------------------------------------------------------- self-hosting, for real
TOOL = REPO / "tools" / "container_standins.sh"
CI = REPO / ".ci" / "run"


def self_hosting() -> str:
    match = re.search(r"^## Self-hosting with Docker or Podman\n(.*?)(?=^## )", README, flags=re.S | re.M)
    assert match, "README.md has no '## Self-hosting with Docker or Podman' section"
    return match.group(1)


def words(text: str) -> str:
    """Text with its line breaks, indents and bold marks folded away, to find a phrase in it."""
    return re.sub(r"\s+", " ", text.replace("**", "").replace("\n#", " "))


def full_name(image: str) -> str:
    """Docker's normalised image name: python:3.11-slim -> docker.io/library/python:3.11-slim."""
    if "/" not in image:
        image = "library/" + image
    if "." not in image.split("/")[0]:
        image = "docker.io/" + image
    return image


def test_readme_self_hosting_requirements():
    """The versions the section promises are those the files need and the tests use."""
    section = words(self_hosting())
    assert "Docker Compose 2.24.4 or later" in section  # !reset in the CPU override
    assert "!reset" in COMPOSE_CPU.read_text(encoding="utf-8")
    assert "podman-compose 1.3 or later" in section and "'podman-compose>=1.3'" in section
    assert "'podman-compose>=1.3'" in CI.read_text(encoding="utf-8")
    gpu = words(DOCKERFILES[1].read_text(encoding="utf-8"))
    for promise in ("driver 580 or later", "CUDA 13.0", "Turing"):
        assert promise in section and promise in gpu, promise
    version = global_args(DOCKERFILES[1].read_text(encoding="utf-8"))["TORCH_VERSION"]
    assert f"torch ({version}, as in the CPU image)" in section
    for arg in BUILD_ARGS:
        assert f"`{arg}`" in section, f"README does not describe the build argument {arg}"
    assert "torchvision" in section  # says why there is none


def test_readme_self_hosting_commands():
    """Every compose command of the section names files that exist; the CPU one is the tested one."""
    section = self_hosting()
    commands = re.findall(r"^(?:docker compose|podman-compose) .*$", section, flags=re.M)
    assert len(commands) >= 5
    for command in commands:
        for path in re.findall(r" -f (\S+\.ya?ml)", command):
            assert (REPO / path).exists(), f"{command}: no {path}"
        for profile in re.findall(r"--profile (\S+)", command):
            assert profile == "label-studio"
    assert "cp docker/.env.example docker/.env" in section
    assert any(
        c.startswith("podman-compose -f docker/docker-compose.yml -f docker/docker-compose.cpu.yml") for c in commands
    )


def test_readme_image_sizes_are_measured():
    section = self_hosting()
    cpu = re.search(r"`dextr-backend:cpu` (\d+\.\d+) GB", section)
    assert cpu and float(cpu.group(1)) <= 1.5, "the CPU image's measured size (target: at most 1.5 GB)"
    gpu = re.search(r"`dextr-backend:gpu` (\d+\.\d+) GB", section)
    assert gpu, "the GPU image's measured size (or why it could not be built)"
    assert "PLACEHOLDER" not in section


def test_stand_ins_and_ci():
    """tools/container_standins.sh stands in for exactly the images docker/ names; CI requires the
    container tests and installs what they need."""
    assert TOOL.exists() and TOOL.stat().st_mode & 0o111, "tools/container_standins.sh must be executable"
    tool = TOOL.read_text(encoding="utf-8")
    names = dict(re.findall(r"^(PYTHON_IMAGE|REDIS_IMAGE|LS_IMAGE|LS_VERSION)=(\S+)$", tool, flags=re.M))
    names["LS_IMAGE"] = names["LS_IMAGE"].replace("$LS_VERSION", names["LS_VERSION"])
    compose = load(COMPOSE)["services"]
    for dockerfile in DOCKERFILES:
        (head, _), *_ = stages(dockerfile.read_text(encoding="utf-8"))
        assert full_name(head.split()[1]) == names["PYTHON_IMAGE"], dockerfile.name
    assert full_name(compose["redis"]["image"]) == names["REDIS_IMAGE"]
    assert full_name(compose["label-studio"]["image"]) == names["LS_IMAGE"]
    ci = CI.read_text(encoding="utf-8")
    assert "export DEXTR_REQUIRE_CONTAINERS=1" in ci
    for package in ("podman", "runc", "debootstrap"):
        assert re.search(rf"apt-get install .*\b{package}\b", ci), package
    assert (REPO / "tests" / "containers" / "test_compose_stack.py").exists()
    assert "tools/container_standins.sh" in self_hosting()
