"""Known rollout failures are recognised from real-looking conditions, events and vLLM log lines."""

import pytest

from pooling_pipeline.serving.diagnosis import KNOWN_CAUSES, diagnose, diagnose_all

# One real-looking line per cause (vLLM / kubelet / scheduler wording).
SAMPLES = {
    "max_model_len_too_long": "ValueError: User-specified max_model_len (512) is greater than the derived "
    "max_model_len (max_seq_length=256 in sentence_bert_config.json).",
    "gpu_memory_utilization_too_high": "ValueError: Free memory on device (9.1/79.1 GiB) on startup is less than "
    "desired GPU memory utilization (0.3, 23.7 GiB). Decrease GPU memory utilization or reduce GPU memory used "
    "by other processes.",
    "cuda_out_of_memory": "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a "
    "total capacity of 15.77 GiB",
    "architecture_not_supported": "ValueError: Model architectures ['FooForMasking'] are not supported for now. "
    "Supported architectures: dict_keys([...])",
    "cache_dir_not_writable": "PermissionError: [Errno 13] Permission denied: '/.cache'",
    "python_not_found": 'Error: failed to create containerd task: exec: "python": executable file not found in '
    "$PATH: unknown",
    "model_not_found": "OSError: /mnt/models does not appear to have a file named config.json.",
    "gpu_unschedulable": "Warning FailedScheduling: 0/6 nodes are available: 3 Insufficient nvidia.com/gpu, "
    "3 node(s) had untolerated taint.",
    "image_pull": "Warning Failed: Failed to pull image: ErrImagePull",
    "unrecognized_argument": "api_server.py: error: unrecognized arguments: --task",
}


@pytest.mark.parametrize("cause", sorted(SAMPLES))
def test_each_known_failure_is_recognised_with_a_fix(cause):
    found = diagnose(["INFO starting", SAMPLES[cause], "INFO exiting"])
    assert found is not None and found.cause == cause
    assert found.fix and SAMPLES[cause] in found.evidence
    assert "Fix:" in found.message()


def test_every_cause_has_a_sample():
    assert set(KNOWN_CAUSES) - {"executable_not_found"} == set(SAMPLES)


def test_storage_initializer_s3_errors_mean_model_not_found():
    line = "botocore.exceptions.ClientError: An error occurred (NoSuchBucket) when calling the ListObjects operation"
    assert diagnose([line]).cause == "model_not_found"
    assert diagnose(["ValueError: No such file or directory: /mnt/models/config.json"]).cause == "model_not_found"


def test_specific_cause_wins_over_generic_one():
    lines = [SAMPLES["unrecognized_argument"], SAMPLES["max_model_len_too_long"]]
    assert diagnose(lines).cause == "max_model_len_too_long"
    assert [d.cause for d in diagnose_all(lines)] == ["max_model_len_too_long", "unrecognized_argument"]


def test_healthy_logs_have_no_diagnosis():
    assert diagnose(["INFO:     Started server process [1]", "INFO:     Application startup complete."]) is None
