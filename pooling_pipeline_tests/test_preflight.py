"""`pooling-pipeline preflight` at the wire: the real `kubernetes` client against kmock, with the CRDs, nodes
and OpenShift AI version a cluster would have, and SelfSubjectAccessReviews answered as the API server would."""

import gzip

import pytest
import yaml
from typer.testing import CliRunner

from pooling_pipeline.serving.crd_validation import PACKAGED_DIR
from pooling_pipeline.serving.kubernetes_target import REQUIRED_PERMISSIONS
from pooling_pipeline.serving.preflight import Status, run_preflight
from pooling_pipeline_tests.fixtures.cluster import CRDS, DSCIS, NAMESPACE, NODES, TEMPLATES_NAMESPACE
from pooling_pipeline_tests.test_cluster_lifecycle import _target


def _seed(kube_cluster, *, gpus: str = "2", version: str = "3.0.1", schemas: bool = False) -> None:
    kube_cluster.namespaces.add(NAMESPACE)
    for path in sorted(PACKAGED_DIR.glob("*.yaml.gz")):
        crd = yaml.load(gzip.decompress(path.read_bytes()), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        if not schemas:  # preflight reads the served versions only; the 2 MB schemas slow kmock down
            for version_entry in crd["spec"]["versions"]:
                version_entry.pop("schema", None)
        kube_cluster.put(CRDS, None, crd)
    for name, allocatable in (("gpu-node-1", {"nvidia.com/gpu": gpus, "cpu": "32"}), ("cpu-node", {"cpu": "8"})):
        kube_cluster.put(
            NODES,
            None,
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "status": {"allocatable": allocatable}},
        )
    kube_cluster.put(
        DSCIS,
        None,
        {
            "apiVersion": "dscinitialization.opendatahub.io/v1",
            "kind": "DSCInitialization",
            "metadata": {"name": "default-dsci"},
            "status": {"release": {"name": "OpenShift AI Self-Managed", "version": version}},
        },
    )


def _run(kube_cluster, rhoai_version: str | None = "3.0"):
    return run_preflight(
        _target(kube_cluster).api_client(),
        namespace=NAMESPACE,
        templates_namespace=TEMPLATES_NAMESPACE,
        gpu_resource="nvidia.com/gpu",
        rhoai_version=rhoai_version,
        bucket_check=None,
    )


def test_a_ready_cluster_passes_with_a_row_per_check_and_permission(kube_cluster):
    _seed(kube_cluster)
    report = _run(kube_cluster)
    rows = {r.check: r for r in report.rows}
    assert not report.failed, report.table()
    assert rows["CRD inferenceservices.serving.kserve.io"].found.startswith("served: v1beta1")
    assert rows["OpenShift AI version"].found == "OpenShift AI Self-Managed 3.0.1"
    assert rows["nodes with nvidia.com/gpu"].found == "gpu-node-1: 2"
    assert rows["bucket"].status is Status.UNKNOWN  # --no-bucket
    permission_rows = [r for r in report.rows if r.check.startswith("may ")]
    assert len(permission_rows) == len(REQUIRED_PERMISSIONS)
    assert "may create templates.template.openshift.io in redhat-ods-applications" in rows
    assert "may get customresourcedefinitions.apiextensions.k8s.io cluster-wide" in rows
    table = report.table()
    assert table.splitlines()[0].split() == ["check", "status", "found", "fix"]
    assert len(table.splitlines()) == len(report.rows) + 2


def test_a_missing_permission_fails_naming_the_grant(kube_cluster):
    _seed(kube_cluster)
    kube_cluster.deny("delete", "serving.kserve.io", "inferenceservices")
    report = _run(kube_cluster)
    assert [r.check for r in report.failed] == ["may delete inferenceservices.serving.kserve.io in pooling-models"]
    failed = report.failed[0]
    assert failed.found == "denied" and "grant verb 'delete'" in failed.fix and "k8s/rbac.yaml" in failed.fix


@pytest.mark.parametrize(
    ("setup", "check", "fix"),
    [
        (
            lambda c: c.put(NODES, None, {"metadata": {"name": "gpu-node-1"}, "status": {"allocatable": {}}}),
            "nodes",
            "GPU Operator",
        ),
        (lambda c: None, "OpenShift AI version", "POOLING_RHOAI_VERSION=3.0"),
    ],
)
def test_other_failures_say_what_to_fix(kube_cluster, setup, check, fix):
    _seed(kube_cluster)
    setup(kube_cluster)
    report = _run(kube_cluster, rhoai_version="2.25" if check == "OpenShift AI version" else "3.0")
    failed = [r for r in report.failed if r.check.startswith(check)]
    assert failed and fix in failed[0].fix


def test_a_missing_namespace_fails_with_the_command_that_creates_it(kube_cluster):
    _seed(kube_cluster)
    kube_cluster.reset()  # nothing seeded: no namespace (and no CRDs)
    report = _run(kube_cluster)
    rows = {r.check: r for r in report.failed}
    assert "oc new-project pooling-models" in rows["namespace pooling-models"].fix
    assert rows["CRD inferenceservices.serving.kserve.io"].found == "not installed"


def test_unreadable_cluster_scoped_facts_are_unknown_not_failures(kube_cluster):
    _seed(kube_cluster)
    kube_cluster.deny("list", "", "nodes")
    kube_cluster.deny("list", "dscinitialization.opendatahub.io", "dscinitializations")
    report = _run(kube_cluster)
    rows = {r.check: r for r in report.rows}
    assert rows["nodes with nvidia.com/gpu"].status is Status.UNKNOWN
    assert (
        rows["OpenShift AI version"].status is Status.UNKNOWN and "cluster-wide" in rows["OpenShift AI version"].found
    )
    assert not report.failed


def test_the_cli_prints_the_table_and_exits_non_zero_on_a_failure(kube_cluster, monkeypatch):
    from pooling_pipeline.cli import app

    _seed(kube_cluster)
    kube_cluster.deny("create", "template.openshift.io", "templates")
    for name, value in {
        "POOLING_TARGET": "cluster",
        "POOLING_IN_CLUSTER": "false",
        "KUBECONFIG": str(kube_cluster.kubeconfig),
        "POOLING_RHOAI_VERSION": "3.0",
    }.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["preflight", "--no-bucket"])
    assert result.exit_code == 1, result.output
    assert "may create templates.template.openshift.io in redhat-ods-applications  FAILED" in result.output
    assert "1 check(s) failed" in result.output


def test_the_cluster_crds_are_the_validation_source_when_readable(kube_cluster):
    from pooling_pipeline.serving.crd_validation import validate_manifest
    from pooling_pipeline_tests.test_kubernetes_target import _manifests

    _seed(kube_cluster, schemas=True)
    target = _target(kube_cluster)
    source = target.crd_source()
    assert source.origin.startswith("the cluster's CRDs")
    assert validate_manifest(_manifests(target).inference_service, source).validated
