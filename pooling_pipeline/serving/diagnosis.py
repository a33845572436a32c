"""Known ways a vLLM rollout fails, recognised from status conditions, pod events and log lines.

Pure: the cluster target feeds it KServe conditions, pod events and the last container log lines; the
local target feeds it the vLLM process log. Each cause comes with the fix, so a failed materialisation
says what to change instead of "timed out waiting for Ready".
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import BaseModel


class Diagnosis(BaseModel):
    cause: str  # short id, e.g. "max_model_len_too_long"
    summary: str  # what happened, in words
    fix: str  # what to change
    evidence: str  # the line that matched

    def message(self) -> str:
        return f"{self.summary} ({self.cause}). Fix: {self.fix}. Evidence: {self.evidence.strip()[:300]}"


# (cause, pattern, summary, fix). Order matters: the more specific cause first.
_RULES: list[tuple[str, re.Pattern[str], str, str]] = [
    (
        "max_model_len_too_long",
        re.compile(
            r"max_model_len \(\d+\) is greater than the derived max_model_len|"
            r"max_model_len.*(greater|larger) than .*(derived|maximum)",
            re.I,
        ),
        "vLLM refused --max-model-len: it is above the model's own limit",
        "set max_model_len in the catalog to at most the model limit (hf_snapshot's effective_max_model_len), "
        "never set VLLM_ALLOW_LONG_MAX_MODEL_LEN",
    ),
    (
        "gpu_memory_utilization_too_high",
        re.compile(r"Free memory on device.*less than desired GPU memory utilization", re.I),
        "the GPU is shared and has less free memory than --gpu-memory-utilization asks for",
        "lower gpu_memory_utilization (POOLING_GPU_MEMORY_UTILIZATION, default 0.3) or move the model to a "
        "less busy GPU",
    ),
    (
        "cuda_out_of_memory",
        re.compile(r"CUDA out of memory|torch\.(cuda\.)?OutOfMemoryError|CUDA error: out of memory", re.I),
        "CUDA out of memory while loading or warming up the model",
        "lower --max-model-len / max_num_seqs, raise gpu_memory_utilization if the GPU is not shared, or use a "
        "bigger GPU",
    ),
    (
        "architecture_not_supported",
        re.compile(
            r"Model architectures? \[?'?[\w, ']*'?\]? (is|are) not supported|"
            r"architectures? .*not supported for now|Cannot find model module",
            re.I,
        ),
        "this vLLM release does not support the model's architecture",
        "use a vLLM release that lists the architecture under pooling models, or keep the model on Caikit",
    ),
    (
        "cache_dir_not_writable",
        re.compile(r"Permission denied: '/\.cache|PermissionError: .*'/\.cache", re.I),
        "the container tried to write to /.cache: OpenShift's random UID has no writable home",
        "set HOME, XDG_CACHE_HOME, HF_HOME and VLLM_CACHE_DIR to emptyDir mounts (the rendered ServingRuntime "
        "does; re-register the runtime templates)",
    ),
    (
        "python_not_found",
        re.compile(
            r"exec: \"?python\"?: executable file not found|python: not found|"
            r"\bpython\b.*No such file or directory",
            re.I,
        ),
        "the container command is `python`, which the vLLM image does not have",
        "run `python3 -m vllm.entrypoints.openai.api_server` (re-render and re-register the runtime)",
    ),
    (
        "executable_not_found",
        re.compile(r"executable file not found in \$PATH|exec format error", re.I),
        "the container command does not exist in the image",
        "check the ServingRuntime command against the image (python3 -m vllm.entrypoints.openai.api_server)",
    ),
    (
        "model_not_found",
        re.compile(
            r"/mnt/models.*(does not appear to have|not found|No such file|does not exist|is not a)|"
            r"(No such file|not found|does not exist|Can't load).*?/mnt/models|"
            r"NoSuchKey|NoSuchBucket|InvalidAccessKeyId|SignatureDoesNotMatch|AccessDenied|"
            r"Failed to (download|fetch) model|storage-initializer.*(error|failed)",
            re.I,
        ),
        "the model is not at /mnt/models: the storage initializer found nothing at the storageUri or was refused by S3",
        "check the s3_model URI (bucket/prefix) and the data-connection Secret's endpoint and credentials",
    ),
    (
        "gpu_unschedulable",
        re.compile(r"Insufficient [\w./-]*gpu|\d+ Insufficient nvidia\.com|untolerated taint.*gpu", re.I),
        "no node has a free GPU for the predictor pod",
        "free a GPU, add GPU nodes, or check gpu_resource_name / tolerations for the GPU node taint",
    ),
    (
        "image_pull",
        re.compile(r"ErrImagePull|ImagePullBackOff|manifest unknown|pull access denied", re.I),
        "the vLLM image cannot be pulled",
        "check vllm_image and the tag derived from the vLLM version, and the pull secret",
    ),
    (
        "unrecognized_argument",
        re.compile(r"unrecognized arguments?: .*", re.I),
        "the vLLM server rejected a command-line flag (e.g. --task on vLLM >= 0.13)",
        "re-render the runtime for this vLLM version (runtime_args.pooling_args) and check extra_args",
    ),
]


def diagnose(lines: Iterable[str]) -> Diagnosis | None:
    """The first known cause found in `lines` (rules checked in priority order, then line order)."""
    texts = [line for line in lines if line]
    for cause, pattern, summary, fix in _RULES:
        for text in texts:
            if pattern.search(text):
                return Diagnosis(cause=cause, summary=summary, fix=fix, evidence=text)
    return None


def diagnose_all(lines: Iterable[str]) -> list[Diagnosis]:
    """Every known cause present (for a report), in priority order."""
    texts = [line for line in lines if line]
    found: list[Diagnosis] = []
    for cause, pattern, summary, fix in _RULES:
        for text in texts:
            if pattern.search(text):
                found.append(Diagnosis(cause=cause, summary=summary, fix=fix, evidence=text))
                break
    return found


KNOWN_CAUSES: tuple[str, ...] = tuple(rule[0] for rule in _RULES)
