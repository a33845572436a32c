"""k8s/ is deployable as committed: every file parses, every manifest validates against its schema, the
Helm values use the keys the dagster chart reads, and RBAC grants exactly what the code calls."""

from __future__ import annotations

import re
import tomllib
from collections import defaultdict
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml

from pooling_pipeline.resources.config import CLUSTER_SETTINGS

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
PIPELINE_NS = "pooling-pipeline"
MODELS_NS = "pooling-models"
TEMPLATES_NS = "redhat-ods-applications"
RUNS_SA = "pooling-pipeline-runs"
DAGSTER_SA = "pooling-pipeline-dagster"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _values() -> dict[str, Any]:
    return yaml.safe_load((K8S / "values.yaml").read_text())


def _all_manifests() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in sorted(K8S.rglob("*.yaml")) if p.name != "values.yaml" for d in _docs(p)]


# ---------------------------------------------------------------- parsing and schemas


def test_every_yaml_under_k8s_parses() -> None:
    files = sorted(K8S.rglob("*.y*ml"))
    names = {p.relative_to(K8S).as_posix() for p in files}
    assert {"values.yaml", "rbac.yaml", "secrets.example.yaml"} <= names
    for path in files:
        docs = list(yaml.safe_load_all(path.read_text()))
        assert any(d is not None for d in docs), f"{path} is empty"


def _check_against_model(data: Any, type_name: str, where: str) -> None:
    """Every key is a field of the kubernetes client model (recursively), and required fields are set."""
    if type_name.startswith("list["):
        assert isinstance(data, list), f"{where}: expected a list"
        for i, item in enumerate(data):
            _check_against_model(item, type_name[5:-1], f"{where}[{i}]")
        return
    if type_name.startswith("dict("):
        assert isinstance(data, dict), f"{where}: expected a mapping"
        return
    if type_name.startswith("dict["):
        assert isinstance(data, dict), f"{where}: expected a mapping"
        return
    klass = getattr(kubernetes.client, type_name, None)
    if klass is None:  # str, bool, int, object ...
        return
    assert isinstance(data, dict), f"{where}: expected a {type_name} mapping"
    by_json = {json_key: attr for attr, json_key in klass.attribute_map.items()}
    unknown = set(data) - set(by_json)
    assert not unknown, f"{where}: {sorted(unknown)} are not fields of {type_name}"
    # The generated constructor enforces required fields (e.g. PolicyRule.verbs, RoleBinding.roleRef).
    klass(**{by_json[k]: v for k, v in data.items()})
    for key, value in data.items():
        _check_against_model(value, klass.openapi_types[by_json[key]], f"{where}.{key}")


CORE_KINDS = {
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("v1", "Secret"): "V1Secret",
    ("rbac.authorization.k8s.io/v1", "Role"): "V1Role",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "V1RoleBinding",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "V1ClusterRole",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "V1ClusterRoleBinding",
}


def test_core_manifests_validate_against_the_kubernetes_models() -> None:
    checked = 0
    for path, doc in _all_manifests():
        model = CORE_KINDS.get((doc.get("apiVersion"), doc.get("kind")))
        if model is None:
            continue
        _check_against_model(doc, model, f"{path.name}:{doc['kind']}/{doc['metadata']['name']}")
        checked += 1
    assert checked >= 10  # 2 ServiceAccounts, 3 Roles, 3 RoleBindings, 1 ClusterRole(Binding), 2 Secrets


def test_model_check_rejects_a_misspelt_field() -> None:
    # The validator above must be able to fail: a typo is not silently dropped as the client would.
    bad = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "x"},
        "rules": [{"apiGroups": [""], "resource": ["pods"], "verbs": ["get"]}],
    }
    with pytest.raises(AssertionError, match="resource"):
        _check_against_model(bad, "V1Role", "bad")


