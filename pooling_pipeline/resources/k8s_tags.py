"""Where a step runs on the cluster: the `dagster-k8s/config` tags and the step executor.

On the cluster, the load benchmark runs as its own pod (Dagster's `k8s_job_executor` launches one
Kubernetes Job per step) placed next to the model server it measures: a benchmark that crosses zones
measures the network, not vLLM. Everything here is configuration; locally the tags are inert (the
multiprocess executor ignores them) and the default executor is kept.
"""

from __future__ import annotations

import json
import os
from typing import Any

import dagster as dg

K8S_CONFIG_TAG = "dagster-k8s/config"  # read by dagster-k8s for run and step pods

# KServe labels every predictor pod with the name of its InferenceService.
ISVC_POD_LABEL = "serving.kserve.io/inferenceservice"

# The benchmark pod's own size: the load generator spreads over worker processes (one per core), so
# it gets whole cores; it must never be the bottleneck of the measurement.
BENCHMARK_CPU = "4"
BENCHMARK_MEMORY = "4Gi"


def models_namespace() -> str:
    """Where the InferenceServices run (POOLING_NAMESPACE), which is not where run pods run."""
    return os.environ.get("POOLING_NAMESPACE", "").strip() or "pooling-models"


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


def benchmark_executor(target: str) -> dg.ExecutorDefinition:
    """The executor of the benchmark job: one pod per step on the cluster, Dagster's default locally.

    Only the benchmark job gets it: the other steps share files inside their run pod (hf_snapshot's
    download is s3_model's input), which one-pod-per-step would break. Values cross pods through the
    S3 IO manager that `build_resources()` installs for the cluster. The step pods inherit image,
    namespace, service account and env secrets from the run launcher (k8s/values.yaml), so nothing is
    repeated here.
    """
    if target != "cluster":
        return dg.multi_or_in_process_executor
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor
