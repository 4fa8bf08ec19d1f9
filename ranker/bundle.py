"""The model bundle: a versioned, self-contained folder workers and the API load, with no torch.

  manifest.json      format, role, version, fusion, α, β, decay, dims, file digests, validation metrics
  user_encoder.onnx  item_vectors [B, L, D] + mask [B, L] + event_types [B, L] -> user vector
  user_encoder_fp32.onnx  the fp32 export, kept where `fit` serves an int8 copy (manifest user_encoder)
  item_vectors.npy   fused item vectors g_j [n_items, D] (row r = item_ids[r])
  item_ids.json, item_categories.npy (category index per item row), category_names.json
  item_fusion.onnx   text vector + id row + category + brand + popularity bucket -> fused item vector
  brand_names.json, text_vectors.npy (the encoder's vector per trained item row)
  items.jsonl        the catalog it was trained on (schemas.codec item records, in row order)
  popularity.json    item ids with their event counts in the training data, most popular first
  encoder/           the text encoder export the item texts were encoded with (live items, queries)
  variants/<name>/   the other fusion strategies (role "variant": model files only, no catalog)
  ranking/           the learned ranking stage (ranker.stage), when trained: model.txt, arrays.npz, stage.json

manifest["files"] holds the sha256 of every file read at run time (every file in the folder but
manifest.json itself; for a variant, its manifest.json, which in turn digests the variant's
files), and `version` is a hash over all of them. `ModelBundle.load` checks them all, once, and
raises BundleError naming the file that is missing or changed (a file unchanged since this host
hashed it is not read again: encoders.digests). Every stored list names `version`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from encoders.digests import cached_digest
from encoders.manifest import file_digest
from encoders.sequence import SequenceEncoder
from encoders.session import SessionConfig, create_session, wants_cuda
from encoders.text import TextEncoder
from ranker.popularity import popular_items
from schemas.codec import encode_item
from schemas.errors import BundleError
from schemas.items import Item

if TYPE_CHECKING:
    from ranker.stage import RankingStage

__all__ = [
    "BUNDLE_FORMAT",
    "MAIN_FILES",
    "MODEL_FILES",
    "PRETRAINED_TEXT",
    "ModelBundle",
    "bundle_files",
    "bundle_version",
    "fuse_items",
    "write_catalog",
    "write_manifest",
    "write_popularity",
]

BUNDLE_FORMAT = "fusionrec-model-bundle/1"
MANIFEST = "manifest.json"
#: every bundle, main or variant
MODEL_FILES = (
    "user_encoder.onnx",
    "item_vectors.npy",
    "item_ids.json",
    "item_categories.npy",
    "category_names.json",
    "item_fusion.onnx",
    "brand_names.json",
    "text_vectors.npy",
)
#: the main bundle also carries what a worker or the API needs instead of the training files
MAIN_FILES = ("items.jsonl", "popularity.json", "encoder/manifest.json")
ROLES = ("main", "variant")
#: the pretrained encoder's item vectors, in a bundle whose encoder is a behaviour-tuned tower
#: (evaluate's text-only baseline stays the pretrained encoder's)
PRETRAINED_TEXT = "text_vectors_pretrained.npy"
RETRAIN = "retrain it with `fusionrec train` or restore it"


def fuse_items(session: Any, feed: Mapping[str, np.ndarray]) -> np.ndarray:
    """Fused item vectors from item_fusion.onnx for `feed` (text_vectors, item_rows, categories,
    brands, pop_buckets), passing only the inputs the graph declares (older exports have fewer)."""
    declared = {i.name for i in session.get_inputs()}
    return np.asarray(session.run(None, {k: v for k, v in feed.items() if k in declared})[0], dtype=np.float32)


def bundle_files(folder: Path) -> dict[str, str]:
    """{relative posix path: sha256} of every file in the folder but its manifest.json; of a variant
    under variants/<name>/ only its manifest.json (which digests the variant's own files)."""
    out: dict[str, str] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder)
        parts = rel.parts
        if rel.as_posix() == MANIFEST:
            continue
        if parts[0] == "variants" and (len(parts) != 3 or parts[2] != MANIFEST):
            continue
        out[rel.as_posix()] = file_digest(path)
    return out


def bundle_version(files: Mapping[str, str]) -> str:
    """'fr-' + a hash over every (file, sha256) pair: any file's change is a new version."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}\0{files[name]}\n".encode())
    return "fr-" + h.hexdigest()[:12]


def user_encoder_file(root: Path, session: SessionConfig, available: Sequence[str] | None = None) -> Path:
    """The user encoder a session runs: the served one (int8 where `fit` chose it), but the fp32 graph
    on CUDA, where int8 (QLinearMatMul) has no kernel and its nodes would run on the CPU with copies
    each way. `available`: the onnxruntime's providers (asked when None)."""
    fp32 = root / "user_encoder_fp32.onnx"
    return fp32 if fp32.exists() and wants_cuda(session, available) else root / "user_encoder.onnx"


