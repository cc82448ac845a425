"""The deployment files in deploy/ agree with the code: commands, flags, settings, probe paths, image shape."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from dispatcher.api.app import create_app
from dispatcher.cli import _parser
from dispatcher.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
KUBERNETES = DEPLOY / "kubernetes"

YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
ENV_NAME = re.compile(r"\bDISPATCHER_[A-Z0-9_]+")
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def _documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _k8s_objects() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in YAML_FILES if KUBERNETES in path.parents for doc in _documents(path)]


def _compose() -> dict[str, Any]:
    (doc,) = _documents(COMPOSE)
    return doc


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj.get("kind") in WORKLOAD_KINDS:
        return obj["spec"]["template"]["spec"]
    if obj.get("kind") == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        instruction, _, rest = (pending + line).strip().partition(" ")
        out.append((instruction.upper(), rest.strip()))
        pending = ""
    return out


def _final_stage() -> list[tuple[str, str]]:
    instructions = _dockerfile_instructions()
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def _exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(part, str) for part in parsed), value
    return parsed


def _image_default(name: str) -> list[str]:
    (value,) = [rest for instr, rest in _final_stage() if instr == name]
    return _exec_form(value)


@dataclass
class Invocation:
    where: str
    argv: list[str]  # arguments after the `dispatcher` executable
    component: str  # api | worker | migrate | ...
    pod: dict[str, Any] | None = None
    container: dict[str, Any] | None = None


def _argv(where: str, command: Any, args: Any) -> list[str]:
    """What `dispatcher` receives, given an entrypoint override (command) and CMD override (args)."""

    def as_list(value: Any) -> list[str] | None:
        if value is None:
            return None
        return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]

    entrypoint = as_list(command)
    if entrypoint is not None:
        assert entrypoint and Path(entrypoint[0]).name == "dispatcher", f"{where}: runs {entrypoint}, not dispatcher"
        rest = entrypoint[1:]
        cmd = as_list(args)
        return rest + (cmd or [])
    cmd = as_list(args)
    return cmd if cmd is not None else _image_default("CMD")


def _invocations() -> list[Invocation]:
    found: list[Invocation] = []
    for name, service in _compose()["services"].items():
        if "build" not in service and "dispatcher" not in str(service.get("image", "")):
            continue
        where = f"{COMPOSE.name}: {name}"
        found.append(Invocation(where, _argv(where, service.get("entrypoint"), service.get("command")), name))
    for path, obj in _k8s_objects():
        pod = _pod_spec(obj)
        if pod is None:
            continue
        component = obj["metadata"].get("labels", {}).get("app.kubernetes.io/component", obj["metadata"]["name"])
        for container in pod.get("initContainers", []) + pod["containers"]:
            if "dispatcher" not in container["image"]:
                continue
            where = f"{path.name}: {obj['metadata']['name']}/{container['name']}"
            argv = _argv(where, container.get("command"), container.get("args"))
            found.append(Invocation(where, argv, component, pod, container))
    return found


def _parse(argv: list[str], where: str) -> Any:
    try:
        return _parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{where}: `dispatcher {shlex.join(argv)}` is rejected by the CLI parser (exit {exc.code})")


def _configmap_data() -> dict[str, str]:
    data: dict[str, str] = {}
    for _, obj in _k8s_objects():
        if obj.get("kind") == "ConfigMap":
            data.update(obj.get("data") or {})
    return data


def _get_routes(role: str) -> set[str]:
    app = create_app(Settings(database_url="postgresql://x/y"), role=role)
    return {route.resource.canonical for route in app.router.routes() if route.method == "GET" and route.resource}


# --- the files parse ------------------------------------------------------------------------------


def test_deploy_directory_has_the_expected_files() -> None:
    expected = {
        "Dockerfile",
        "docker-compose.yml",
        "README.md",
        "kubernetes/configmap.yaml",
        "kubernetes/secret.example.yaml",
        "kubernetes/migrate-job.yaml",
        "kubernetes/api-deployment.yaml",
        "kubernetes/worker-deployment.yaml",
        "kubernetes/pdb.yaml",
        "kubernetes/hpa.yaml",
    }
    present = {str(p.relative_to(DEPLOY)) for p in DEPLOY.rglob("*") if p.is_file()}
    assert expected <= present


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses_into_mappings(path: Path) -> None:
    docs = _documents(path)
    assert docs, f"{path} holds no YAML document"
    assert all(isinstance(doc, dict) for doc in docs)


def test_kubernetes_objects_name_a_kind_and_no_namespace() -> None:
    objects = _k8s_objects()
    assert objects
    for path, obj in objects:
        assert obj.get("apiVersion") and obj.get("kind") and obj["metadata"].get("name"), path
        assert "namespace" not in obj["metadata"], f"{path}: manifests stay namespace-agnostic"


# --- commands and flags -----------------------------------------------------------------------------


def test_every_container_command_is_accepted_by_the_cli_parser() -> None:
    invocations = _invocations()
    commands = set()
    for inv in invocations:
        commands.add(_parse(inv.argv, inv.where).command)
    assert {"migrate", "serve"} <= commands
    assert len({inv.where.split(":")[0] for inv in invocations}) >= 3  # compose, migrate job, deployments


def test_image_default_command_is_accepted_by_the_cli_parser() -> None:
    assert _image_default("ENTRYPOINT") == ["dispatcher"]
    assert _parse(_image_default("CMD"), "Dockerfile CMD").command == "serve"


def test_api_and_worker_containers_run_their_role() -> None:
    seen = set()
    for inv in _invocations():
        if inv.component in ("api", "worker"):
            args = _parse(inv.argv, inv.where)
            assert (args.command, args.role) == ("serve", inv.component), inv.where
            seen.add((inv.where.split(":")[0], inv.component))
    assert seen == {
        ("docker-compose.yml", "api"),
        ("docker-compose.yml", "worker"),
        ("api-deployment.yaml", "api"),
        ("worker-deployment.yaml", "worker"),
    }


def test_compose_migration_runs_before_api_and_worker() -> None:
    services = _compose()["services"]
    assert _parse(_argv("migrate", None, services["migrate"]["command"]), "migrate").command == "migrate"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in services["postgres"]
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


# --- settings -----------------------------------------------------------------------------------------


def _env_files() -> list[Path]:
    return [DOCKERFILE, *YAML_FILES]


@pytest.mark.parametrize("path", _env_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_dispatcher_env_var_is_a_setting(path: Path) -> None:
    # Settings ignores unknown variables, so a misspelt one would be dropped without a word.
    names = set(ENV_NAME.findall(path.read_text()))
    unknown = {n for n in names if n.removeprefix("DISPATCHER_").lower() not in Settings.model_fields}
    assert not unknown, f"{path.name}: not dispatcher settings: {sorted(unknown)}"


def test_shared_env_carries_database_url_and_secret_key() -> None:
    shared = _compose()["x-dispatcher-env"]
    assert {"DISPATCHER_DATABASE_URL", "DISPATCHER_SECRET_KEY"} <= set(shared)
    for name, service in _compose()["services"].items():
        if "build" in service:
            assert service["environment"] == shared, name
    secrets: dict[str, str] = {}
    for _, obj in _k8s_objects():
        if obj["kind"] == "Secret":
            secrets.update(obj.get("stringData") or {})
            secrets.update(obj.get("data") or {})
    assert {"DISPATCHER_DATABASE_URL", "DISPATCHER_SECRET_KEY"} <= set(secrets)


def test_configmap_and_secret_keys_are_all_dispatcher_settings() -> None:
    # envFrom injects every key, so each must be a DISPATCHER_* setting.
    for path, obj in _k8s_objects():
        if obj["kind"] in ("ConfigMap", "Secret"):
            for key in {**(obj.get("data") or {}), **(obj.get("stringData") or {})}:
                assert ENV_NAME.fullmatch(key), f"{path.name}: {key}"
                assert key.removeprefix("DISPATCHER_").lower() in Settings.model_fields, f"{path.name}: {key}"


def test_configmap_values_are_valid_settings() -> None:
    data = _configmap_data()
    assert data
    fields = {key.removeprefix("DISPATCHER_").lower(): value for key, value in data.items()}
    settings = Settings.model_validate(fields)
    assert settings.host == "0.0.0.0"


def test_containers_take_settings_from_the_configmap_and_secret() -> None:
    names = {(obj["kind"], obj["metadata"]["name"]) for _, obj in _k8s_objects()}
    for inv in _invocations():
        if inv.container is None:
            continue
        refs = inv.container.get("envFrom", [])
        kinds = {("ConfigMap", r["configMapRef"]["name"]) for r in refs if "configMapRef" in r}
        kinds |= {("Secret", r["secretRef"]["name"]) for r in refs if "secretRef" in r}
        assert {kind for kind, _ in kinds} == {"ConfigMap", "Secret"}, inv.where
        assert kinds <= names, inv.where


# --- probes ---------------------------------------------------------------------------------------------


def test_probes_use_health_routes_the_role_serves() -> None:
    checked = 0
    for inv in _invocations():
        if inv.container is None:
            continue
        args = _parse(inv.argv, inv.where)
        if args.command != "serve":
            continue
        routes = _get_routes(args.role)
        container = inv.container
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", inv.where
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", inv.where
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        expected_port = args.port or int(
            _configmap_data().get("DISPATCHER_PORT", Settings.model_fields["port"].default)
        )
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            if kind not in container:
                continue
            probe = container[kind]["httpGet"]
            assert probe["path"] in routes, f"{inv.where}: {kind} {probe['path']} is not a GET route"
            port = ports.get(probe["port"], probe["port"])
            assert port == expected_port, f"{inv.where}: {kind} probes port {port}, serve listens on {expected_port}"
            checked += 1
    assert checked >= 4


def test_dockerfile_healthcheck_requests_healthz_with_the_standard_library() -> None:
    (healthcheck,) = [rest for instr, rest in _final_stage() if instr == "HEALTHCHECK"]
    assert "urllib.request" in healthcheck and "curl" not in healthcheck
    path = re.search(r"/[a-z]+z\b", healthcheck)
    assert path and path.group() == "/healthz"
    assert "/healthz" in _get_routes("worker") and "/healthz" in _get_routes("api")


def test_termination_grace_exceeds_shutdown_grace() -> None:
    grace = float(_configmap_data().get("DISPATCHER_SHUTDOWN_GRACE", Settings.model_fields["shutdown_grace"].default))
    for inv in _invocations():
        if inv.pod is None or inv.container is None or inv.component == "migrate":
            continue
        pre_stop = inv.container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        pre_stop_sleep = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
        assert inv.pod["terminationGracePeriodSeconds"] > grace + pre_stop_sleep, inv.where


# --- Kubernetes wiring ----------------------------------------------------------------------------------


def test_pods_run_as_non_root_with_resources() -> None:
    for inv in _invocations():
        if inv.pod is None or inv.container is None:
            continue
        assert inv.pod["securityContext"]["runAsNonRoot"] is True, inv.where
        assert inv.container["securityContext"]["allowPrivilegeEscalation"] is False, inv.where
        assert {"cpu", "memory"} <= set(inv.container["resources"]["requests"]), inv.where
        assert "memory" in inv.container["resources"]["limits"], inv.where


def test_selectors_pdbs_and_autoscalers_target_the_deployments() -> None:
    objects = [obj for _, obj in _k8s_objects()]
    deployments = {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == "Deployment"}
    assert set(deployments) == {"dispatcher-api", "dispatcher-worker"}
    pod_labels = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments.items()}

    def selects(selector: dict[str, str]) -> set[str]:
        return {name for name, labels in pod_labels.items() if selector.items() <= labels.items()}

    for name, d in deployments.items():
        assert selects(d["spec"]["selector"]["matchLabels"]) == {name}
    services = [obj for obj in objects if obj["kind"] == "Service"]
    assert [selects(s["spec"]["selector"]) for s in services] == [{"dispatcher-api"}]
    pdbs = [selects(obj["spec"]["selector"]["matchLabels"]) for obj in objects if obj["kind"] == "PodDisruptionBudget"]
    assert sorted(map(sorted, pdbs)) == [["dispatcher-api"], ["dispatcher-worker"]]
    hpas = [obj for obj in objects if obj["kind"] == "HorizontalPodAutoscaler"]
    assert all(h["apiVersion"] == "autoscaling/v2" for h in hpas)
    assert sorted(h["spec"]["scaleTargetRef"]["name"] for h in hpas) == ["dispatcher-api", "dispatcher-worker"]
    for h in hpas:
        assert [m["resource"]["name"] for m in h["spec"]["metrics"]] == ["cpu"]


# --- Dockerfile -----------------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_with_a_slim_python_311_runtime() -> None:
    froms = [rest for instr, rest in _dockerfile_instructions() if instr == "FROM"]
    assert len(froms) >= 2
    args = dict(rest.split("=", 1) for instr, rest in _dockerfile_instructions() if instr == "ARG" and "=" in rest)
    runtime = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), froms[-1].split()[0])
    assert runtime == "python:3.11-slim"
    assert any(instr == "COPY" and rest.startswith("--from=") for instr, rest in _final_stage())


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [rest for instr, rest in _final_stage() if instr == "USER"]
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_dockerfile_binds_all_interfaces_and_exposes_8080() -> None:
    stage = _final_stage()
    env = " ".join(rest for instr, rest in stage if instr == "ENV")
    assert "DISPATCHER_HOST=0.0.0.0" in env.split()
    assert any(instr == "EXPOSE" and "8080" in rest.split() for instr, rest in stage)


def test_dockerfile_copies_only_paths_in_the_build_context() -> None:
    for instr, rest in _dockerfile_instructions():
        if instr != "COPY" or rest.startswith("--from="):
            continue
        sources = [part for part in rest.split() if not part.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository root"