def test_every_manifest_is_of_a_known_kind() -> None:
    known = set(CORE_KINDS) | {("template.openshift.io/v1", "Template")}
    for path, doc in _all_manifests():
        assert (doc.get("apiVersion"), doc.get("kind")) in known, f"{path.name}: unexpected {doc.get('kind')}"


def test_runtime_templates_wrap_servingruntimes_valid_against_the_kserve_crd() -> None:
    from pooling_pipeline.serving.crd_validation import packaged_source, validate_manifest

    templates = [d for p in sorted((K8S / "runtimes").glob("*.yaml")) for d in _docs(p)]
    assert {t["metadata"]["name"] for t in templates} == {"vllm-embedding-runtime", "vllm-reranker-runtime"}
    for template in templates:
        assert template["kind"] == "Template"
        assert template["metadata"]["namespace"] == TEMPLATES_NS
        for obj in template["objects"]:
            assert obj["kind"] == "ServingRuntime"
            assert validate_manifest(obj, packaged_source()).validated


def _render_cli(*args: str):
    from typer.testing import CliRunner

    from pooling_pipeline.cli import app

    # Typer runs a lone command without its name; with several it needs `render`.
    prefix = ["render"] if len(app.registered_commands) + len(app.registered_groups) > 1 else []
    return CliRunner().invoke(app, [*prefix, *args])