def write_manifest(folder: Path, info: dict[str, Any], role: str = "main") -> dict[str, Any]:
    """Digest every file now in `folder` and write manifest.json (info's own format, version,
    files and role keys are replaced). Call it after the last file is written."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    files = bundle_files(folder)
    manifest = {
        **{k: v for k, v in info.items() if k not in {"format", "version", "files", "role"}},
        "format": BUNDLE_FORMAT,
        "role": role,
        "version": bundle_version(files),
        "files": files,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def write_catalog(folder: Path, items: Sequence[Item]) -> Path:
    """items.jsonl: one schemas.codec item record per line, in the bundle's row order."""
    path = folder / "items.jsonl"
    path.write_bytes(b"".join(encode_item(it) + b"\n" for it in items))
    return path


def write_popularity(folder: Path, counts: Mapping[str, int]) -> Path:
    """popularity.json: items with events, most popular first (ranker.popularity.popular_items)."""
    path = folder / "popularity.json"
    ranked = popular_items(counts)
    doc = {"source": "item events per item in the training data", "items": [[i, int(counts[i])] for i in ranked]}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def _fail(path: Path, what: str) -> BundleError:
    return BundleError(f"{path} {what}; {RETRAIN}")


def _read_manifest(root: Path) -> dict[str, Any]:
    if not root.is_dir():
        raise BundleError(f"{root} is not a bundle: no such folder; make one with `fusionrec train`")
    path = root / MANIFEST
    if not path.is_file():
        raise BundleError(f"{root} is not a bundle: no {MANIFEST}; make one with `fusionrec train`")
    try:
        manifest: Any = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(path, f"is not valid JSON ({exc}): the bundle was altered or is incomplete") from exc
    if not isinstance(manifest, dict):
        raise _fail(path, "is not a JSON object: the bundle was altered or is incomplete")
    fmt = manifest.get("format")
    if fmt != BUNDLE_FORMAT:
        hint = " (an encoder export? pass a folder made by `fusionrec train`)" if "encoder" in str(fmt) else ""
        raise BundleError(f"{root} is not a model bundle: {path} has format {fmt!r}, not {BUNDLE_FORMAT!r}{hint}")
    for key, kind in (("version", str), ("files", dict), ("model", dict)):
        if not isinstance(manifest.get(key), kind):
            raise _fail(path, f"lacks the key {key!r} (or it has the wrong type): the bundle is damaged")
    files = manifest["files"]
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise _fail(path, "has a 'files' entry that is not a name -> sha256: the bundle is damaged")
    if not isinstance(manifest["model"].get("max_len"), int):
        raise _fail(path, "lacks the key 'model.max_len': the bundle is damaged")
    return manifest


def _check_files(root: Path, manifest: dict[str, Any], variant: bool) -> None:
    """Every required file listed, every listed file present and matching its digest, the version
    over them all; BundleError naming the first file that is not."""
    path = root / MANIFEST
    files: dict[str, str] = manifest["files"]
    role = manifest.get("role", "main")
    if role not in ROLES:
        raise _fail(path, f"has role {role!r}, not one of {ROLES}: the bundle is damaged")
    if variant != (role == "variant"):
        if role == "variant":
            raise BundleError(
                f"{root} is a variant of the bundle in {root.parent.parent} (scored beside its main model): "
                "pass that bundle folder"
            )
        raise _fail(path, f"has role {role!r} where a variant was expected")
    required = MODEL_FILES if variant else (*MODEL_FILES, *MAIN_FILES)
    if not variant and ("items.jsonl" not in files or "popularity.json" not in files):
        raise BundleError(
            f"{root} is a bundle from before bundles carried their catalog and popularity (no items.jsonl / "
            "popularity.json in its manifest): retrain it with `fusionrec train`"
        )
    unlisted = [name for name in required if name not in files]
    if unlisted:
        raise _fail(path, f"does not list {unlisted}: the bundle is incomplete")
    for name, digest in files.items():
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise _fail(path, f"lists {name!r}, which is not a path inside the bundle: the bundle is damaged")
        target = root.joinpath(*rel.parts)
        if not target.is_file():
            raise _fail(target, "is missing: the bundle is incomplete")
        if cached_digest(target) != digest:
            raise _fail(target, f"does not match its digest in {MANIFEST}: the bundle was altered or is incomplete")
    if bundle_version(files) != manifest["version"]:
        raise _fail(path, "has a version that does not match its file digests: the manifest was altered")


