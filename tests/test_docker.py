"""Static checks of docker/ (no Docker engine needed): compose services, healthchecks, volumes,
commands that the real CLI parser accepts, environment variables that the code reads and the
README documents, Dockerfiles that install the package like the README, and the nuclio function.

Where a ``docker compose`` plugin exists, ``docker compose config`` validates the files as well.
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
OURS = ("api", "worker", "trainer")                     # services running dextr-backend
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
        assert "dextr:alive:" in " ".join(services[name]["healthcheck"]["test"])   # queue/worker.py's heartbeat
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
    assert "deploy" not in compose["services"]["api"]       # the API only queues work


def test_images_and_builds(compose):
    for name in OURS:
        service = compose["services"][name]
        assert service["image"] == "dextr-backend:gpu"
        assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == \
            (DOCKER / "Dockerfile.gpu").resolve()


def test_label_studio_is_prewired(compose):
    ls = compose["services"]["label-studio"]
    env = ls["environment"]
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert "LABEL_STUDIO_USER_TOKEN" in env
    assert env["ML_BLOCK_LOCAL_IP"] == "false" and env["SSRF_PROTECTION_ENABLED"] == "false"
    assert any(str(m).endswith(":/label-studio/data") for m in ls["volumes"])
    api_env = compose["services"]["api"]["environment"]
    assert "http://label-studio:8080" in api_env["LABEL_STUDIO_URL"]
    assert "LABEL_STUDIO_USER_TOKEN" in api_env["LABEL_STUDIO_API_KEY"]     # the same token by default
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
        cmd = re.search(r'^CMD (\[.*\])$', text, flags=re.M)
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
        assert "command" not in services[name]          # same commands as the base file
    for name in ("worker", "trainer"):
        reset = services[name]["deploy"]
        assert isinstance(reset, Tagged) and reset.tag == "!reset", "the GPU reservation must be removed"
        assert services[name]["environment"]["DEXTR_DEVICE"] == "cpu"
    assert "docker compose -f docker/docker-compose.yml -f docker/docker-compose.cpu.yml up -d" in README


def compose_command() -> list[str] | None:
    """``docker compose`` (the plugin) or a v2 ``docker-compose`` binary, where one is installed."""
    for argv in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(argv[0]) is None:
            continue
        probe = subprocess.run([*argv, "version"], capture_output=True, text=True)
        if probe.returncode == 0 and re.search(r"v?2\.\d+", probe.stdout):
            return argv
    return None


def test_docker_compose_config_validates(tmp_path):
    """The real Compose parser accepts both files, interpolates docker/.env and honours ``!reset``."""
    argv = compose_command()
    if argv is None:
        pytest.skip("no Docker Compose v2 (docker compose plugin or docker-compose binary)")
    env = tmp_path / ".env"
    env.write_text(ENV_EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    for files, gpu in ((["-f", str(COMPOSE)], True), (["-f", str(COMPOSE), "-f", str(COMPOSE_CPU)], False)):
        proc = subprocess.run([*argv, "--env-file", str(env), *files, "--profile", "label-studio",
                               "config", "--format", "json"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        services = json.loads(proc.stdout)["services"]
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
def test_dockerfiles_install_like_the_readme():
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert "make demo" in README                                               # the README's quick start
    assert re.search(r"pip install (-q )?-e '\.\[test\]'", makefile)           # ... is what make installs
    assert "pip install ." in README                                           # the Docker section says how images do it
    setup = (REPO / "setup.py").read_text(encoding="utf-8")
    needs = ["setup.py", "dextr_backend"]
    if "README.md" in setup:
        needs.append("README.md")                    # long_description is read at install time
    if '"weights"' in setup:
        needs.append("weights")                      # shipped weights: package_dir of shipped_weights
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text(encoding="utf-8")
        assert re.search(r"^RUN pip install \.(\s|$)", text, flags=re.M), f"{dockerfile.name}: not `pip install .`"
        assert not re.search(r"^RUN .*pip install -e", text, flags=re.M), f"{dockerfile.name}: not editable"
        copied = " ".join(re.findall(r"^COPY (.+)$", text, flags=re.M))
        for path in needs:
            assert re.search(rf"(^|\s){re.escape(path)}(\s|$)", copied), f"{dockerfile.name} does not COPY {path}"
        ignore = dockerfile.with_name(dockerfile.name + ".dockerignore").read_text(encoding="utf-8")
        for path in needs:
            assert f"!{path}" in ignore, f"{dockerfile.name}.dockerignore leaves out {path}"
    assert re.search(r"^FROM nvidia/cuda:12\.[0-9.]+-.*runtime-ubuntu", DOCKERFILES[1].read_text(), flags=re.M)


# --------------------------------------------------------------------------- nuclio function
@pytest.mark.parametrize("name", ["function.yaml", "function-gpu.yaml"])
def test_nuclio_function(name):
    function = yaml.safe_load((NUCLIO / name).read_text(encoding="utf-8"))
    notes = function["metadata"]["annotations"]
    assert notes["type"] == "interactor" and notes["version"] == 2
    assert notes["min_pos_points"] == 4 and notes["spec"] == "" and notes["help_message"]
    assert "min_neg_points" not in notes                  # CVAT's default -1: no negative clicks
    assert not any(k.startswith("startswith_box") for k in notes)   # CVAT reads any value as True
    spec = function["spec"]
    assert spec["handler"] == "main:handler" and spec["eventTimeout"] == "30s"
    assert spec["runtime"].startswith("python:3.")
    assert any(t["kind"] == "http" for t in spec["triggers"].values())
    directives = spec["build"]["directives"]
    runs = " ".join(d["value"] for d in directives["preCopy"] + directives["postCopy"] if d["kind"] == "RUN")
    assert "pip3 install --no-cache-dir /opt/nuclio/dist/dextr_backend-" in runs
    assert "pip wheel --no-deps -w docker/nuclio/dextr/dist ." in README
    assert f"--file docker/nuclio/dextr/{name}" in (NUCLIO / name).read_text() + README
    assert (NUCLIO / "main.py").exists()