def test_committed_runtime_templates_equal_a_fresh_render(tmp_path: Path) -> None:
    result = _render_cli("--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    fresh = {p.name: p.read_text() for p in tmp_path.glob("*.yaml")}
    committed = {p.name: p.read_text() for p in (K8S / "runtimes").glob("*.yaml")}
    assert fresh and fresh == committed, "run `pooling-pipeline render` and commit k8s/runtimes/"


def test_render_check_fails_on_a_drifted_template(tmp_path: Path) -> None:
    assert _render_cli("--out", str(tmp_path)).exit_code == 0
    drifted = next(tmp_path.glob("*.yaml"))
    drifted.write_text(drifted.read_text().replace("--port=8080", "--port=8081"))
    result = _render_cli("--out", str(tmp_path), "--check")
    assert result.exit_code == 1 and drifted.name in result.output


def test_example_secrets_hold_no_real_values() -> None:
    for doc in _docs(K8S / "secrets.example.yaml"):
        assert "data" not in doc, "use stringData placeholders, never base64 values"
        for key, value in doc["stringData"].items():
            assert re.fullmatch(r"<[^<>]+>", value), f"{key}: {value!r} is not a <placeholder>"


# ---------------------------------------------------------------- Helm values


# The fields of the chart's values schema (helm/dagster/schema, chart 1.13.x), `extra="forbid"` there.
K8S_RUN_LAUNCHER_FIELDS = {
    "image",
    "imagePullPolicy",
    "jobNamespace",
    "loadInclusterConfig",
    "kubeconfigFile",
    "envConfigMaps",
    "envSecrets",
    "envVars",
    "volumeMounts",
    "volumes",
    "labels",
    "failPodOnRunFailure",
    "resources",
    "schedulerName",
    "securityContext",
    "runK8sConfig",
}
RUN_K8S_CONFIG_FIELDS = {"containerConfig", "podSpecConfig", "podTemplateSpecMetadata", "jobSpecConfig", "jobMetadata"}
USER_DEPLOYMENT_FIELDS = {
    "name",
    "image",
    "port",
    "dagsterApiGrpcArgs",
    "codeServerArgs",
    "includeConfigInLaunchedRuns",
    "deploymentNamespace",
    "env",
    "envConfigMaps",
    "envSecrets",
    "annotations",
    "nodeSelector",
    "affinity",
    "tolerations",
    "podSecurityContext",
    "securityContext",
    "resources",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "labels",
    "volumeMounts",
    "volumes",
    "schedulerName",
    "initContainers",
    "sidecarContainers",
    "deploymentStrategy",
    "replicaCount",
}
POSTGRES_FIELDS = {
    "postgresqlScheme",
    "image",
    "enabled",
    "postgresqlHost",
    "postgresqlUsername",
    "postgresqlPassword",
    "postgresqlDatabase",
    "postgresqlParams",
    "service",
}
CONCURRENCY_FIELDS = {"enabled", "pools", "runs"}
CONCURRENCY_POOL_FIELDS = {"defaultLimit", "granularity", "opGranularityRunBuffer"}
CONCURRENCY_RUN_FIELDS = {"maxConcurrentRuns", "tagConcurrencyLimits"}
# With `concurrency` enabled the chart refuses these on the run coordinator (it would say it twice).
RUN_COORDINATOR_CONFLICTS = {"maxConcurrentRuns", "tagConcurrencyLimits", "blockOpConcurrencyLimitedRuns"}


def test_helm_values_configure_the_k8s_run_launcher() -> None:
    launcher = _values()["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    config = launcher["config"]["k8sRunLauncher"]
    assert set(config) <= K8S_RUN_LAUNCHER_FIELDS, set(config) - K8S_RUN_LAUNCHER_FIELDS
    assert config["jobNamespace"] == PIPELINE_NS
    assert config["loadInclusterConfig"] is True
    assert config["resources"]["requests"]["cpu"] and config["resources"]["requests"]["memory"]
    assert set(config.get("runK8sConfig", {})) <= RUN_K8S_CONFIG_FIELDS
    assert {"name": "pooling-pipeline-env"} in config["envSecrets"]


def test_helm_values_define_one_user_code_deployment_of_this_package() -> None:
    section = _values()["dagster-user-deployments"]
    assert section["enabled"] is True
    (deployment,) = section["deployments"]
    assert set(deployment) <= USER_DEPLOYMENT_FIELDS, set(deployment) - USER_DEPLOYMENT_FIELDS
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "pooling_pipeline.definitions"]
    assert {"repository", "tag", "pullPolicy"} <= set(deployment["image"])
    assert isinstance(deployment["port"], int)
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True  # run pods get the same env
    assert deployment["env"]["POOLING_TARGET"] == "cluster"
    assert {"name": "pooling-pipeline-env"} in deployment["envSecrets"]


def test_helm_values_use_an_external_postgres_with_a_secret_password() -> None:
    values = _values()
    pg = values["postgresql"]
    assert set(pg) <= POSTGRES_FIELDS
    assert pg["enabled"] is False and pg["postgresqlHost"] and pg["postgresqlUsername"] and pg["postgresqlDatabase"]
    assert isinstance(pg["service"]["port"], int)
    assert not pg["postgresqlPassword"], "the password belongs in the Secret, not in values"
    assert values["generatePostgresqlPasswordSecret"] is False
    secret_name = values["global"]["postgresqlSecretName"]
    secrets = {d["metadata"]["name"]: d for d in _docs(K8S / "secrets.example.yaml")}
    assert "postgresql-password" in secrets[secret_name]["stringData"]


def test_helm_values_enable_the_daemon_and_chart_compatible_concurrency() -> None:
    values = _values()
    daemon = values["dagsterDaemon"]
    assert daemon["enabled"] is True
    coordinator = daemon["runCoordinator"]
    assert coordinator["enabled"] is True and coordinator["type"] == "QueuedRunCoordinator"
    assert not set(coordinator["config"]["queuedRunCoordinator"] or {}) & RUN_COORDINATOR_CONFLICTS
    concurrency = values["concurrency"]
    assert concurrency["enabled"] is True
    assert set(concurrency) <= CONCURRENCY_FIELDS
    assert set(concurrency["pools"]) <= CONCURRENCY_POOL_FIELDS
    assert set(concurrency["runs"]) <= CONCURRENCY_RUN_FIELDS


def _instance_rules(dagster_yaml: dict[str, Any]) -> dict[str, Any]:
    """dagster.yaml's concurrency rules in one shape, whether under run_coordinator or concurrency.runs."""
    pools = (dagster_yaml.get("concurrency") or {}).get("pools") or {}
    runs = dict((dagster_yaml.get("concurrency") or {}).get("runs") or {})
    coordinator = ((dagster_yaml.get("run_coordinator") or {}).get("config")) or {}
    for key in ("max_concurrent_runs", "tag_concurrency_limits"):
        if key in coordinator:
            runs.setdefault(key, coordinator[key])
    return {
        "default_limit": pools.get("default_limit"),
        "granularity": pools.get("granularity"),
        "max_concurrent_runs": runs.get("max_concurrent_runs"),
        "tag_concurrency_limits": runs.get("tag_concurrency_limits") or [],
    }


def test_helm_concurrency_matches_the_local_dagster_yaml() -> None:
    local = _instance_rules(yaml.safe_load((ROOT / "dagster.yaml").read_text()))
    chart = _values()["concurrency"]
    assert chart["pools"].get("defaultLimit") == local["default_limit"]
    assert chart["pools"].get("granularity") == local["granularity"]
    assert chart["runs"].get("maxConcurrentRuns") == local["max_concurrent_runs"]
    assert chart["runs"].get("tagConcurrencyLimits", []) == local["tag_concurrency_limits"]


def test_helm_values_use_the_service_accounts_and_secrets_defined_here() -> None:
    values = _values()
    accounts = {d["metadata"]["name"] for d in _docs(K8S / "rbac.yaml") if d["kind"] == "ServiceAccount"}
    assert values["rbacEnabled"] is False and values["serviceAccount"]["create"] is False
    assert values["serviceAccount"]["name"] == DAGSTER_SA and DAGSTER_SA in accounts
    user = values["dagster-user-deployments"]
    assert user["serviceAccount"]["create"] is False
    assert user["serviceAccount"]["name"] == RUNS_SA and RUNS_SA in accounts
    secret_names = {d["metadata"]["name"] for d in _docs(K8S / "secrets.example.yaml")}
    referenced = {s["name"] for s in user["deployments"][0]["envSecrets"]}
    referenced |= {s["name"] for s in values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]}
    assert referenced <= secret_names


