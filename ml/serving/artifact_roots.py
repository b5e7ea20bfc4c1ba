"""Where the admin endpoint may load models from: a URI is accepted only inside one of the
server's artifact roots, so a holder of the admin token cannot make the server read (and run
skops-loading on) arbitrary files or buckets. ``..`` segments and symlinks on local paths are
resolved before the comparison."""

from __future__ import annotations

import os
import posixpath


class OutsideArtifactRoots(ValueError):
    pass


def _normalise(uri: str) -> tuple[str, str]:
    """(protocol, absolute normalised path) of a URI or plain path."""
    protocol, sep, path = uri.partition("://")
    if not sep:
        protocol, path = "file", uri
    if protocol in ("file", "local"):
        return "file", os.path.realpath(path)
    return protocol, posixpath.normpath("/" + path.lstrip("/"))


def parse_roots(value: str | None) -> tuple[str, ...]:
    """Comma-separated roots (``ML_SERVE_ARTIFACT_ROOTS``); empty entries dropped."""
    return tuple(r.strip() for r in (value or "").split(",") if r.strip())


def check_inside(uri: str, roots: tuple[str, ...]) -> None:
    """Raise ``OutsideArtifactRoots`` unless ``uri`` lies inside one of ``roots``."""
    if not roots:
        raise OutsideArtifactRoots("this server has no artifact roots, so it loads no model by URI through "
                                   "/admin/model; start it with --artifact-root URI (or ML_SERVE_ARTIFACT_ROOTS)")
    protocol, path = _normalise(uri)
    for root in roots:
        root_protocol, root_path = _normalise(root)
        if protocol == root_protocol and (path == root_path or path.startswith(root_path.rstrip("/") + "/")):
            return
    raise OutsideArtifactRoots(f"{uri} is outside this server's artifact roots {list(roots)}; deploy a model "
                               f"written under one of them, or start the server with --artifact-root for its store")
