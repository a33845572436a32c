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
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import dagster as dg
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from pydantic import Field, SecretStr

from pooling_pipeline.catalog import ModelKind
from pooling_pipeline.resources.config import load_settings
from pooling_pipeline.serving.crd_validation import CrdSource, default_source, packaged_source, schemas_from_crds
from pooling_pipeline.serving.diagnosis import diagnose
from pooling_pipeline.serving.manifests import (
    AUTH_PROXY_PORT,
    CONTAINER_PORT,
    REMOVABLE,
    SPEC_HASH_ANNOTATION,
    STOP_ANNOTATION,
    RenderOptions,
    RenderSettings,
    effective_container,
    manifests_hash,
    runtime_name,
    spec_hash,
    versioned_runtime_name,
)
from pooling_pipeline.serving.platform import supports_stop
from pooling_pipeline.serving.runtimes import (
    PromotionError,
    previous_of,
    promoted_of,
    release_record,
    user_facing_template,
)
from pooling_pipeline.serving.target import (
    Deployment,
    EndpointAuth,
    ModelManifests,
    PromotionRecord,
    ReleaseAction,
    ReleaseRecord,
    RolloutError,
    RuntimeRegistration,
)

Scope = Literal["models", "templates", "cluster"]


@dataclass(frozen=True)
class Permission:
    verb: str
    group: str  # "" is the core API group
    resource: str
    scope: Scope  # "models": the model namespace; "templates": redhat-ods-applications; "cluster": cluster-scoped
    resource_names: tuple[str, ...] = ()  # the RBAC rule is limited to these names (empty: any)


def _crud(group: str, resource: str, scope: Scope, verbs: tuple[str, ...] = ("get", "create", "patch")):
    return tuple(Permission(v, group, resource, scope) for v in verbs)


# Cluster-scoped, read-only, by name: the KServe CRDs the manifests are validated against (crd_source.py).
KSERVE_CRD_NAMES = ("inferenceservices.serving.kserve.io", "servingruntimes.serving.kserve.io")

# Every (verb, group, resource, namespace) the pipeline's service account calls. k8s/rbac.yaml grants exactly
# these (tested); preflight checks each with a SelfSubjectAccessReview.
REQUIRED_PERMISSIONS: tuple[Permission, ...] = (
    *_crud("template.openshift.io", "templates", "templates"),
    *_crud("serving.kserve.io", "servingruntimes", "models"),
    # delete: `release` frees the GPU of a validated model (or stops it, a patch, where the platform can).
    *_crud("serving.kserve.io", "inferenceservices", "models", ("get", "create", "patch", "delete")),
    *_crud("", "secrets", "models"),
    *_crud("route.openshift.io", "routes", "models"),
    # Token authentication: the dashboard-like identity each model's clients use (render_auth_objects).
    *_crud("", "serviceaccounts", "models"),
    *_crud("rbac.authorization.k8s.io", "roles", "models"),
    *_crud("rbac.authorization.k8s.io", "rolebindings", "models"),
    Permission("list", "", "pods", "models"),
    Permission("get", "", "pods/log", "models"),
    Permission("list", "", "events", "models"),
    Permission("get", "apiextensions.k8s.io", "customresourcedefinitions", "cluster", KSERVE_CRD_NAMES),
)


def permission_rules(scope: Scope) -> list[dict[str, list[str]]]:
    """REQUIRED_PERMISSIONS of one scope as RBAC rules (what k8s/rbac.yaml must grant, and no more)."""
    grouped: dict[tuple[str, str, tuple[str, ...]], set[str]] = {}
    for perm in REQUIRED_PERMISSIONS:
        if perm.scope == scope:
            grouped.setdefault((perm.group, perm.resource, perm.resource_names), set()).add(perm.verb)
    rules: list[dict[str, list[str]]] = []
    for (group, resource, names), verbs in sorted(grouped.items()):
        rule = {"apiGroups": [group], "resources": [resource], "verbs": sorted(verbs)}
        if names:
            rule["resourceNames"] = list(names)
        rules.append(rule)
    return rules


