"""A model artifact packed the way a managed endpoint takes it in.

SageMaker wants one ``model.tar.gz`` in S3, unpacked into ``/opt/ml/model``; Vertex AI wants an
``artifact_uri`` folder in GCS (``ml.artifacts.copy_verified`` stages it there), copied into
``AIP_STORAGE_URI``. Either way the artifact keeps
its own layout (``manifest.json`` + ``w-<id>/`` files), so the server in the container verifies
every digest exactly as it does anywhere else. The artifact is verified before it is packed: a
tampered or half-written model never leaves for the cloud.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile
import tempfile
from typing import IO

from ml import artifacts

NAME_LIMIT = 63  # SageMaker model / endpoint-config names and Vertex display names


def cloud_name(*parts: str, limit: int = NAME_LIMIT) -> str:
    """``a-b-c`` from ``parts``, keeping only ``[A-Za-z0-9-]`` (SageMaker's name rule), at most
    ``limit`` characters; the *last* part (the one that makes it unique) is never cut."""
    clean = [re.sub(r"[^A-Za-z0-9]+", "-", p).strip("-") for p in parts]
    tail = clean[-1]
    head = "-".join(c for c in clean[:-1] if c)[: max(limit - len(tail) - 1, 1)].rstrip("-")
    return f"{head}-{tail}" if head else tail[:limit]


def short_id(uri: str) -> str:
    """Eight hex characters naming an artifact URI (the same URI always gives the same id)."""
    return hashlib.sha256(uri.encode()).hexdigest()[:8]


def model_tarball(uri: str) -> tuple[IO[bytes], artifacts.Manifest]:
    """The verified model artifact at ``uri`` as a gzipped tar (a temporary file, rewound) whose
    root is the artifact root. Byte-identical for the same artifact: sorted members, no owners,
    no timestamps, so re-packing never makes a "new" model."""
    manifest = artifacts.open_verified(uri, kind="model")
    fs, root = artifacts.resolve(manifest.uri)
    out = tempfile.TemporaryFile()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        members = sorted(manifest.files, key=lambda f: f.path)
        for entry in members:
            with fs.open(f"{root}/{entry.path}", "rb") as f:
                tar.addfile(_member(entry.path, entry.size), f)
        text = manifest.to_json().encode()
        tar.addfile(_member(artifacts.MANIFEST_NAME, len(text)), io.BytesIO(text))
    out.seek(0)
    return out, manifest


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = size, 0, 0o644, "", ""
    return info
