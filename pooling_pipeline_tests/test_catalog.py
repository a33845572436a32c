"""The model catalog: both shipped files load, and every bad entry fails naming file, entry and field."""

from pathlib import Path

import pytest
import yaml

from pooling_pipeline.catalog import (
    CLUSTER_CATALOG,
    LOCAL_CATALOG,
    CatalogError,
    ModelKind,
    Role,
    active_catalog,
    load_catalog,
)

GOOD = {"name": "bge-base-en-v1.5", "repo_id": "BAAI/bge-base-en-v1.5", "kind": "embedding", "dimension": 768}


def write_catalog(tmp_path: Path, models: list[dict]) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": models}))
    return path


def load_error(tmp_path: Path, models: list[dict]) -> str:
    path = write_catalog(tmp_path, models)
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    message = str(info.value)
    assert str(path) in message, f"the message must name the file: {message}"
    return message


def test_cluster_catalog_lists_the_migration_models() -> None:
    catalog = load_catalog(CLUSTER_CATALOG)
    assert {"all-minilm-l6-v2", "bge-base-en-v1.5", "bge-reranker-v2-m3", "modernbert-base"} <= set(catalog.names())
    assert catalog.get("bge-large-en-v1.5").dimension == 1024
    assert catalog.get("ms-marco-minilm-l12-v2").kind is ModelKind.RERANKER
    assert all(m.revision == "main" for m in catalog.models)


def test_local_catalog_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POOLING_CATALOG", raising=False)
    catalog = active_catalog()
    assert catalog.source == str(LOCAL_CATALOG)
    # The real MiniLM, the generated cross-encoder and a twin of every other migration model (issue 12).
    assert catalog.names() == [
        "all-minilm-l6-v2",
        "granite-embedding-278m-multilingual",
        "bge-base-en-v1.5",
        "bge-large-en-v1.5",
        "modernbert-base",
        "minilm-l6-cross-encoder",
        "ms-marco-minilm-l12-v2",
        "bge-reranker-base",
        "bge-reranker-large",
        "bge-reranker-v2-m3",
    ]
    assert set(catalog.names()) - {"minilm-l6-cross-encoder"} == set(load_catalog(CLUSTER_CATALOG).names())
    assert catalog.get("minilm-l6-cross-encoder").kind is ModelKind.RERANKER


def test_catalog_file_is_chosen_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOLING_CATALOG", str(write_catalog(tmp_path, [GOOD])))
    assert active_catalog().names() == ["bge-base-en-v1.5"]


def test_unknown_kind_is_rejected(tmp_path: Path) -> None:
    message = load_error(tmp_path, [dict(GOOD, kind="classifier")])
    assert "entry #1 ('bge-base-en-v1.5') field 'kind'" in message
    assert "'embedding' or 'reranker'" in message and "'classifier'" in message


def test_duplicate_name_points_at_both_entries(tmp_path: Path) -> None:
    message = load_error(tmp_path, [GOOD, dict(GOOD, repo_id="BAAI/other")])
    assert "entry #2 ('bge-base-en-v1.5') field 'name'" in message
    assert "duplicate" in message and "entry #1" in message


def test_missing_repo_id_is_rejected(tmp_path: Path) -> None:
    entry = {k: v for k, v in GOOD.items() if k != "repo_id"}
    message = load_error(tmp_path, [entry])
    assert "entry #1 ('bge-base-en-v1.5') field 'repo_id'" in message and "missing" in message


def test_repo_id_without_owner_is_rejected(tmp_path: Path) -> None:
    message = load_error(tmp_path, [dict(GOOD, repo_id="bge-base-en-v1.5")])
    assert "field 'repo_id'" in message and "'owner/name'" in message


@pytest.mark.parametrize("revision", ["main branch", "a..b", "refs/heads/", "-rf"])
def test_bad_revision_is_rejected(tmp_path: Path, revision: str) -> None:
    message = load_error(tmp_path, [dict(GOOD, revision=revision)])
    assert "entry #1 ('bge-base-en-v1.5') field 'revision'" in message
    assert "not a git revision" in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "greater than 0"),
        (-512, "greater than 0"),
        ("lots", "valid integer"),
        (512.5, "valid integer"),
        (True, "valid integer"),
        ("512", "valid integer"),
    ],
)
def test_max_model_len_must_be_a_positive_int(tmp_path: Path, value: object, expected: str) -> None:
    message = load_error(tmp_path, [dict(GOOD, max_model_len=value)])
    assert "entry #1 ('bge-base-en-v1.5') field 'max_model_len'" in message
    assert expected in message and repr(value) in message


def test_unknown_field_is_rejected(tmp_path: Path) -> None:
    message = load_error(tmp_path, [dict(GOOD, max_len=512)])
    assert "entry #1 ('bge-base-en-v1.5') field 'max_len'" in message and "unknown field" in message


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    message = load_error(tmp_path, [dict(GOOD, kind="x"), dict(GOOD, name="second", max_model_len=0)])
    assert "entry #1" in message and "field 'kind'" in message
    assert "entry #2 ('second') field 'max_model_len'" in message


def test_missing_file_and_bad_yaml_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="does not exist: set POOLING_CATALOG"):
        load_catalog(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(bad)
    not_a_list = tmp_path / "dict.yaml"
    not_a_list.write_text("models: {name: x}\n")
    with pytest.raises(CatalogError, match="must be a list"):
        load_catalog(not_a_list)


def test_cluster_catalog_declares_every_role_with_the_seeds_fallback_reranker() -> None:
    catalog = load_catalog(CLUSTER_CATALOG)
    by_role = {role: [m.name for m in catalog.models if m.role is role] for role in Role}
    assert by_role[Role.MULTILINGUAL_EMBEDDING] == ["granite-embedding-278m-multilingual"]
    assert "all-minilm-l6-v2" in by_role[Role.PRIMARY_EMBEDDING]
    assert {"ms-marco-minilm-l12-v2", "bge-reranker-v2-m3"} <= set(by_role[Role.RERANKER])


def test_role_defaults_from_the_kind(tmp_path: Path) -> None:
    reranker = {"name": "rr", "repo_id": "BAAI/bge-reranker-base", "kind": "reranker"}
    catalog = load_catalog(write_catalog(tmp_path, [GOOD, reranker]))
    assert [m.role for m in catalog.models] == [Role.PRIMARY_EMBEDDING, Role.RERANKER]


def test_unknown_role_is_rejected_listing_the_roles(tmp_path: Path) -> None:
    message = load_error(tmp_path, [dict(GOOD, role="primary")])
    assert "entry #1 ('bge-base-en-v1.5') field 'role'" in message and "'primary'" in message
    assert "'primary-embedding', 'multilingual-embedding' or 'reranker'" in message


def test_role_of_the_other_kind_is_rejected_naming_the_fitting_ones(tmp_path: Path) -> None:
    message = load_error(tmp_path, [dict(GOOD, role="reranker")])
    assert "role 'reranker' is for reranker models but this entry's kind is 'embedding'" in message
    assert "use role 'primary-embedding' or 'multilingual-embedding'" in message


@pytest.mark.parametrize("url", ["not-a-url", "127.0.0.1:8085", "ftp://caikit:8085", "http://"])
def test_incumbent_url_must_be_http(tmp_path: Path, url: str) -> None:
    message = load_error(tmp_path, [dict(GOOD, incumbent={"url": url, "model_id": "m"})])
    assert "field 'incumbent.url'" in message and "is not an http(s) URL" in message and repr(url) in message