# kind -> (group, version, plural) for the custom objects we apply.
_CUSTOM_KINDS: dict[str, tuple[str, str, str]] = {
    "Template": ("template.openshift.io", "v1", "templates"),
    "ServingRuntime": ("serving.kserve.io", "v1alpha1", "servingruntimes"),
    "InferenceService": ("serving.kserve.io", "v1beta1", "inferenceservices"),
    "Route": ("route.openshift.io", "v1", "routes"),
}
# kind -> (api attribute, group, plural, method suffix) for the typed (built-in) kinds we apply.
_TYPED_KINDS: dict[str, tuple[str, str, str, str]] = {
    "Secret": ("core", "", "secrets", "secret"),
    "ServiceAccount": ("core", "", "serviceaccounts", "service_account"),
    "Role": ("rbac", "rbac.authorization.k8s.io", "roles", "role"),
    "RoleBinding": ("rbac", "rbac.authorization.k8s.io", "rolebindings", "role_binding"),
}
_ISVC = _CUSTOM_KINDS["InferenceService"]
_TEMPLATE = _CUSTOM_KINDS["Template"]
# Server-set metadata that must not travel when a live object is copied into another (promote).
_SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation", "selfLink")
# Waiting reasons that will not fix themselves by waiting.
_FATAL_WAITING = {
    "CrashLoopBackOff",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerError",
    "CreateContainerConfigError",
    "RunContainerError",
}
# In-cluster https endpoints (token auth) present the OpenShift service-serving certificate; pods get its CA here.
SERVICE_CA_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/service-ca.crt"


class ClusterPermissionError(RolloutError):
    """The service account lacks a permission (HTTP 403)."""


class ClusterApiError(RolloutError):
    """The API server answered an error other than 403 and 404 (`status`: its HTTP status)."""

    def __init__(self, message: str, *, status: int, diagnosis: str | None = None, evidence: str = "") -> None:
        super().__init__(message, diagnosis=diagnosis, evidence=evidence)
        self.status = status

    @property
    def transient(self) -> bool:
        """An overloaded or restarting API server (etcd leader change, throttling): asking again may work."""
        return self.status == 429 or self.status >= 500


# plural -> kind, so an API error names the object as the manifests do.
_KIND_OF_PLURAL = {
    **{plural: kind for kind, (_, _, plural) in _CUSTOM_KINDS.items()},
    **{plural: kind for kind, (_, _, plural, _) in _TYPED_KINDS.items()},
}
# Reads are idempotent: a transient API error is retried this often (with a short backoff) before it counts.
_READ_RETRIES = 2
_READ_BACKOFF_S = 0.5


def _resource_label(group: str, resource: str) -> str:
    return f"{resource}.{group}" if group else resource


def _api_message(exc: ApiException) -> str:
    """The Status message of an API error; never the response headers `str(ApiException)` carries."""
    try:
        body = json.loads(exc.body) if exc.body else {}
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.reason or "")[:500]


def _api_fix(status: int) -> str:
    if status == 401:
        return (
            "the cluster rejected the credentials (an expired token?): log in again (oc login) or refresh the "
            "kubeconfig, or the pod's service-account token, then re-run"
        )
    if status == 409:
        return "another writer changed or created the object meanwhile: re-run (the apply is idempotent)"
    if status in (400, 422):
        return (
            "the API server or an admission webhook rejected the object: change what the message names "
            "(catalog entry or render settings) and re-run"
        )
    if status == 429 or status >= 500:
        return "the API server failed or is overloaded: re-run later; if it persists, check the API server and etcd"
    return "read the API server's message above, fix the cause and re-run"


