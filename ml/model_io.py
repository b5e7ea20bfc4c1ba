"""Model files: skops (no pickle) written byte-for-byte reproducibly, and a model artifact's model
loaded through the model interface.

skops writes a zip whose entries carry the current time and whose object ids (and so
array file names) are CPython ``id()`` values, so two saves of the same model differ. We
renumber ids in order of first appearance and fix every timestamp, so that identical
models have identical bytes and therefore identical digests (the registry de-duplicates
on it).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

# Types skops does not trust by default but that allow-listed estimators contain.
TRUSTED_TYPES = [
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
]
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def _renumber(node, ids: dict[int, int], files: dict[str, str]):
    """Replace every ``__id__`` (and the array file named after it) by a sequence number."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "__id__":
                value = ids.setdefault(value, len(ids) + 1)
            elif key == "file" and isinstance(value, str):
                value = files.setdefault(value, f"a{len(files) + 1:06d}{value[value.rfind('.'):]}")
            else:
                value = _renumber(value, ids, files)
            out[key] = value
        return out
    if isinstance(node, list):
        return [_renumber(v, ids, files) for v in node]
    return node


def dumps(model) -> bytes:
    import skops.io as sio

    original = zipfile.ZipFile(io.BytesIO(sio.dumps(model)))
    files: dict[str, str] = {}
    schema = _renumber(json.loads(original.read("schema.json")), {}, files)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as normalised:
        entries = {"schema.json": json.dumps(schema, sort_keys=True).encode()}
        for info in original.infolist():
            if info.filename != "schema.json":
                entries[files.get(info.filename, info.filename)] = original.read(info.filename)
        for name in sorted(entries):
            fixed = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            fixed.compress_type = zipfile.ZIP_DEFLATED
            fixed.external_attr = 0o644 << 16
            normalised.writestr(fixed, entries[name])
    return out.getvalue()


def loads(data: bytes):
    """Load a model, refusing any type outside skops' defaults and TRUSTED_TYPES."""
    import skops.io as sio

    untrusted = [t for t in sio.get_untrusted_types(data=data) if t not in TRUSTED_TYPES]
    if untrusted:
        raise ValueError(f"model file contains types that are not trusted: {untrusted}")
    return sio.loads(data, trusted=TRUSTED_TYPES)


MODEL_FOLDER = "model"  # the model's own files: ``model/<name>`` in the artifact


def write_model_files(writer, directory) -> list:
    """Put the files a model saved into ``directory`` into the artifact, as ``model/<name>``."""
    from pathlib import Path

    return [writer.write_bytes(f"{MODEL_FOLDER}/{path.name}", path.read_bytes())
            for path in sorted(Path(directory).iterdir())]


def load_verified_model(uri: str, fs=None):
    """(manifest, model) of a model artifact: every file digest verified, the model's class
    allowed here, importable and of the recorded package version (``ml.models.classes``), its
    files copied into a private folder, and loaded there, confined to it (``ml.models.contract``).
    An artifact from before the model interface (``model.skops`` beside the manifest) loads as the
    ``sklearn`` built-in on its numeric features."""
    from ml import artifacts

    manifest = artifacts.open_verified(uri, kind="model", fs=fs)
    return manifest, load_model_of(manifest, fs=fs)


def load_model_of(manifest, fs=None):
    import tempfile
    from pathlib import Path

    from ml import artifacts
    from ml.models.classes import check_recorded
    from ml.models.contract import confined
    from ml.models.interface import ModelContractError

    cls = check_recorded(manifest.extra)
    entries = [e for e in manifest.files if e.name.startswith(f"{MODEL_FOLDER}/")]
    if not entries:
        from ml.models.sklearn_tabular import SklearnModel

        with artifacts.open_file(manifest, manifest.file("model.skops"), fs=fs) as f:
            pipeline = loads(f.read())
        return SklearnModel.from_pipeline(pipeline, None, [c["name"] for c in manifest.schema])
    label = cls.__name__
    with tempfile.TemporaryDirectory(prefix="ml-model-") as tmp:
        folder = Path(tmp)
        for entry in entries:  # copied, and so read once: what loads is what was verified
            with artifacts.open_file(manifest, entry, fs=fs) as f:
                data = f.read()
            if hashlib.sha256(data).hexdigest() != entry.sha256:
                raise artifacts.ArtifactCorruptError(f"{manifest.uri}: {entry.path} changed after verification")
            (folder / entry.name.split("/", 1)[1]).write_bytes(data)
        try:
            with confined(folder, label):
                model = cls.load(folder)
        except ModelContractError:
            raise
        except Exception as exc:
            raise ModelContractError(f"{label}.load failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, cls):
        raise ModelContractError(f"{label}.load returned {type(model).__name__}, not a {cls.__name__}")
    return model


def read_holdout(manifest, columns: list[str] | None = None, rows: int | None = None, fs=None):
    """The held-out rows the trainer saved beside the model (an Arrow table)."""
    import pyarrow.parquet as pq

    from ml import artifacts

    with artifacts.open_file(manifest, manifest.file("holdout.parquet"), fs=fs) as f:
        table = pq.read_table(f, columns=columns)
    return table if rows is None else table.slice(0, rows)
