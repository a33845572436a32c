"""`pooling-pipeline preflight`: what a new cluster must have before any GPU is requested.

Each check is one row (`PreflightRow`): what was checked, ok / failed / unknown, what was found, and for a
failure what to fix. Unknown is for what the caller may not read (nodes and the OpenShift AI version are
cluster-scoped; the pipeline's own service account is not granted them, a person's login usually is): it
is reported, not counted as a failure. Every permission the pipeline needs (REQUIRED_PERMISSIONS) is asked
with a SelfSubjectAccessReview, so the answer is the API server's, for the identity that runs preflight.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel

from pooling_pipeline.serving.kubernetes_target import REQUIRED_PERMISSIONS, Permission
from pooling_pipeline.serving.platform import parse_rhoai_version

CRD_VERSIONS = {"inferenceservices.serving.kserve.io": "v1beta1", "servingruntimes.serving.kserve.io": "v1alpha1"}
DSCI = ("dscinitialization.opendatahub.io", "v1", "dscinitializations")


class Status(StrEnum):
    OK = "ok"
    FAILED = "FAILED"
    UNKNOWN = "unknown"


class PreflightRow(BaseModel):
    check: str
    status: Status
    found: str
    fix: str = ""


class PreflightReport(BaseModel):
    rows: list[PreflightRow]

    @property
    def failed(self) -> list[PreflightRow]:
        return [r for r in self.rows if r.status is Status.FAILED]

    def table(self) -> str:
        header = ("check", "status", "found", "fix")
        body = [(r.check, r.status.value, r.found, r.fix) for r in self.rows]
        widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(3)]

        def line(cells: tuple[str, ...]) -> str:
            return "  ".join(str(c).ljust(w) for c, w in zip(cells[:3], widths, strict=True)) + "  " + cells[3]

        return "\n".join([line(header), line((*("-" * w for w in widths), "---")), *map(line, body)])


def _reason(exc: ApiException) -> str:
    return f"HTTP {exc.status} {exc.reason}"


def check_crds(api: k8s.ApiClient) -> list[PreflightRow]:
    rows = []
    ext = k8s.ApiextensionsV1Api(api)
    for name, version in CRD_VERSIONS.items():
        try:
            crd = api.sanitize_for_serialization(ext.read_custom_resource_definition(name))
        except ApiException as exc:
            if exc.status == 404:
                rows.append(
                    PreflightRow(
                        check=f"CRD {name}",
                        status=Status.FAILED,
                        found="not installed",
                        fix="install OpenShift AI with KServe (DataScienceCluster kserve: Managed)",
                    )
                )
            else:
                rows.append(PreflightRow(check=f"CRD {name}", status=Status.UNKNOWN, found=_reason(exc)))
            continue
        served = [v["name"] for v in crd["spec"]["versions"] if v.get("served", True)]
        ok = version in served
        rows.append(
            PreflightRow(
                check=f"CRD {name}",
                status=Status.OK if ok else Status.FAILED,
                found=f"served: {', '.join(served)}",
                fix="" if ok else f"this pipeline renders {version}: upgrade KServe / OpenShift AI",
            )
        )
    return rows


def check_platform_version(api: k8s.ApiClient, configured: str | None) -> PreflightRow:
    try:
        items = k8s.CustomObjectsApi(api).list_cluster_custom_object(*DSCI).get("items", [])
    except ApiException as exc:
        found = f"not readable ({_reason(exc)}: list dscinitializations is cluster-wide)"
        return PreflightRow(check="OpenShift AI version", status=Status.UNKNOWN, found=found)
    release = ((items[0].get("status") or {}).get("release") or {}) if items else {}
    name, version = release.get("name", ""), release.get("version", "")
    if not version:
        return PreflightRow(check="OpenShift AI version", status=Status.UNKNOWN, found="no DSCInitialization status")
    found = f"{name} {version}".strip()
    actual = parse_rhoai_version(version)
    wanted = parse_rhoai_version(configured)
    if name == "Open Data Hub":
        # ODH numbers differ from RHOAI's: only say what was found (k8s/README.md maps them).
        return PreflightRow(
            check="OpenShift AI version",
            status=Status.OK,
            found=f"{found}; POOLING_RHOAI_VERSION={configured or 'unset'}",
        )
    if wanted is None or (actual is not None and actual[:2] == wanted[:2]):
        hint = "" if wanted else f"set POOLING_RHOAI_VERSION={actual} to render this version's shape"
        return PreflightRow(check="OpenShift AI version", status=Status.OK, found=found, fix=hint)
    return PreflightRow(
        check="OpenShift AI version",
        status=Status.FAILED,
        found=f"{found}, but POOLING_RHOAI_VERSION={configured}",
        fix=f"set POOLING_RHOAI_VERSION={actual}",
    )


def check_namespace(api: k8s.ApiClient, namespace: str) -> PreflightRow:
    try:
        k8s.CoreV1Api(api).read_namespace(namespace)
    except ApiException as exc:
        if exc.status == 404:
            return PreflightRow(
                check=f"namespace {namespace}",
                status=Status.FAILED,
                found="missing",
                fix=f"create the data science project: oc new-project {namespace} (or set POOLING_NAMESPACE)",
            )
        return PreflightRow(check=f"namespace {namespace}", status=Status.UNKNOWN, found=_reason(exc))
    return PreflightRow(check=f"namespace {namespace}", status=Status.OK, found="exists")


def check_permission(api: k8s.ApiClient, perm: Permission, namespaces: dict[str, str]) -> PreflightRow:
    namespace = namespaces.get(perm.scope, "")
    resource, _, subresource = perm.resource.partition("/")
    attributes = k8s.V1ResourceAttributes(
        verb=perm.verb,
        group=perm.group,
        resource=resource,
        subresource=subresource or None,
        namespace=namespace or None,
        name=perm.resource_names[0] if perm.resource_names else None,
    )
    review = k8s.V1SelfSubjectAccessReview(spec=k8s.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes))
    what = f"{perm.verb} {perm.resource}{'.' + perm.group if perm.group else ''}"
    where = f"in {namespace}" if namespace else "cluster-wide"
    try:
        answer = api.sanitize_for_serialization(k8s.AuthorizationV1Api(api).create_self_subject_access_review(review))
    except ApiException as exc:
        return PreflightRow(check=f"may {what} {where}", status=Status.UNKNOWN, found=_reason(exc))
    allowed = bool((answer.get("status") or {}).get("allowed"))
    return PreflightRow(
        check=f"may {what} {where}",
        status=Status.OK if allowed else Status.FAILED,
        found="allowed" if allowed else "denied",
        fix=""
        if allowed
        else f"grant verb {perm.verb!r} on {perm.resource!r} (apiGroup {perm.group!r}) {where}: k8s/rbac.yaml",
    )


def check_gpu_nodes(api: k8s.ApiClient, gpu_resource: str) -> PreflightRow:
    try:
        nodes = api.sanitize_for_serialization(k8s.CoreV1Api(api).list_node()).get("items", [])
    except ApiException as exc:
        return PreflightRow(
            check=f"nodes with {gpu_resource}",
            status=Status.UNKNOWN,
            found=f"{_reason(exc)} (list nodes is cluster-wide)",
        )
    counts = {}
    for node in nodes:
        value = str(((node.get("status") or {}).get("allocatable") or {}).get(gpu_resource, "0"))
        if value.isdigit() and int(value) > 0:
            counts[node["metadata"]["name"]] = int(value)
    if not counts:
        return PreflightRow(
            check=f"nodes with {gpu_resource}",
            status=Status.FAILED,
            found=f"none of {len(nodes)} node(s) has allocatable {gpu_resource}",
            fix="install the NVIDIA GPU Operator, or set POOLING_GPU_RESOURCE to your accelerator's resource",
        )
    found = ", ".join(f"{n}: {c}" for n, c in sorted(counts.items()))
    return PreflightRow(check=f"nodes with {gpu_resource}", status=Status.OK, found=found)


def run_preflight(
    api: k8s.ApiClient,
    *,
    namespace: str,
    templates_namespace: str,
    gpu_resource: str,
    rhoai_version: str | None,
    bucket_check: Callable[[], PreflightRow] | None,
) -> PreflightReport:
    """Every check, in the order a person would fix them."""
    namespaces = {"models": namespace, "templates": templates_namespace, "cluster": ""}
    rows: list[PreflightRow] = []
    rows += check_crds(api)
    rows.append(check_platform_version(api, rhoai_version))
    rows.append(check_namespace(api, namespace))
    rows += [check_permission(api, perm, namespaces) for perm in REQUIRED_PERMISSIONS]
    rows.append(check_gpu_nodes(api, gpu_resource))
    if bucket_check is None:
        rows.append(PreflightRow(check="bucket", status=Status.UNKNOWN, found="not checked (--no-bucket)"))
    else:
        rows.append(bucket_check())
    return PreflightReport(rows=rows)


def bucket_row(bucket: str, client: Any, endpoint: str) -> PreflightRow:
    """head_bucket with the data connection's credentials (the ones the predictor pods download with)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        fix = (
            f"create bucket {bucket!r} or set POOLING_S3_BUCKET"
            if code in {"404", "NoSuchBucket"}
            else "check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (the pooling-pipeline-env Secret), AWS_ENDPOINT_URL"
        )
        return PreflightRow(check=f"bucket {bucket}", status=Status.FAILED, found=f"{code} at {endpoint}", fix=fix)
    except BotoCoreError as exc:
        return PreflightRow(
            check=f"bucket {bucket}",
            status=Status.FAILED,
            found=f"{type(exc).__name__} at {endpoint}",
            fix="check AWS_ENDPOINT_URL: it must be reachable from here and from the predictor pods",
        )
    return PreflightRow(check=f"bucket {bucket}", status=Status.OK, found=f"reachable at {endpoint}")