class _Api:
    """The kubernetes client APIs plus the permission bookkeeping and 403 translation."""

    def __init__(self, api_client: k8s.ApiClient, namespaces: dict[str, str]) -> None:
        self.client = api_client
        self.custom = k8s.CustomObjectsApi(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.rbac = k8s.RbacAuthorizationV1Api(api_client)
        self.apiext = k8s.ApiextensionsV1Api(api_client)
        self.namespaces = namespaces

    def scope_of(self, namespace: str) -> Scope:
        if not namespace:
            return "cluster"
        return (
            "templates"
            if namespace == self.namespaces["templates"] and namespace != self.namespaces["models"]
            else "models"
        )

    def call(
        self,
        verb: str,
        group: str,
        resource: str,
        namespace: str,
        fn: Callable[..., Any],
        *a: Any,
        subject: str = "",
        **kw: Any,
    ):
        """`fn(*a, **kw)`; a 403 becomes ClusterPermissionError, any other error but 404 (which callers
        handle) ClusterApiError naming `subject` (the object's name). Transient read errors are retried."""
        scope = self.scope_of(namespace)
        wanted = (verb, group, resource, scope)
        if not any((p.verb, p.group, p.resource, p.scope) == wanted for p in REQUIRED_PERMISSIONS):
            # a code path outgrew the RBAC list: fail in tests, not in prod
            raise AssertionError(
                f"{Permission(verb, group, resource, scope)} is not in REQUIRED_PERMISSIONS: add it there and to "
                "k8s/rbac.yaml"
            )
        for attempt in range(_READ_RETRIES + 1):
            try:
                return fn(*a, **kw)
            except ApiException as exc:
                error = self._translate(exc, verb, group, resource, namespace, subject)
                if error is None:
                    raise
                retry = verb in ("get", "list") and isinstance(error, ClusterApiError) and error.transient
                if not retry or attempt == _READ_RETRIES:
                    raise error from exc
            time.sleep(_READ_BACKOFF_S * (attempt + 1))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _translate(
        self, exc: ApiException, verb: str, group: str, resource: str, namespace: str, subject: str
    ) -> RolloutError | None:
        where = f"in namespace {namespace!r}" if namespace else "cluster-wide"
        if exc.status == 403:
            what = _resource_label(group, resource)
            return ClusterPermissionError(
                f"forbidden: cannot {verb} {what} {where}. Grant the pipeline's service "
                f"account verb {verb!r} on resource {resource!r} (apiGroup {group!r}) {where} "
                f"(k8s/rbac.yaml), then re-run",
                diagnosis="rbac_forbidden",
                evidence=str(exc.body or exc.reason)[:500],
            )
        if exc.status in (None, 404):  # not found: the callers' business; no status: not an API answer
            return None
        kind = _KIND_OF_PLURAL.get(resource, _resource_label(group, resource))
        detail = _api_message(exc)
        obj = f"{kind} {subject!r}" if subject else kind
        return ClusterApiError(
            f"cannot {verb} {obj} {where}: HTTP {exc.status} {exc.reason or ''}: {detail}. Fix: {_api_fix(exc.status)}",
            status=int(exc.status),
            evidence=detail,
        )

    def to_dict(self, obj: Any) -> dict[str, Any]:
        return obj if isinstance(obj, dict) else self.client.sanitize_for_serialization(obj)


def _with_removals(kind: str, desired: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """`desired` plus explicit nulls for the keys the pipeline used to write (REMOVABLE) that it no longer
    wants, so a merge patch removes them (a shape or auth switch change, a stopped model started again)."""
    patch = copy.deepcopy(desired)
    for path, keys in REMOVABLE.get(kind, {}).items():
        live_part: Any = live
        want: Any = patch
        for step in path:
            live_part = (live_part or {}).get(step) if isinstance(live_part, dict) else None
            want = want.setdefault(step, {})
        for key in keys:
            if isinstance(live_part, dict) and key in live_part and key not in want:
                want[key] = None
    return patch


def _strip_server_fields(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    meta = out.setdefault("metadata", {})
    for key in _SERVER_FIELDS:
        meta.pop(key, None)
    (meta.get("annotations") or {}).pop(SPEC_HASH_ANNOTATION, None)
    out.pop("status", None)
    return out


class RenderConfig(dg.Config, RenderOptions):
    """RenderOptions as Dagster config: the cluster's rendering knobs, shown in the UI (no credentials)."""


class KubernetesTarget(dg.ConfigurableResource):
    """ServingTarget on an OpenShift AI cluster (KServe RawDeployment), via kubeconfig or in-cluster config."""

    kubeconfig: str | None = Field(None, description="path to a kubeconfig; None: $KUBECONFIG or ~/.kube/config")
    context: str | None = None
    in_cluster: bool = Field(False, description="use the pod's service account (run pods on the cluster)")
    render: RenderConfig = Field(default_factory=RenderConfig, description="namespace, image, GPU, data connection")
    # Credentials for the data-connection Secret; pass them as dg.EnvVar so they stay out of run config.
    s3_access_key_id: str = Field("", repr=False)
    s3_secret_access_key: str = Field("", repr=False)
    ready_timeout_s: float = 900
    poll_interval_s: float = 5
    log_tail_lines: int = 40
    service_ca_file: str = SERVICE_CA_FILE  # CA of the in-cluster https (token auth) endpoints

    @property
    def target_name(self) -> str:
        return "cluster"

    @property
    def namespace(self) -> str:
        return self.render.namespace

    @property
    def templates_namespace(self) -> str:
        return self.render.templates_namespace

    def render_settings(self) -> RenderSettings:
        """The rendering knobs this cluster needs (the assets render with these)."""
        return RenderSettings(
            **self.render.model_dump(),
            s3_access_key_id=SecretStr(self.s3_access_key_id),
            s3_secret_access_key=SecretStr(self.s3_secret_access_key),
        )

    # ------------------------------------------------------------ client

    def api_client(self) -> k8s.ApiClient:
        """The kubernetes client as configured (kubeconfig or the pod's service account)."""
        if self.in_cluster:
            configuration = k8s.Configuration()
            k8s_config.load_incluster_config(client_configuration=configuration)
            return k8s.ApiClient(configuration)
        return k8s_config.new_client_from_config(config_file=self.kubeconfig, context=self.context)

    def _api(self) -> _Api:
        return _Api(self.api_client(), {"models": self.namespace, "templates": self.templates_namespace})

    def crd_source(self) -> CrdSource:
        """The cluster's own KServe CRDs (what its API server validates against); the packaged ones, with the
        reason in the origin, when they cannot be read (no `get customresourcedefinitions` grant, no cluster)."""
        if load_settings().kserve_crds is not None:
            return default_source()
        api = self._api()
        docs = []
        try:
            for name in KSERVE_CRD_NAMES:
                crd = api.call(
                    "get",
                    "apiextensions.k8s.io",
                    "customresourcedefinitions",
                    "",
                    api.apiext.read_custom_resource_definition,
                    name,
                    subject=name,
                )
                docs.append(api.to_dict(crd))
        except (ApiException, RolloutError, OSError) as exc:  # RolloutError: 403 and other API errors
            packaged = packaged_source()
            why = f"the cluster's CRDs could not be read ({str(exc).splitlines()[0][:160]})"
            return CrdSource(packaged.schemas, f"{packaged.origin}; {why}")
        return CrdSource(schemas_from_crds(docs), f"the cluster's CRDs ({', '.join(KSERVE_CRD_NAMES)})")

    # ------------------------------------------------------------ apply

    def _typed(self, api: _Api, kind: str, action: str) -> tuple[str, str, Callable[..., Any]]:
        attr, group, plural, suffix = _TYPED_KINDS[kind]
        return group, plural, getattr(getattr(api, attr), f"{action}_namespaced_{suffix}")

    def _get(self, api: _Api, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            if kind in _TYPED_KINDS:
                group, plural, fn = self._typed(api, kind, "read")
                obj = api.call("get", group, plural, namespace, fn, name, namespace, subject=name)
            else:
                group, version, plural = _CUSTOM_KINDS[kind]
                obj = api.call(
                    "get",
                    group,
                    plural,
                    namespace,
                    api.custom.get_namespaced_custom_object,
                    group,
                    version,
                    namespace,
                    plural,
                    name,
                    subject=name,
                )
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
        if live is not None:
            obj = _with_removals(kind, obj, live)
        if kind in _TYPED_KINDS:
            action = "create" if live is None else "patch"
            group, plural, fn = self._typed(api, kind, action)
            args = (namespace, obj) if live is None else (name, namespace, obj)
            result = api.to_dict(api.call(action, group, plural, namespace, fn, *args, subject=name))
            if kind == "Secret":  # never keep the Secret's values around (they would end up in logs or metadata)
                return True, {"kind": "Secret", "metadata": result.get("metadata", {})}
            return True, result
        group, version, plural = _CUSTOM_KINDS[kind]
        if live is None:
            result = api.call(
                "create",
                group,
                plural,
                namespace,
                api.custom.create_namespaced_custom_object,
                group,
                version,
                namespace,
                plural,
                obj,
                subject=name,
            )
        else:
            return True, self._patch_custom(api, kind, name, obj, namespace)
        return True, api.to_dict(result)

    def _patch_custom(
        self, api: _Api, kind: str, name: str, body: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        """Merge-patch a custom object: it replaces lists (args, env) wholesale, exactly the desired state."""
        group, version, plural = _CUSTOM_KINDS[kind]
        namespace = namespace or (self.templates_namespace if kind == "Template" else self.namespace)
        return api.to_dict(
            api.call(
                "patch",
                group,
                plural,
                namespace,
                api.custom.patch_namespaced_custom_object,
                group,
                version,
                namespace,
                plural,
                name,
                body,
                _content_type="application/merge-patch+json",
                subject=name,
            )
        )

    # ------------------------------------------------------------ ServingTarget

    def register_runtimes(self, templates: list[dict[str, Any]], vllm_version: str) -> RuntimeRegistration:
        """Apply one release's version-named Templates and their ServingRuntimes (what its validation
        InferenceServices run on). The user-facing Templates are not touched: that is `promote`'s job."""
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
        held_since = time.time()
        started = time.monotonic()
        changed: dict[str, bool] = {}
        route: dict[str, Any] | None = None
        objects = (manifests.data_connection, manifests.serving_runtime, *manifests.auth, manifests.inference_service)
        for obj in (*objects, manifests.route):
            if obj is not None:
                applied, live = self._apply(api, obj, self.namespace)
                changed[f"{obj['kind']}/{obj['metadata']['name']}"] = applied
                if obj["kind"] == "Route":
                    route = live
        name = manifests.inference_service["metadata"]["name"]
        isvc_applied = changed[f"InferenceService/{name}"]
        any_applied = any(changed.values())
        self._wait_ready(api, name, fresh=isvc_applied)
        cold_start = round(time.monotonic() - started, 1) if any_applied else None
        container = effective_container(manifests)
        auth = self.render.endpoint_auth
        # The headless `-predictor` Service resolves to the pod IPs, so its 80 -> 8080 mapping does not apply:
        # call the pod port (vLLM's 8080, or the auth proxy's 8443). status.url leaves the port out before
        # RHOAI/ODH 3.4 (RHOAIENG-39715), so it is not used.
        internal = (
            f"https://{name}-predictor.{self.namespace}.svc.cluster.local:{AUTH_PROXY_PORT}"
            if auth
            else f"http://{name}-predictor.{self.namespace}.svc.cluster.local:{CONTAINER_PORT}"
        )
        route_url = None
        if manifests.route is not None:
            ingress = ((route or {}).get("status") or {}).get("ingress") or []
            host = (ingress[0].get("host") if ingress else None) or (route or {}).get("spec", {}).get("host")
            route_url = f"https://{host}" if host else None
        url = internal if (self.in_cluster or route_url is None) else route_url
        endpoint_auth = None
        if auth:
            token_secret = next(o for o in manifests.auth if o["kind"] == "Secret")["metadata"]["name"]
            endpoint_auth = EndpointAuth(
                source="secret",
                namespace=self.namespace,
                secret_name=token_secret,
                ca_bundle=self.service_ca_file if url == internal else None,
            )
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
            details={
                "namespace": self.namespace,
                "inference_service": name,
                "changed": changed,
                "internal_url": internal,
                "route_url": route_url,
            },
            auth=endpoint_auth,
            held_since=held_since,
            gpus=manifests.gpus,
        )

    def release(self, deployment: Deployment) -> ReleaseRecord:
        """Free the validation InferenceService's GPU: `serving.kserve.io/stop` where the platform has it
        (RHOAI >= 2.22: the pods go, the object and its URL stay for the dashboard), else delete it.

        Either way our spec-hash annotation goes with it, so the next `deploy` re-applies and starts it again.
        """
        api = self._api()
        name = str(deployment.details.get("inference_service") or deployment.served_model_name)
        group, version, plural = _ISVC
        released_at = time.time()
        if self._get(api, "InferenceService", self.namespace, name) is None:
            action = ReleaseAction.ABSENT
        elif supports_stop(self.render.platform_version):
            self._patch_custom(
                api,
                "InferenceService",
                name,
                {"metadata": {"annotations": {STOP_ANNOTATION: "true", SPEC_HASH_ANNOTATION: None}}},
            )
            action = ReleaseAction.STOPPED
        else:
            try:
                api.call(
                    "delete",
                    group,
                    plural,
                    self.namespace,
                    api.custom.delete_namespaced_custom_object,
                    group,
                    version,
                    self.namespace,
                    plural,
                    name,
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise
            action = ReleaseAction.DELETED
        return release_record(deployment, action, released_at, {"inference_service": name, "namespace": self.namespace})

    # ------------------------------------------------------------ promotion (the user-facing Templates)

    def _template(self, api: _Api, name: str) -> dict[str, Any] | None:
        return self._get(api, "Template", self.templates_namespace, name)

    def promoted_version(self) -> str | None:
        return promoted_of([self._template(self._api(), runtime_name(kind)) for kind in ModelKind])

    def promote(self, vllm_version: str) -> PromotionRecord:
        """Copy the release's registered (validated) Templates into the user-facing ones, recording the
        promoted and the previous release in their annotations: the cluster is the record."""
        api = self._api()
        live = [self._template(api, runtime_name(kind)) for kind in ModelKind]
        current = promoted_of(live)
        previous = current if current != vllm_version else previous_of(live)  # re-promoting keeps the record
        return self._promote(api, vllm_version, previous=previous, current=current)

    def rollback(self) -> PromotionRecord:
        api = self._api()
        live = [self._template(api, runtime_name(kind)) for kind in ModelKind]
        current, previous = promoted_of(live), previous_of(live)
        if previous is None:
            raise PromotionError(
                f"nothing to roll back to: the user-facing Templates in {self.templates_namespace!r} record no "
                f"previous release (promoted: {current or 'none'}); promote a registered release instead"
            )
        return self._promote(api, previous, previous=current, current=current)

    def _promote(self, api: _Api, version: str, *, previous: str | None, current: str | None) -> PromotionRecord:
        released = []
        for kind in ModelKind:
            name = versioned_runtime_name(kind, version)
            template = self._template(api, name)
            if template is None:
                raise PromotionError(
                    f"vLLM {version} is not registered: Template {name!r} is missing in {self.templates_namespace!r}; "
                    f"materialise serving_runtime for {version} (register_runtime_job) first"
                )
            released.append(_strip_server_fields(template))
        changed: dict[str, bool] = {}
        for template in released:
            user_facing = user_facing_template(template, promoted=version, previous=previous)
            applied, _ = self._apply(api, user_facing, self.templates_namespace)
            changed[f"Template/{user_facing['metadata']['name']}"] = applied
        return PromotionRecord(
            target=self.target_name,
            promoted=version,
            previous=previous,
            templates=[runtime_name(kind) for kind in ModelKind],
            changed=current != version or any(changed.values()),
            details={"templates_namespace": self.templates_namespace, "changed": changed},
        )

    # ------------------------------------------------------------ waiting and diagnosis

    def _wait_ready(self, api: _Api, name: str, *, fresh: bool) -> dict[str, Any]:
        group, version, plural = _ISVC
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            try:
                isvc = api.to_dict(
                    api.call(
                        "get",
                        group,
                        plural,
                        self.namespace,
                        api.custom.get_namespaced_custom_object,
                        group,
                        version,
                        self.namespace,
                        plural,
                        name,
                        subject=name,
                    )
                )
                if _is_ready(isvc):
                    return isvc
                pods = self._pods(api, name)
            except ClusterApiError as exc:
                # An API server restart or etcd leader change says nothing about the model: poll on.
                if not exc.transient or time.monotonic() >= deadline:
                    raise
                time.sleep(self.poll_interval_s)
                continue
            fatal = _fatal_reason(isvc, pods)
            if fatal is not None:
                raise self._rollout_error(api, name, isvc, pods, f"InferenceService {name} failed: {fatal}")
            if time.monotonic() >= deadline:
                raise self._rollout_error(api, name, isvc, pods, self._timeout_headline(name, isvc, fresh=fresh))
            time.sleep(self.poll_interval_s)

    def _timeout_headline(self, name: str, isvc: dict[str, Any], *, fresh: bool) -> str:
        waited = f"after {self.ready_timeout_s:.0f} s (ready_timeout_s; fresh apply: {fresh})"
        stale = _stale_generation(isvc)
        if stale is not None:
            # The conditions describe the previous spec: "not Ready" beside "Ready=True" would mislead.
            observed, generation = stale
            return (
                f"InferenceService {name}: the KServe controller has not acted on the change {waited}: "
                f"status.observedGeneration {observed} is behind metadata.generation {generation}, so the status "
                "below still describes the previous spec. Check that the KServe controller is running and read its "
                "log (kserve-controller-manager in the RHOAI applications namespace), then re-run"
            )
        return f"InferenceService {name} not Ready {waited}"

    def _pods(self, api: _Api, name: str) -> list[dict[str, Any]]:
        selector = f"serving.kserve.io/inferenceservice={name}"
        result = api.call(
            "list", "", "pods", self.namespace, api.core.list_namespaced_pod, self.namespace, label_selector=selector
        )
        pods = [api.to_dict(p) for p in api.to_dict(result).get("items", [])]
        # Servers that ignore the selector (or a stale cache) must not mix other models' pods in.
        return [
            p
            for p in pods
            if (p.get("metadata", {}).get("labels") or {}).get("serving.kserve.io/inferenceservice") == name
        ]

    def _rollout_error(
        self, api: _Api, name: str, isvc: dict[str, Any], pods: list[dict[str, Any]], headline: str
    ) -> RolloutError:
        lines: list[str] = []
        status = isvc.get("status") or {}
        for cond in status.get("conditions") or []:
            lines.append(
                f"condition {cond.get('type')}={cond.get('status')} {cond.get('reason') or ''}: "
                f"{cond.get('message') or ''}"
            )
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
                lines.append(
                    f"container {cs.get('name')} restarts={cs.get('restartCount', 0)} state={state} last={last}"
                )
                lines.extend(f"log {cs.get('name')}: {line}" for line in self._logs(api, pod_name, cs))
        diagnosis = diagnose(lines)
        message = headline
        if diagnosis is not None:
            message += f". Diagnosis: {diagnosis.message()}"
        else:
            message += ". No known cause recognised; read the evidence below (conditions, events, logs)"
        evidence = "\n".join(lines[-200:])
        return RolloutError(
            f"{message}\n{evidence}", diagnosis=diagnosis.cause if diagnosis else None, evidence=evidence
        )

    def _events(self, api: _Api, pod_name: str) -> list[str]:
        result = api.call(
            "list",
            "",
            "events",
            self.namespace,
            api.core.list_namespaced_event,
            self.namespace,
            field_selector=f"involvedObject.name={pod_name}",
        )
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
            text = api.call(
                "get",
                "",
                "pods/log",
                self.namespace,
                api.core.read_namespaced_pod_log,
                pod_name,
                self.namespace,
                container=container,
                tail_lines=self.log_tail_lines,
                previous=previous,
            )
        except (ApiException, ClusterApiError):  # not started yet, already gone, API hiccup: the rest counts
            return []
        return [line for line in str(text).splitlines() if line.strip()][-self.log_tail_lines :]


def _stale_generation(isvc: dict[str, Any]) -> tuple[int, int] | None:
    """(observedGeneration, generation) while the controller has not reconciled the latest spec, else None."""
    generation = (isvc.get("metadata") or {}).get("generation")
    observed = (isvc.get("status") or {}).get("observedGeneration")
    if generation is not None and observed is not None and observed < generation:
        return int(observed), int(generation)
    return None


def _is_ready(isvc: dict[str, Any]) -> bool:
    status = isvc.get("status") or {}
    if _stale_generation(isvc) is not None:
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
