"""The artifact contract: every snapshot and model directory ends with a manifest.json.

Why: a manifest written last and atomically turns "is this directory complete?" into
"does manifest.json exist?", which sensors can wait for and readers can trust. Readers
verify the sha256 of every listed file before use, so a half-written or tampered
artifact is refused instead of silently read.

Layout of an artifact at URI::

    URI/manifest.json                  written last (rename locally, one PUT on object stores)
    URI/w-<write_id>/<name>            data files of the write the manifest points at

Each write puts its files under a fresh ``w-<write_id>/`` prefix, so re-writing the same
URI never touches the files a current manifest lists: the manifest swap is the atomic
switch, and files of older writes are removed only after it.

Works on any fsspec URI (``file://``, plain paths, ``s3://``, ``gs://``, ``memory://``);
pass ``fs=`` to use an already-configured filesystem (e.g. Airflow's ObjectStoragePath.fs).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
KINDS = ("snapshot", "model", "predictions")
_CHUNK = 4 * 1024 * 1024


class ArtifactError(Exception):
    """Base class: something about an artifact makes it unusable."""


class ArtifactIncompleteError(ArtifactError):
    """The directory has no manifest: it is still being written, or its write failed."""


class ArtifactCorruptError(ArtifactError):
    """A listed file is missing or its digest/size differs from the manifest."""


class ArtifactKindError(ArtifactError):
    """The manifest is of another kind than the caller expects."""


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the artifact root, e.g. "w-.../part-00000.parquet"
    sha256: str
    size: int

    @property
    def name(self) -> str:
        """The file's name inside its write: ``part-00000.parquet``, ``model/model.skops``."""
        return self.path.split("/", 1)[1] if "/" in self.path else self.path


@dataclass(frozen=True)
class Manifest:
    kind: str
    files: tuple[FileEntry, ...]
    schema: tuple[dict[str, str], ...]
    row_count: int | None
    created_at: str
    lineage: dict[str, Any]
    digest: str
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    uri: str = ""  # where it was read from; not serialised

    def to_json(self) -> str:
        body = asdict(self)
        body.pop("uri")
        return json.dumps(body, indent=2, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str, uri: str = "") -> Manifest:
        try:
            body = json.loads(text)
            files = tuple(FileEntry(**f) for f in body.pop("files"))
            schema = tuple(body.pop("schema"))
            return cls(files=files, schema=schema, uri=uri, **body)
        except (ValueError, TypeError, KeyError) as exc:
            raise ArtifactCorruptError(f"{uri}/{MANIFEST_NAME} is not a valid manifest: {exc}") from exc

    def file(self, name: str) -> FileEntry:
        """The single entry whose file name is ``name``."""
        hits = [f for f in self.files if f.name == name]
        if len(hits) != 1:
            raise ArtifactCorruptError(
                f"{self.uri}: manifest lists {len(hits)} files named {name!r}, expected exactly one"
            )
        return hits[0]

    def files_with_suffix(self, suffix: str) -> list[FileEntry]:
        return sorted((f for f in self.files if f.path.endswith(suffix)), key=lambda f: f.path)


def content_digest(files: list[FileEntry] | tuple[FileEntry, ...]) -> str:
    """A digest of what the artifact holds, independent of write ids and timestamps.

    Two writes of identical content have the same digest: that is what lets the
    registry recognise "this model is already registered".
    """
    canonical = sorted((f.name, f.sha256, f.size) for f in files)
    return hashlib.sha256(json.dumps(canonical).encode()).hexdigest()


