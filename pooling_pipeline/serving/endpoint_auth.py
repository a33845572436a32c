"""The one place every client gets a model endpoint's credentials from: `request_headers(deployment)`.

A `Deployment` records where its bearer token lives (`Deployment.auth`, an `EndpointAuth`), never the
token. On a cluster it is the dashboard-like token Secret of the model (`<isvc>-sa-token`, filled by the
ServiceAccount token controller; the identity may `get` only that InferenceService, which is what
oauth-proxy / kube-rbac-proxy check); locally it is the generated vLLM API key file (mode 0600). The
quality clients, the API probe, the load generator and the /metrics scrape all call `request_headers`
and, for https in-cluster endpoints, `tls_verify`.

A 401 or 403 from an endpoint is explained by `auth_failure_hint`, which names the setting.
"""

from __future__ import annotations

import time
from pathlib import Path

from pooling_pipeline.serving.target import AUTH_SETTING, Deployment, EndpointAuth


class EndpointAuthError(RuntimeError):
    """The token could not be read; the message says where it was looked for and what to do."""


def _secret_token(auth: EndpointAuth, wait_s: float) -> str:
    """The token the ServiceAccount token controller put into the Secret (it may take a moment)."""
    import base64

    from kubernetes import client as k8s

    from pooling_pipeline.resources.config import load_settings
    from pooling_pipeline.serving.kubernetes_target import KubernetesTarget

    settings = load_settings()
    cluster = settings.cluster
    target = KubernetesTarget(
        in_cluster=bool(cluster and cluster.in_cluster),
        kubeconfig=cluster.kubeconfig if cluster else None,
        context=cluster.context if cluster else None,
        s3_access_key_id="",
        s3_secret_access_key="",
    )
    api = k8s.CoreV1Api(target.api_client())
    deadline = time.monotonic() + wait_s
    while True:
        secret = api.read_namespaced_secret(auth.secret_name, auth.namespace)
        value = (secret.data or {}).get(auth.secret_key)
        if value:
            return base64.b64decode(value).decode()
        if time.monotonic() >= deadline:
            raise EndpointAuthError(
                f"Secret {auth.namespace}/{auth.secret_name} has no {auth.secret_key!r} after {wait_s:.0f} s: the "
                "ServiceAccount token controller did not fill it; check that its ServiceAccount exists "
                f"(it is created with the model when {AUTH_SETTING}=true)"
            )
        time.sleep(1.0)


def bearer_token(auth: EndpointAuth, *, wait_s: float = 30.0) -> str:
    if auth.source == "file":
        path = Path(auth.path or "")
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise EndpointAuthError(
                f"cannot read the endpoint's API key {path} ({exc.strerror}): redeploy the model "
                f"(inference_service) with {AUTH_SETTING}=true, or set {AUTH_SETTING}=false"
            ) from None
    return _secret_token(auth, wait_s)


def request_headers(deployment: Deployment) -> dict[str, str]:
    """`{"Authorization": "Bearer <token>"}` for a token-authenticated endpoint, else `{}`."""
    if deployment.auth is None:
        return {}
    return {"Authorization": f"Bearer {bearer_token(deployment.auth)}"}


def tls_verify(deployment: Deployment) -> bool | str:
    """What to verify an https endpoint with: the service-serving CA for in-cluster URLs, else the system CAs."""
    if deployment.auth is not None and deployment.auth.ca_bundle and Path(deployment.auth.ca_bundle).is_file():
        return deployment.auth.ca_bundle
    return True


def auth_failure_hint(status: int | None) -> str:
    """What a 401 / 403 from a model endpoint means here ("" for other statuses)."""
    if status == 401:
        return (
            f"the endpoint wants a bearer token and got none or a wrong one: with {AUTH_SETTING}=true every client "
            "sends the model's token (serving/endpoint_auth.py request_headers); check that the client passes it, "
            f"or that {AUTH_SETTING} matches how the model was deployed"
        )
    if status == 403:
        return (
            "the token's identity may not `get` this InferenceService, which the auth proxy checks: re-deploy the "
            f"model so its Role and RoleBinding are re-applied ({AUTH_SETTING}=true)"
        )
    return ""