def _read_popularity(path: Path) -> dict[str, int]:
    try:
        doc = json.loads(path.read_text())
        return {str(i): int(c) for i, c in doc["items"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise _fail(path, f"is not a popularity file ({exc}): the bundle is damaged") from exc


@dataclass
class ModelBundle:
    folder: Path
    manifest: dict[str, Any]
    item_ids: list[str]
    item_vectors: np.ndarray
    item_categories: np.ndarray
    category_names: list[str]
    encoder: SequenceEncoder
    #: event count per item in the training data (empty for a variant)
    popularity: dict[str, int] = field(default_factory=dict)
    #: item ids with events, most popular first (ranker.popularity.popular_items)
    popular: list[str] = field(default_factory=list)

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @classmethod
    def load(
        cls, folder: str | Path, session: SessionConfig = SessionConfig(), *, variant: bool = False
    ) -> ModelBundle:
        """Load a bundle after checking every file against its digest (BundleError naming the file).
        `variant=True` loads one of variants/<name>/ (model files only)."""
        root = Path(folder)
        manifest = _read_manifest(root)
        _check_files(root, manifest, variant)
        popularity = {} if variant else _read_popularity(root / "popularity.json")
        return cls(
            folder=root,
            manifest=manifest,
            item_ids=json.loads((root / "item_ids.json").read_text()),
            item_vectors=np.load(root / "item_vectors.npy"),
            item_categories=np.load(root / "item_categories.npy"),
            category_names=json.loads((root / "category_names.json").read_text()),
            encoder=SequenceEncoder(
                user_encoder_file(root, session), session, max_length=int(manifest["model"]["max_len"])
            ),
            popularity=popularity,
            popular=popular_items(popularity),
        )

    def items(self) -> list[Item]:
        """The catalog the bundle was trained on (items.jsonl), in row order: the API's and the
        worker's catalog when no items file is given."""
        path = self.folder / "items.jsonl"
        if not path.is_file():
            raise BundleError(f"{self.folder} holds no items.jsonl (a variant?): load the main bundle")
        out = []
        for n, line in enumerate(path.read_bytes().splitlines(), 1):
            if not line.strip():
                continue
            try:  # written by write_catalog and digest-checked at load: rebuilt as is, not re-validated
                obj = json.loads(line)
                out.append(
                    Item(
                        item_id=str(obj["item_id"]),
                        title=str(obj["title"]),
                        description=str(obj.get("description", "")),
                        category=str(obj.get("category", "")),
                        brand=str(obj.get("brand", "")),
                        tags=tuple(obj.get("tags", ())),
                        price=None if obj.get("price") is None else float(obj["price"]),
                        attributes=dict(obj.get("attributes", {})),
                    )
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise _fail(path, f"line {n} is not an item record ({exc}): the bundle is damaged") from exc
        return out

    def has_ranking_stage(self) -> bool:
        return "ranking/stage.json" in self.manifest["files"]

    def ranking_stage(self, threads: int = 1) -> RankingStage | None:
        """The learned ranking stage (ranking/, digest-checked at load), or None for a bundle without one."""
        if not self.has_ranking_stage():
            return None
        from ranker.stage import RankingStage  # lightgbm: loaded only for bundles that have a stage

        path = self.folder / "text_vectors.npy"
        text = np.load(path).astype(np.float32) if path.is_file() else np.zeros((len(self.item_ids), 1), np.float32)
        try:
            return RankingStage.load(self.folder / "ranking", text, threads=threads)
        except ValueError as exc:
            raise BundleError(str(exc)) from exc

    def item_fusion(self) -> tuple[Any, Any]:
        """(text encoder, item-fusion session) for live items and search queries."""
        if not (self.folder / "item_fusion.onnx").is_file() or not (self.folder / "encoder").is_dir():
            raise BundleError(f"{self.folder} has no item_fusion.onnx/encoder: {RETRAIN}")
        return TextEncoder(self.folder / "encoder"), create_session(self.folder / "item_fusion.onnx")

    def variants(self) -> dict[str, ModelBundle]:
        """The other fusion strategies under variants/ that this bundle's manifest lists (their
        manifest.json is digested here), each checked against its own digests."""
        parts = (PurePosixPath(name).parts for name in self.manifest["files"])
        names = sorted({p[1] for p in parts if len(p) == 3 and p[0] == "variants" and p[2] == MANIFEST})
        return {n: ModelBundle.load(self.folder / "variants" / n, variant=True) for n in names}

    def user_vectors(
        self,
        histories: Sequence[Sequence[int]],
        types: Sequence[Sequence[int]] | None = None,
        batch_size: int = 512,
    ) -> np.ndarray:
        """User vectors for histories of item ROWS (0-based into item_vectors), oldest first."""
        return self.encoder.encode_rows(self.item_vectors, histories, types, batch_size=batch_size)

    def scores(self, histories: Sequence[Sequence[int]], types: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        return self.user_vectors(histories, types) @ self.item_vectors.T