def test_every_cluster_setting_is_provided_and_secrets_only_by_the_secret() -> None:
    env = _values()["dagster-user-deployments"]["deployments"][0]["env"]
    secret = next(d for d in _docs(K8S / "secrets.example.yaml") if d["metadata"]["name"] == "pooling-pipeline-env")
    known = {s.env for s in CLUSTER_SETTINGS} | {"POOLING_TARGET"}
    assert set(env) <= known, f"values.yaml sets unknown variables {set(env) - known}"
    for setting in CLUSTER_SETTINGS:
        if setting.secret:
            assert setting.env not in env, f"{setting.env} is a secret: put it in the Secret, not in values"
        if setting.default is None:
            assert setting.env in env or setting.env in secret["stringData"], f"{setting.env} is required"
    assert set(secret["stringData"]) <= {s.env for s in CLUSTER_SETTINGS if s.secret}


def test_the_image_home_matches_the_chart_dagster_home() -> None:
    containerfile = (K8S / "Containerfile").read_text()
    assert f"DAGSTER_HOME={_values()['global']['dagsterHome']}" in containerfile


# ---------------------------------------------------------------- RBAC == what the code calls


_VERB = {
    "create": "create",
    "read": "get",
    "list": "list",
    "delete": "delete",
    "patch": "patch",
    "replace": "update",
    "connect_get": "create",
    "connect_post": "create",
}
_RESOURCE = {
    "job": "jobs",
    "job_status": "jobs/status",
    "pod": "pods",
    "pod_log": "pods/log",
    "event": "events",
    "pod_exec": "pods/exec",
}


def _calls_in(source: str, api_names: str) -> set[tuple[str, str, str]]:
    """(verb, group, resource) of every `<api>.<verb>_namespaced_<resource>(` call in `source`."""
    found = set()
    pattern = rf"\b({api_names})\.(create|read|list|delete|patch|replace|connect_get|connect_post)_namespaced_(\w+?)\("
    for api, verb, resource in re.findall(pattern, source):
        group = "batch" if "batch" in api else ""
        found.add((_VERB[verb], group, _RESOURCE[resource]))
    return found


