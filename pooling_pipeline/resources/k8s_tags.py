"""Where a step runs on the cluster: the `dagster-k8s/config` tags and the step executor.

On the cluster, the load benchmark runs as its own pod (Dagster's `k8s_job_executor` launches one
Kubernetes Job per step) placed next to the model server it measures: a benchmark that crosses zones
measures the network, not vLLM. Everything here is configuration; locally the tags are inert (the
multiprocess executor ignores them) and Dagster's default executor is kept.

Wiring: `@dg.asset(op_tags=benchmark_op_tags(), ...)` on load_benchmark, and
`executor_def=step_executor()` on the jobs that select it.
"""

from __future__ import annotations

import json
from typing import Any

import dagster as dg

from pooling_pipeline.resources.config import in_cluster, load_settings

K8S_CONFIG_TAG = "dagster-k8s/config"  # read by dagster-k8s for run and step pods

# KServe labels every predictor pod with the name of its InferenceService.
ISVC_POD_LABEL = "serving.kserve.io/inferenceservice"

# The benchmark pod's own size: the load generator spreads over worker processes (one per core), so
# it gets whole cores; it must never be the bottleneck of the measurement.
BENCHMARK_CPU = "4"
BENCHMARK_MEMORY = "4Gi"


def models_namespace() -> str:
    """Where the InferenceServices run (POOLING_NAMESPACE), which is not where run pods run."""
    return load_settings().namespace


def benchmark_pod_config(
    *, cpu: str = BENCHMARK_CPU, memory: str = BENCHMARK_MEMORY, namespace: str | None = None
) -> dict[str, Any]:
    """The user-defined k8s config of the benchmark step's pod (dagster-k8s `UserDefinedDagsterK8sConfig`).

    Affinity: preferred (not required) co-location with model-server pods, same node first, else same
    zone, so a busy node delays nothing; requests == limits on CPU so the generator is not throttled
    into measuring itself. The model servers live in another namespace than the run pods, so the
    affinity term names it (without `namespaces` it would only look beside the benchmark pod).
    """
    model_namespace = namespace or models_namespace()

    def near(topology_key: str, weight: int) -> dict[str, Any]:
        return {
            "weight": weight,
            "podAffinityTerm": {
                "labelSelector": {"matchExpressions": [{"key": ISVC_POD_LABEL, "operator": "Exists"}]},
                "namespaces": [model_namespace],
                "topologyKey": topology_key,
            },
        }

    return {
        "container_config": {
            "resources": {
                "requests": {"cpu": cpu, "memory": memory},
                "limits": {"cpu": cpu, "memory": memory},
            },
        },
        "pod_spec_config": {
            "affinity": {
                "podAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        near("kubernetes.io/hostname", 100),
                        near("topology.kubernetes.io/zone", 50),
                    ]
                }
            },
        },
        "pod_template_spec_metadata": {"labels": {"app.kubernetes.io/component": "load-benchmark"}},
    }


def benchmark_op_tags(**kwargs: str) -> dict[str, str]:
    """`op_tags` for the `load_benchmark` asset: `@dg.asset(op_tags=benchmark_op_tags(), ...)`."""
    # Tag values are strings; dagster-k8s parses this one as JSON.
    return {K8S_CONFIG_TAG: json.dumps(benchmark_pod_config(**kwargs), sort_keys=True)}


def step_executor() -> dg.ExecutorDefinition:
    """The executor of the jobs that run `load_benchmark`: one pod per step when running in the cluster,
    Dagster's default otherwise.

    In the cluster every step of such a job becomes its own Kubernetes Job (k8s_job_executor), so the
    benchmark step can be placed next to the model server by its `dagster-k8s/config` op tags. Values
    cross pods through the S3 IO manager `build_resources()` installs for the cluster, and s3_model
    re-fetches a snapshot that is not on its pod. Step pods inherit image, namespace, service account
    and env secrets from the run launcher (k8s/values.yaml), so nothing is repeated here. A laptop
    driving a cluster (POOLING_TARGET=cluster, not in a pod) keeps its steps local: k8s_job_executor
    needs the K8sRunLauncher of the Helm install.
    """
    if in_cluster():
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    return dg.multi_or_in_process_executor
