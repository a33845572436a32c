"""The pooling flags follow vLLM's interface change: --task before 0.10.1, --runner/--convert after."""

import pytest

from pooling_pipeline.catalog import ModelKind
from pooling_pipeline.serving.runtime_args import accepts_task_flag, parse_vllm_version, pooling_args


@pytest.mark.parametrize(
    ("version", "kind", "expected"),
    [
        ("0.8.5", ModelKind.EMBEDDING, ["--task=embed"]),
        ("0.10.0", ModelKind.EMBEDDING, ["--task=embed"]),
        ("0.10.0", ModelKind.RERANKER, ["--task=score"]),
        ("0.10.1", ModelKind.EMBEDDING, ["--runner=pooling"]),
        ("0.10.1.1", ModelKind.RERANKER, ["--runner=pooling"]),
        ("0.13.0", ModelKind.RERANKER, ["--runner=pooling"]),
        ("0.32.0", ModelKind.EMBEDDING, ["--runner=pooling"]),
        ("v0.32.0", ModelKind.RERANKER, ["--runner=pooling"]),
    ],
)
def test_pooling_args_switch_from_task_to_runner_at_0_10_1(version, kind, expected):
    assert pooling_args(version, kind, "BertModel") == expected


def test_current_vllm_never_gets_the_removed_task_flag():
    for version in ("0.13.0", "0.20.1", "0.32.0"):
        for kind in ModelKind:
            for arch in ("BertModel", "BertForSequenceClassification", "Qwen3ForCausalLM", None):
                assert not any(a.startswith("--task") for a in pooling_args(version, kind, arch))


def test_generative_architectures_are_converted_only_on_runner_releases():
    assert pooling_args("0.32.0", "embedding", "Qwen3ForCausalLM") == ["--runner=pooling", "--convert=embed"]
    assert pooling_args("0.32.0", "reranker", "Qwen3ForCausalLM") == ["--runner=pooling", "--convert=classify"]
    assert pooling_args("0.32.0", "reranker", "BertForSequenceClassification") == ["--runner=pooling"]
    assert pooling_args("0.9.2", "embedding", "Qwen3ForCausalLM") == ["--task=embed"]


def test_task_flag_accepted_until_0_13_0():
    assert accepts_task_flag("0.12.0")
    assert accepts_task_flag("0.10.1")
    assert not accepts_task_flag("0.13.0")
    assert not accepts_task_flag("0.32.0")


def test_version_parsing_tolerates_prefixes_and_suffixes():
    assert parse_vllm_version("v0.11.0rc2") == (0, 11, 0)
    assert parse_vllm_version("0.9") == (0, 9, 0)
    with pytest.raises(ValueError, match="not a vLLM version"):
        parse_vllm_version("latest")