def dagster_k8s_permissions() -> set[tuple[str, str, str]]:
    """What the dagster-k8s client (used by K8sRunLauncher and k8s_job_executor) calls, read from its source."""
    import dagster_k8s.client

    return _calls_in(Path(dagster_k8s.client.__file__).read_text(), "batch_api|core_api")


def exec_permissions() -> set[tuple[str, str, str]]:
    """pods/exec, only if pipeline code (e.g. the benchmark reading nvidia-smi in the predictor) execs."""
    calls = set()
    for path in (ROOT / "pooling_pipeline").rglob("*.py"):
        text = path.read_text()
        if "_namespaced_pod_exec" in text:
            calls.add(("create", "", "pods/exec"))
            calls.add(("get", "", "pods/exec"))  # websocket exec is a GET on older API servers
    return calls


# (namespace or "" for cluster-scoped, group, resource, verb, resourceNames)
Grant = tuple[str, str, str, str, tuple[str, ...]]


def required_permissions() -> dict[str, set[Grant]]:
    from pooling_pipeline.serving.kubernetes_target import REQUIRED_PERMISSIONS

    scope_ns = {"models": MODELS_NS, "templates": TEMPLATES_NS, "cluster": ""}
    launcher = {(PIPELINE_NS, g, r, v, ()) for v, g, r in dagster_k8s_permissions()}
    serving = {(scope_ns[p.scope], p.group, p.resource, p.verb, p.resource_names) for p in REQUIRED_PERMISSIONS}
    serving |= {(MODELS_NS, g, r, v, ()) for v, g, r in exec_permissions()}
    return {DAGSTER_SA: launcher, RUNS_SA: launcher | serving}


def granted_permissions() -> dict[str, set[Grant]]:
    docs = _docs(K8S / "rbac.yaml")
    roles = {(d["metadata"].get("namespace", ""), d["kind"], d["metadata"]["name"]): d for d in docs}
    granted: dict[str, set[Grant]] = defaultdict(set)
    for binding in (d for d in docs if d["kind"] in {"RoleBinding", "ClusterRoleBinding"}):
        ns = binding["metadata"].get("namespace", "")
        expected_role = "Role" if binding["kind"] == "RoleBinding" else "ClusterRole"
        assert binding["roleRef"]["kind"] == expected_role, "RoleBindings bind Roles, ClusterRoleBindings ClusterRoles"
        role = roles[(ns, expected_role, binding["roleRef"]["name"])]
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount" and subject["namespace"] == PIPELINE_NS
            for rule in role["rules"]:
                assert "resourceNames" not in rule or rule["resourceNames"]
                names = tuple(rule.get("resourceNames", ()))
                for g in rule["apiGroups"]:
                    for r in rule["resources"]:
                        for v in rule["verbs"]:
                            granted[subject["name"]].add((ns, g, r, v, names))
    return granted


def test_dagster_k8s_calls_are_derived_from_its_source() -> None:
    calls = dagster_k8s_permissions()
    # The run launcher's core: create the run Job, read its status, find its pods, terminate.
    assert {
        ("create", "batch", "jobs"),
        ("get", "batch", "jobs/status"),
        ("list", "", "pods"),
        ("delete", "batch", "jobs"),
    } <= calls


def test_rbac_grants_exactly_what_the_code_calls() -> None:
    required, granted = required_permissions(), granted_permissions()
    for account in (DAGSTER_SA, RUNS_SA):
        missing = required[account] - granted[account]
        extra = granted[account] - required[account]
        assert not missing, f"{account} lacks {sorted(missing)}: add them to k8s/rbac.yaml"
        assert not extra, f"{account} is granted {sorted(extra)} that no code path calls: remove them"


