"""`KubernetesTarget`: serve models on OpenShift AI through KServe, with the official `kubernetes` client.

Apply is idempotent without server-side apply: each object carries the sha256 of its desired state in
the `pooling-pipeline/spec-hash` annotation; an object whose live hash matches is left alone (no write,
no rollout), otherwise it is created or merge-patched. Then the InferenceService is polled until its
`Ready` condition is True. A crash-looping or failed predictor ends the wait early; on failure or timeout
the status conditions, pod events and last log lines (storage-initializer and vLLM) are read back and
mapped to a known cause (`serving.diagnosis`) so the error says what to fix.

Every API call goes through `_Api.call`, which checks it against `REQUIRED_PERMISSIONS` (the list that
k8s/rbac.yaml is tested against) and turns a 403 into a message naming the verb, resource and namespace.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import dagster as dg
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from pydantic import Field, SecretStr

from pooling_pipeline.serving.diagnosis import diagnose
from pooling_pipeline.serving.manifests import (
    SPEC_HASH_ANNOTATION,
    RenderSettings,
    effective_container,
    manifests_hash,
    spec_hash,
)
from pooling_pipeline.serving.target import Deployment, ModelManifests, RolloutError, RuntimeRegistration

Scope = Literal["models", "templates"]


@dataclass(frozen=True)
class Permission:
    verb: str
    group: str  # "" is the core API group
    resource: str
    scope: Scope  # "models": the model namespace; "templates": redhat-ods-applications


# Every (verb, group, resource, namespace) this module calls. k8s/rbac.yaml grants exactly these (tested).
REQUIRED_PERMISSIONS: tuple[Permission, ...] = (
    *(Permission(v, "template.openshift.io", "templates", "templates") for v in ("get", "create", "patch")),
    *(Permission(v, "serving.kserve.io", "servingruntimes", "models") for v in ("get", "create", "patch")),
    *(Permission(v, "serving.kserve.io", "inferenceservices", "models") for v in ("get", "create", "patch")),
    *(Permission(v, "", "secrets", "models") for v in ("get", "create", "patch")),
    *(Permission(v, "route.openshift.io", "routes", "models") for v in ("get", "create", "patch")),
    Permission("list", "", "pods", "models"),
    Permission("get", "", "pods/log", "models"),
    Permission("list", "", "events", "models"),
)



def permission_rules(scope: Scope) -> list[dict[str, list[str]]]:
    """REQUIRED_PERMISSIONS of one scope as RBAC Role rules (what k8s/rbac.yaml must grant, and no more)."""
    grouped: dict[tuple[str, str], set[str]] = {}
    for perm in REQUIRED_PERMISSIONS:
        if perm.scope == scope:
            grouped.setdefault((perm.group, perm.resource), set()).add(perm.verb)
    return [{"apiGroups": [group], "resources": [resource], "verbs": sorted(verbs)}
            for (group, resource), verbs in sorted(grouped.items())]


# kind -> (group, version, plural) for the custom objects we apply.
_CUSTOM_KINDS: dict[str, tuple[str, str, str]] = {
    "Template": ("template.openshift.io", "v1", "templates"),
    "ServingRuntime": ("serving.kserve.io", "v1alpha1", "servingruntimes"),
    "InferenceService": ("serving.kserve.io", "v1beta1", "inferenceservices"),
    "Route": ("route.openshift.io", "v1", "routes"),
}
_ISVC = _CUSTOM_KINDS["InferenceService"]
# Waiting reasons that will not fix themselves by waiting.
_FATAL_WAITING = {"CrashLoopBackOff", "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerError",
                  "CreateContainerConfigError", "RunContainerError"}


class ClusterPermissionError(RolloutError):
    """The service account lacks a permission (HTTP 403)."""


def _resource_label(group: str, resource: str) -> str:
    return f"{resource}.{group}" if group else resource


class _Api:
    """The kubernetes client APIs plus the permission bookkeeping and 403 translation."""

    def __init__(self, api_client: k8s.ApiClient, namespaces: dict[Scope, str]) -> None:
        self.client = api_client
        self.custom = k8s.CustomObjectsApi(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.namespaces = namespaces

    def scope_of(self, namespace: str) -> Scope:
        return "templates" if namespace == self.namespaces["templates"] and namespace != self.namespaces["models"] \
            else "models"

    def call(self, verb: str, group: str, resource: str, namespace: str, fn: Callable[..., Any], *a: Any, **kw: Any):
        perm = Permission(verb, group, resource, self.scope_of(namespace))
        if perm not in REQUIRED_PERMISSIONS:  # a code path outgrew the RBAC list: fail in tests, not in prod
            raise AssertionError(f"{perm} is not in REQUIRED_PERMISSIONS: add it there and to k8s/rbac.yaml")
        try:
            return fn(*a, **kw)
        except ApiException as exc:
            if exc.status == 403:
                what = _resource_label(group, resource)
                raise ClusterPermissionError(
                    f"forbidden: cannot {verb} {what} in namespace {namespace!r}. Grant the pipeline's service "
                    f"account verb {verb!r} on resource {resource!r} (apiGroup {group!r}) in {namespace!r} "
                    f"(k8s/rbac.yaml), then re-run",
                    diagnosis="rbac_forbidden",
                    evidence=str(exc.body or exc.reason)[:500],
                ) from exc
            raise

    def to_dict(self, obj: Any) -> dict[str, Any]:
        return obj if isinstance(obj, dict) else self.client.sanitize_for_serialization(obj)


class KubernetesTarget(dg.ConfigurableResource):
    """ServingTarget on an OpenShift AI cluster (KServe RawDeployment), via kubeconfig or in-cluster config."""

    kubeconfig: str | None = Field(None, description="path to a kubeconfig; None: $KUBECONFIG or ~/.kube/config")
    context: str | None = None
    in_cluster: bool = Field(False, description="use the pod's service account (run pods on the cluster)")
    namespace: str = "pooling-models"
    templates_namespace: str = "redhat-ods-applications"
    vllm_image: str = "docker.io/vllm/vllm-openai"
    vllm_image_tag: str = "v{version}"
    gpu_resource_name: str = "nvidia.com/gpu"
    gpu_memory_utilization: float = 0.3
    data_connection_name: str = "pooling-models-s3"
    s3_endpoint: str = "https://s3.amazonaws.com"
    s3_bucket: str = "pooling-models"
    s3_region: str = "us-east-1"
    # Credentials for the data-connection Secret; pass them as dg.EnvVar so they stay out of run config.
    s3_access_key_id: str = Field("", repr=False)
    s3_secret_access_key: str = Field("", repr=False)
    route_enabled: bool = True
    ready_timeout_s: float = 900
    poll_interval_s: float = 5
    log_tail_lines: int = 40

    @property
    def target_name(self) -> str:
        return "cluster"

    def render_settings(self) -> RenderSettings:
        """The rendering knobs this cluster needs (the assets render with these)."""
        return RenderSettings(
            namespace=self.namespace,
            templates_namespace=self.templates_namespace,
            vllm_image=self.vllm_image,
            vllm_image_tag=self.vllm_image_tag,
            gpu_resource_name=self.gpu_resource_name,
            gpu_memory_utilization=self.gpu_memory_utilization,
            data_connection_name=self.data_connection_name,
            s3_endpoint=self.s3_endpoint,
            s3_bucket=self.s3_bucket,
            s3_region=self.s3_region,
            s3_access_key_id=SecretStr(self.s3_access_key_id),
            s3_secret_access_key=SecretStr(self.s3_secret_access_key),
            route_enabled=self.route_enabled,
        )

    # ------------------------------------------------------------ client

    def _api(self) -> _Api:
        if self.in_cluster:
            configuration = k8s.Configuration()
            k8s_config.load_incluster_config(client_configuration=configuration)
            api_client = k8s.ApiClient(configuration)
        else:
            api_client = k8s_config.new_client_from_config(config_file=self.kubeconfig, context=self.context)
        return _Api(api_client, {"models": self.namespace, "templates": self.templates_namespace})

    # ------------------------------------------------------------ apply

    def _get(self, api: _Api, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            if kind == "Secret":
                obj = api.call("get", "", "secrets", namespace, api.core.read_namespaced_secret, name, namespace)
            else:
                group, version, plural = _CUSTOM_KINDS[kind]
                obj = api.call("get", group, plural, namespace, api.custom.get_namespaced_custom_object,
                               group, version, namespace, plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return api.to_dict(obj)

    def _apply(self, api: _Api, desired: dict[str, Any], namespace: str) -> tuple[bool, dict[str, Any]]:
        """Create or patch `desired` in `namespace` unless the live object already has its hash.

        Returns (changed, live object).
        """
        obj = copy.deepcopy(desired)
        obj.setdefault("metadata", {})["namespace"] = namespace
        digest = spec_hash(obj)
        obj["metadata"].setdefault("annotations", {})[SPEC_HASH_ANNOTATION] = digest
        kind, name = obj["kind"], obj["metadata"]["name"]
        live = self._get(api, kind, namespace, name)
        if kind == "Secret" and live is not None:
            live = {"kind": "Secret", "metadata": live.get("metadata", {})}  # values never leave this method
        if live is not None and (live.get("metadata", {}).get("annotations") or {}).get(SPEC_HASH_ANNOTATION) == digest:
            return False, live
        if kind == "Secret":
            if live is None:
                result = api.call("create", "", "secrets", namespace, api.core.create_namespaced_secret, namespace, obj)
            else:
                result = api.call("patch", "", "secrets", namespace, api.core.patch_namespaced_secret,
                                  name, namespace, obj)
            # Never keep the Secret's values around (they would end up in logs or metadata).
            return True, {"kind": "Secret", "metadata": api.to_dict(result).get("metadata", {})}
        group, version, plural = _CUSTOM_KINDS[kind]
        if live is None:
            result = api.call("create", group, plural, namespace, api.custom.create_namespaced_custom_object,
                              group, version, namespace, plural, obj)
        else:
            # A merge patch replaces lists (args, env) wholesale: exactly the desired state for those fields.
            result = api.call("patch", group, plural, namespace, api.custom.patch_namespaced_custom_object,
                              group, version, namespace, plural, name, obj,
                              _content_type="application/merge-patch+json")
        return True, api.to_dict(result)

    # ------------------------------------------------------------ ServingTarget

    def register_runtimes(self, templates: list[dict[str, Any]], vllm_version: str) -> RuntimeRegistration:
        """Apply the Templates (dashboard) and their ServingRuntimes (what InferenceServices run on)."""
        api = self._api()
        changed: dict[str, bool] = {}
        runtimes: list[str] = []
        image = ""
        for template in templates:
            applied, _ = self._apply(api, template, self.templates_namespace)
            changed[f"Template/{template['metadata']['name']}"] = applied
            for runtime in template.get("objects", []):
                applied, _ = self._apply(api, runtime, self.namespace)
                changed[f"ServingRuntime/{runtime['metadata']['name']}"] = applied
                runtimes.append(runtime["metadata"]["name"])
                image = runtime["spec"]["containers"][0]["image"]
        return RuntimeRegistration(
            vllm_version=vllm_version,
            target=self.target_name,
            templates=[t["metadata"]["name"] for t in templates],
            runtimes=runtimes,
            image=image,
            details={"changed": changed, "namespace": self.namespace, "templates_namespace": self.templates_namespace},
        )

    def deploy(self, manifests: ModelManifests, *, vllm_version: str) -> Deployment:
        api = self._api()
        started = time.monotonic()
        changed: dict[str, bool] = {}
        route: dict[str, Any] | None = None
        for obj in (manifests.data_connection, manifests.serving_runtime, manifests.inference_service,
                    manifests.route):
            if obj is not None:
                applied, live = self._apply(api, obj, self.namespace)
                changed[f"{obj['kind']}/{obj['metadata']['name']}"] = applied
                if obj["kind"] == "Route":
                    route = live
        isvc_applied = changed[f"InferenceService/{manifests.inference_service['metadata']['name']}"]
        any_applied = any(changed.values())
        isvc = self._wait_ready(api, manifests.inference_service["metadata"]["name"], fresh=isvc_applied)
        cold_start = round(time.monotonic() - started, 1) if any_applied else None
        container = effective_container(manifests)
        name = manifests.inference_service["metadata"]["name"]
        default_url = f"http://{name}-predictor.{self.namespace}.svc.cluster.local"
        internal = (isvc.get("status") or {}).get("url") or default_url
        route_url = None
        if manifests.route is not None:
            ingress = ((route or {}).get("status") or {}).get("ingress") or []
            host = (ingress[0].get("host") if ingress else None) or (route or {}).get("spec", {}).get("host")
            route_url = f"https://{host}" if host else None
        url = internal if (self.in_cluster or route_url is None) else route_url
        return Deployment(
            model=manifests.model,
            target=self.target_name,
            url=url.rstrip("/"),
            served_model_name=container.served_model_name,
            ready=True,
            cold_start_s=cold_start,
            applied=any_applied,
            spec_hash=manifests_hash(manifests),
            image=container.image,
            command=container.command,
            args=container.args,
            vllm_version=vllm_version,
            details={"namespace": self.namespace, "changed": changed, "internal_url": internal,
                     "route_url": route_url},
        )

    # ------------------------------------------------------------ waiting and diagnosis

    def _wait_ready(self, api: _Api, name: str, *, fresh: bool) -> dict[str, Any]:
        group, version, plural = _ISVC
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            isvc = api.to_dict(api.call("get", group, plural, self.namespace, api.custom.get_namespaced_custom_object,
                                        group, version, self.namespace, plural, name))
            if _is_ready(isvc):
                return isvc
            pods = self._pods(api, name)
            fatal = _fatal_reason(isvc, pods)
            if fatal is not None:
                raise self._rollout_error(api, name, isvc, pods, f"InferenceService {name} failed: {fatal}")
            if time.monotonic() >= deadline:
                raise self._rollout_error(
                    api, name, isvc, pods,
                    f"InferenceService {name} not Ready after {self.ready_timeout_s:.0f} s "
                    f"(ready_timeout_s; fresh apply: {fresh})",
                )
            time.sleep(self.poll_interval_s)

    def _pods(self, api: _Api, name: str) -> list[dict[str, Any]]:
        selector = f"serving.kserve.io/inferenceservice={name}"
        result = api.call("list", "", "pods", self.namespace, api.core.list_namespaced_pod, self.namespace,
                          label_selector=selector)
        pods = [api.to_dict(p) for p in api.to_dict(result).get("items", [])]
        # Servers that ignore the selector (or a stale cache) must not mix other models' pods in.
        return [p for p in pods if (p.get("metadata", {}).get("labels") or {}).get(
            "serving.kserve.io/inferenceservice") == name]

    def _rollout_error(self, api: _Api, name: str, isvc: dict[str, Any], pods: list[dict[str, Any]],
                       headline: str) -> RolloutError:
        lines: list[str] = []
        status = isvc.get("status") or {}
        for cond in status.get("conditions") or []:
            lines.append(f"condition {cond.get('type')}={cond.get('status')} {cond.get('reason') or ''}: "
                         f"{cond.get('message') or ''}")
        failure = (status.get("modelStatus") or {}).get("lastFailureInfo") or {}
        if failure:
            lines.append(f"modelStatus.lastFailureInfo {failure.get('reason', '')}: {failure.get('message', '')}")
        for pod in pods:
            pod_name = pod["metadata"]["name"]
            lines.extend(f"event {e}" for e in self._events(api, pod_name))
            statuses = (pod.get("status") or {}).get("initContainerStatuses") or []
            statuses += (pod.get("status") or {}).get("containerStatuses") or []
            for cs in statuses:
                state, last = _state_text(cs.get("state") or {}), _state_text(cs.get("lastState") or {})
                lines.append(f"container {cs.get('name')} restarts={cs.get('restartCount', 0)} state={state} last={last}")
                lines.extend(f"log {cs.get('name')}: {line}" for line in self._logs(api, pod_name, cs))
        diagnosis = diagnose(lines)
        message = headline
        if diagnosis is not None:
            message += f". Diagnosis: {diagnosis.message()}"
        else:
            message += ". No known cause recognised; read the evidence below (conditions, events, logs)"
        evidence = "\n".join(lines[-200:])
        return RolloutError(f"{message}\n{evidence}", diagnosis=diagnosis.cause if diagnosis else None,
                            evidence=evidence)

    def _events(self, api: _Api, pod_name: str) -> list[str]:
        result = api.call("list", "", "events", self.namespace, api.core.list_namespaced_event, self.namespace,
                          field_selector=f"involvedObject.name={pod_name}")
        out = []
        for event in api.to_dict(result).get("items", []):
            if (event.get("involvedObject") or {}).get("name") == pod_name:
                out.append(f"{event.get('type', '')} {event.get('reason', '')}: {event.get('message', '')}")
        return out

    def _logs(self, api: _Api, pod_name: str, container_status: dict[str, Any]) -> list[str]:
        container = container_status.get("name")
        # A crashed container's useful lines are in the previous instance's log.
        previous = bool(container_status.get("restartCount")) and "running" in (container_status.get("state") or {})
        try:
            text = api.call("get", "", "pods/log", self.namespace, api.core.read_namespaced_pod_log, pod_name,
                            self.namespace, container=container, tail_lines=self.log_tail_lines, previous=previous)
        except ApiException:  # not started yet, or already gone: the other evidence still counts
            return []
        return [line for line in str(text).splitlines() if line.strip()][-self.log_tail_lines:]


def _is_ready(isvc: dict[str, Any]) -> bool:
    status = isvc.get("status") or {}
    generation = (isvc.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and observed < generation:
        return False  # the Ready condition still describes the previous spec
    return any(c.get("type") == "Ready" and str(c.get("status")) == "True" for c in status.get("conditions") or [])


def _state_text(state: dict[str, Any]) -> str:
    for key in ("waiting", "terminated", "running"):
        if key in state and state[key] is not None:
            detail = state[key]
            return f"{key}({detail.get('reason') or ''} {detail.get('exitCode', '')} {detail.get('message') or ''})"
    return "-"


def _fatal_reason(isvc: dict[str, Any], pods: list[dict[str, Any]]) -> str | None:
    """A failure that waiting will not fix (so the asset fails now, not after ready_timeout_s)."""
    model_status = (isvc.get("status") or {}).get("modelStatus") or {}
    if (model_status.get("states") or {}).get("targetModelState") == "FailedToLoad":
        return "model failed to load (modelStatus FailedToLoad)"
    for pod in pods:
        status = pod.get("status") or {}
        for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in _FATAL_WAITING:
                return f"container {cs.get('name')} {waiting.get('reason')}"
            terminated = (cs.get("state") or {}).get("terminated") or {}
            if terminated and terminated.get("exitCode") not in (None, 0) and cs.get("restartCount", 0) >= 1:
                return f"container {cs.get('name')} exited {terminated.get('exitCode')} and restarted"
    return None