def resolve(uri: str, fs: fsspec.AbstractFileSystem | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path without protocol) for a URI."""
    if fs is not None:
        return fs, fs._strip_protocol(uri)
    return fsspec.core.url_to_fs(uri)


def _join(root: str, rel: str) -> str:
    return f"{root.rstrip('/')}/{rel}"


class _HashingWriter:
    """A file object wrapper that hashes and counts what goes through it."""

    def __init__(self, raw: IO[bytes]):
        self._raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        mv = memoryview(data).cast("B")
        self.sha.update(mv)
        self.size += mv.nbytes
        return self._raw.write(mv)

    def flush(self) -> None:
        self._raw.flush()

    def tell(self) -> int:
        return self.size

    @property
    def closed(self) -> bool:
        return self._raw.closed

    def close(self) -> None:
        self._raw.close()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False


class ArtifactWriter:
    """Write files of one artifact, then commit the manifest.

    Nothing is visible to readers until :meth:`commit`; an exception before that leaves
    the previous manifest (if any) in force and the partial files unreferenced.
    """

    def __init__(self, uri: str, kind: str, fs: fsspec.AbstractFileSystem | None = None,
                 write_id: str | None = None):
        """``write_id``: name this write's prefix (``w-<write_id>``) when several processes write
        its files (batch scoring's shards); by default a fresh one."""
        if kind not in KINDS:
            raise ValueError(f"artifact kind must be one of {KINDS}, got {kind!r}")
        if write_id is not None and not all(c.isalnum() or c in "-_." for c in write_id):
            raise ValueError(f"write_id may hold letters, digits, '-', '_' and '.', got {write_id!r}")
        self.uri = uri.rstrip("/")
        self.kind = kind
        self.fs, self.root = resolve(self.uri, fs)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        self.prefix = f"w-{write_id}" if write_id else f"w-{stamp}-{uuid.uuid4().hex[:8]}"
        self._entries: list[FileEntry] = []
        self._committed = False

    @contextmanager
    def open(self, name: str) -> Iterator[_HashingWriter]:
        """A binary file handle for ``name``; its digest is recorded when it closes."""
        folder, _, base = name.rpartition("/")
        if base in ("", MANIFEST_NAME, ".", "..") or "/" in folder or folder in (".", "..") or name.startswith("/"):
            raise ValueError(f"invalid artifact file name {name!r}: a file name, or one folder and a file name")
        rel = f"{self.prefix}/{name}"
        path = _join(self.root, rel)
        self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        with self.fs.open(path, "wb") as raw:
            writer = _HashingWriter(raw)
            yield writer
        self._entries.append(FileEntry(rel, writer.sha.hexdigest(), writer.size))

    @property
    def staging_uri(self) -> str:
        """Where another writer (a warehouse's export job) puts this write's files; nothing there is
        visible to readers until :meth:`adopt` and :meth:`commit`."""
        return _join(self.uri, self.prefix)

    def adopt(self, names: set[str] | None = None) -> list[FileEntry]:
        """Record the files another writer left under :attr:`staging_uri` (only ``names``, when
        given), hashing each once (streamed: the bytes pass through, the rows are never decoded)."""
        root = _join(self.root, self.prefix)
        try:
            paths = sorted(p for p in self.fs.find(root) if p.rstrip("/") != root)
        except FileNotFoundError:
            paths = []
        adopted = []
        for path in paths:
            name = path[len(root.rstrip("/")) + 1:]
            if names is not None and name not in names:
                continue
            sha, size = _file_digest(self.fs, path)
            adopted.append(FileEntry(f"{self.prefix}/{name}", sha, size))
        self._entries.extend(adopted)
        return adopted

    def write_bytes(self, name: str, data: bytes) -> FileEntry:
        with self.open(name) as f:
            f.write(data)
        return self._entries[-1]

    def commit(
        self,
        *,
        schema: list[dict[str, str]],
        row_count: int | None,
        lineage: dict[str, Any],
        extra: dict[str, Any] | None = None,
    ) -> Manifest:
        """Write the manifest atomically, then remove files of earlier writes."""
        if self._committed:
            raise RuntimeError("artifact already committed")
        if not self._entries:
            raise ValueError(f"refusing to commit an empty artifact at {self.uri}")
        self._check_files_still_there()
        manifest = Manifest(
            kind=self.kind,
            files=tuple(self._entries),
            schema=tuple(schema),
            row_count=row_count,
            created_at=datetime.now(timezone.utc).isoformat(),
            lineage=dict(lineage),
            digest=content_digest(self._entries),
            extra=dict(extra or {}),
            uri=self.uri,
        )
        _atomic_put(self.fs, _join(self.root, MANIFEST_NAME), manifest.to_json().encode())
        self._committed = True
        self._remove_stale_writes()
        return manifest

    def _check_files_still_there(self) -> None:
        """Every listed file is where it was written, at its size: another writer of the same URI
        that committed meanwhile removes this write's files as stale, and a manifest over them
        would be refused by every reader. Then this commit is refused instead; the other write
        stays in force."""
        for entry in self._entries:
            try:
                size = self.fs.info(_join(self.root, entry.path))["size"]
            except FileNotFoundError:
                size = None
            if size != entry.size:
                raise ArtifactIncompleteError(
                    f"{self.uri}: {entry.path} is gone or changed since it was written (another write of this "
                    f"artifact committed meanwhile and removed it); nothing was committed, run the write again")

    def abort(self) -> None:
        """Remove this write's files (best effort); the previous manifest stays in force."""
        if not self._committed:
            try:
                self.fs.rm(_join(self.root, self.prefix), recursive=True)
            except FileNotFoundError:
                pass

    def remove_unlisted(self) -> None:
        """After a commit: remove files under this write's prefix that the manifest does not list
        (left by an earlier try of a shared write)."""
        listed = {_join(self.root, e.path) for e in self._entries}
        try:
            paths = self.fs.find(_join(self.root, self.prefix))
        except FileNotFoundError:
            return
        for path in paths:
            if path not in listed:
                self.fs.rm(path)

    def _remove_stale_writes(self) -> None:
        try:
            children = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return
        for child in children:
            base = posixpath.basename(child.rstrip("/"))
            if base.startswith("w-") and base != self.prefix:
                self.fs.rm(child, recursive=True)


def _atomic_put(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Local: temp file + fsync + rename. Object stores: one PUT is already atomic."""
    if isinstance(fs, LocalFileSystem):
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


def manifest_exists(uri: str, fs: fsspec.AbstractFileSystem | None = None) -> bool:
    fs, root = resolve(uri.rstrip("/"), fs)
    return fs.exists(_join(root, MANIFEST_NAME))


def read_manifest(
    uri: str, kind: str | None = None, fs: fsspec.AbstractFileSystem | None = None
) -> Manifest:
    """The manifest at ``uri``; raises if absent (incomplete) or of another kind."""
    uri = uri.rstrip("/")
    fs, root = resolve(uri, fs)
    path = _join(root, MANIFEST_NAME)
    try:
        text = fs.cat_file(path).decode()
    except FileNotFoundError:
        raise ArtifactIncompleteError(
            f"{uri} has no {MANIFEST_NAME}: the artifact is incomplete (still being written, "
            f"or its writer failed) and will not be read"
        ) from None
    manifest = Manifest.from_json(text, uri=uri)
    if kind is not None and manifest.kind != kind:
        raise ArtifactKindError(f"{uri} holds a {manifest.kind!r} artifact, expected {kind!r}")
    return manifest


def verify(manifest: Manifest, fs: fsspec.AbstractFileSystem | None = None) -> None:
    """Recompute size and sha256 of every listed file; raise on the first mismatch."""
    verify_files(manifest, manifest.files, fs)
    if content_digest(manifest.files) != manifest.digest:
        raise ArtifactCorruptError(f"{manifest.uri}: manifest digest does not match its file list")


def verify_files(manifest: Manifest, entries, fs: fsspec.AbstractFileSystem | None = None) -> None:
    """Recompute size and sha256 of the listed ``entries`` (a reader of part of an artifact)."""
    fs, root = resolve(manifest.uri, fs)
    for entry in entries:
        try:
            sha, size = _file_digest(fs, _join(root, entry.path))
        except FileNotFoundError:
            raise ArtifactCorruptError(f"{manifest.uri}: listed file {entry.path} is missing") from None
        if size != entry.size or sha != entry.sha256:
            raise ArtifactCorruptError(
                f"{manifest.uri}: {entry.path} does not match its manifest "
                f"(expected sha256 {entry.sha256[:12]}… size {entry.size}, "
                f"found sha256 {sha[:12]}… size {size}); refusing to use a modified artifact"
            )


def check_listing(manifest: Manifest, fs: fsspec.AbstractFileSystem | None = None) -> None:
    """The cheap half of ``verify``: the manifest's digest over its file list, and each listed
    file present at its size; no file is read. For a planner that
    reads only footers, leaving each file's sha256 to the reader of its rows."""
    if content_digest(manifest.files) != manifest.digest:
        raise ArtifactCorruptError(f"{manifest.uri}: manifest digest does not match its file list")
    fs, root = resolve(manifest.uri, fs)
    for entry in manifest.files:
        try:
            size = fs.size(_join(root, entry.path))
        except FileNotFoundError:
            raise ArtifactCorruptError(f"{manifest.uri}: listed file {entry.path} is missing") from None
        if size != entry.size:
            raise ArtifactCorruptError(f"{manifest.uri}: {entry.path} is {size} bytes, its manifest says "
                                       f"{entry.size}; refusing to use a modified artifact")


class VerifiedFile:
    """One listed file, its size and sha256 checked once, then opened as often as needed (a
    pyarrow file each time, so threads can read it at once). ``close`` releases it.

    A local file is memory-mapped and hashed from the map, so the pages that were hashed are the
    pages then parsed: one pass over the bytes, not a hashing read and then a parsing read (an
    artifact's files are never rewritten in place: a new write goes under a new prefix). Elsewhere
    the file is hashed as it streams, and each ``open`` opens it again."""

    def __init__(self, manifest: Manifest, entry: FileEntry, fs: fsspec.AbstractFileSystem | None = None):
        import pyarrow as pa

        self._fs, root = resolve(manifest.uri, fs)
        self._path, self._buffer, self._map = _join(root, entry.path), None, None
        if not isinstance(self._fs, LocalFileSystem):
            verify_files(manifest, [entry], self._fs)
            return
        try:
            self._map = pa.memory_map(self._path, "r")
        except FileNotFoundError:
            raise ArtifactCorruptError(f"{manifest.uri}: listed file {entry.path} is missing") from None
        data = self._map.read_buffer()
        sha = hashlib.sha256(data).hexdigest()  # releases the GIL: other threads work meanwhile
        if data.size != entry.size or sha != entry.sha256:
            self.close()
            raise ArtifactCorruptError(
                f"{manifest.uri}: {entry.path} does not match its manifest "
                f"(expected sha256 {entry.sha256[:12]}… size {entry.size}, "
                f"found sha256 {sha[:12]}… size {data.size}); refusing to use a modified artifact"
            )
        self._buffer = data

    def open(self):
        import pyarrow as pa

        if self._buffer is not None:
            return pa.BufferReader(self._buffer)
        if self._map is not None:
            raise ValueError(f"{self._path} was closed")
        return pa.PythonFile(self._fs.open(self._path, "rb"), mode="r")

    def close(self) -> None:
        self._buffer = None  # the map stays until the last Arrow buffer read from it is gone
        if self._map is not None:
            self._map.close()

    def __enter__(self) -> VerifiedFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _file_digest(fs: fsspec.AbstractFileSystem, path: str) -> tuple[str, int]:
    """(sha256 hex, size) of one file, streamed."""
    sha, size = hashlib.sha256(), 0
    with fs.open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


def copy_verified(uri: str, dest: str, kind: str) -> Manifest:
    """Copy the verified artifact at ``uri`` to ``dest`` (any fsspec URI): files first, the
    manifest last and atomically, so ``dest`` is complete or has no (new) manifest; the copy is
    verified. Nothing is copied when ``dest`` already holds an artifact with the same digest."""
    manifest = open_verified(uri, kind=kind)
    dest = dest.rstrip("/")
    if manifest.uri == dest:
        return manifest
    if manifest_exists(dest):
        there = read_manifest(dest, kind=kind)
        if there.digest == manifest.digest:
            verify(there)
            return there
    src_fs, src_root = resolve(manifest.uri)
    dst_fs, dst_root = resolve(dest)
    for entry in manifest.files:
        target = _join(dst_root, entry.path)
        dst_fs.makedirs(posixpath.dirname(target), exist_ok=True)
        with src_fs.open(_join(src_root, entry.path), "rb") as src, dst_fs.open(target, "wb") as dst:
            while chunk := src.read(_CHUNK):
                dst.write(chunk)
    _atomic_put(dst_fs, _join(dst_root, MANIFEST_NAME), manifest.to_json().encode())
    return open_verified(dest, kind=kind)


def open_verified(
    uri: str, kind: str | None = None, fs: fsspec.AbstractFileSystem | None = None
) -> Manifest:
    """Read the manifest and verify every file: the one entry point readers should use."""
    manifest = read_manifest(uri, kind=kind, fs=fs)
    verify(manifest, fs=fs)
    return manifest


def file_uri(manifest: Manifest, entry: FileEntry) -> str:
    return _join(manifest.uri, entry.path)


def open_file(manifest: Manifest, entry: FileEntry, fs: fsspec.AbstractFileSystem | None = None):
    return open_file_at(manifest.uri, entry.path, fs)


def open_file_at(uri: str, rel: str, fs: fsspec.AbstractFileSystem | None = None):
    fs, root = resolve(uri.rstrip("/"), fs)
    return fs.open(_join(root, rel), "rb")