def test_rbac_is_namespaced_without_wildcards_but_for_reading_two_crds() -> None:
    for doc in _docs(K8S / "rbac.yaml"):
        for rule in doc.get("rules", []):
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        if doc["kind"] in {"ClusterRole", "ClusterRoleBinding"}:
            # The only cluster-wide grant: `get` on the two KServe CRDs, by name.
            for rule in doc.get("rules", []):
                assert rule["verbs"] == ["get"] and rule["resources"] == ["customresourcedefinitions"]
                assert sorted(rule["resourceNames"]) == [
                    "inferenceservices.serving.kserve.io",
                    "servingruntimes.serving.kserve.io",
                ]
            continue
        assert doc["kind"] in {"ServiceAccount", "Role", "RoleBinding"}, f"{doc['kind']} is cluster-wide"
        assert doc["metadata"]["namespace"] in {PIPELINE_NS, MODELS_NS, TEMPLATES_NS}


# ---------------------------------------------------------------- the image


def _containerfile_instructions() -> list[tuple[str, str]]:
    text = (K8S / "Containerfile").read_text()
    logical = re.sub(r"\\\n", " ", text)
    out = []
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_containerfile_builds_a_runtime_image_for_an_arbitrary_uid() -> None:
    instructions = _containerfile_instructions()
    keywords = {k for k, _ in instructions}
    assert keywords <= {"ARG", "FROM", "WORKDIR", "COPY", "RUN", "ENV", "USER", "LABEL", "EXPOSE", "CMD"}
    args = dict(a.split("=", 1) for k, a in instructions if k == "ARG" and "=" in a)
    assert re.search(r"ubi9/python-311|python:3\.11-slim", args["PYTHON_IMAGE"])
    final_user = [a for k, a in instructions if k == "USER"][-1]
    assert final_user.isdigit() and int(final_user) != 0, "run as a non-root numeric UID"
    env = " ".join(a for k, a in instructions if k == "ENV")
    for var in ("HOME", "DAGSTER_HOME", "HF_HOME", "XDG_CACHE_HOME"):
        match = re.search(rf"\b{var}=(\S+)", env)
        assert match and match.group(1).startswith(("/opt/app-root/", "/opt/dagster/")), var
    runs = " ".join(a for k, a in instructions if k == "RUN")
    assert "chmod -R g=u" in runs and "1001:0" in runs, "group 0 must own and be able to write what the UID writes"
    for path in ("pyproject.toml", "README.md", "pooling_pipeline"):
        assert (ROOT / path).exists()


def test_containerfile_pins_the_charts_dagster_and_cpu_torch() -> None:
    instructions = _containerfile_instructions()
    args = dict(a.split("=", 1) for k, a in instructions if k == "ARG" and "=" in a)
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = dict(d.replace(" ", "").split("==", 1) for d in deps if "==" in d)
    assert args["DAGSTER_VERSION"] == pins["dagster"] == "1.13.27"
    assert args["DAGSTER_INTEGRATIONS_VERSION"] == pins["dagster-k8s"] == "0.29.27"
    assert args["TORCH_VERSION"] == pins["torch"]
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")
    runs = " ".join(a for k, a in instructions if k == "RUN")
    for package in ("dagster-k8s", "dagster-postgres", "dagster-aws"):
        assert f'"{package}==${{DAGSTER_INTEGRATIONS_VERSION}}"' in runs
    assert '--index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"' in runs
    for dev_tool in ("pytest", "kmock", "playwright", "dagster-dg-cli", "[dev]", "-e "):
        assert dev_tool not in runs, f"{dev_tool} does not belong in the runtime image"


def test_containerfile_serves_the_same_module_as_the_chart() -> None:
    cmd = next(a for k, a in _containerfile_instructions() if k == "CMD")
    grpc_args = _values()["dagster-user-deployments"]["deployments"][0]["dagsterApiGrpcArgs"]
    assert '"-m", "pooling_pipeline.definitions"' in cmd and grpc_args[1] == "pooling_pipeline.definitions"
