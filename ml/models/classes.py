"""Which model classes may run: fixed by the deployment, never by a request.

A model class is named ``package.module:Class`` and must be importable in the trainer's and the
server's image. The built-ins have short names; a deployment allows its own classes with
``ML_MODEL_CLASSES`` (comma-separated ``package.module:Class`` or ``name=package.module:Class``),
set in its Airflow environment and in the images that train and serve them. The trigger form
offers exactly these names, the trainer refuses any other, and the server refuses an artifact
whose class is not allowed, cannot be imported, or comes from another version of its package.
"""

from __future__ import annotations

import importlib
import os
import re

from ml.models.interface import Model

ENVIRONMENT = "ML_MODEL_CLASSES"
BUILTINS = {
    "sklearn": "ml.models.sklearn_tabular:SklearnModel",
    "text": "ml.models.text:TextClassifier",
}
BUILTIN_PACKAGE = "ml"  # this project's own ml/: its format is versioned by the artifact, not a package
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")


class ModelClassError(ValueError):
    """A model class that may not, or cannot, run here; the message says what to change."""


def allowed(environ=None) -> dict[str, str]:
    """Every name a config may give (short names and full paths) -> its ``package.module:Class``."""
    env = os.environ if environ is None else environ
    names = dict(BUILTINS)
    names.update({path: path for path in BUILTINS.values()})
    for entry in (e.strip() for e in env.get(ENVIRONMENT, "").split(",")):
        if not entry:
            continue
        name, _, path = entry.rpartition("=")
        if not _PATH.match(path) or (name and not _NAME.match(name)):
            raise ModelClassError(f"{ENVIRONMENT}: {entry!r} is not package.module:Class or name=package.module:Class")
        if name:
            if name in names and names[name] != path:
                raise ModelClassError(f"{ENVIRONMENT}: the name {name!r} is already {names[name]}")
            names[name] = path
        names[path] = path
    return names


def choices(environ=None) -> list[str]:
    """The names the trigger form offers: short names where there is one, else the path."""
    table = allowed(environ)
    short = {path for name, path in table.items() if name != path}
    return sorted(name for name, path in table.items() if name != path or path not in short)


def qualified(name: str, environ=None) -> str:
    """The ``package.module:Class`` of an allowed name, or ModelClassError naming the choices."""
    table = allowed(environ)
    if name not in table:
        raise ModelClassError(
            f"model {name!r} is not allowed in this deployment; choose one of {choices(environ)}, or allow the "
            f"class with {ENVIRONMENT}=package.module:Class where it trains and serves (its package installed)")
    return table[name]


def import_class(path: str) -> type[Model]:
    """The class at ``package.module:Class``, which must subclass ``ml.models.Model``."""
    module_name, _, class_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelClassError(f"model class {path} cannot be imported in this image ({exc}): install its package "
                              f"in the trainer's and the server's image") from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, Model):
        raise ModelClassError(f"{path} is not a subclass of ml.models.Model")
    return cls


def package_of(cls: type) -> tuple[str, str]:
    """(distribution name, version) of the installed package whose files hold ``cls``'s module (a
    top-level name alone is not enough: some distributions ship a stray ``tests`` package)."""
    import sys
    from importlib.metadata import packages_distributions, version

    top = cls.__module__.split(".")[0]
    if top == BUILTIN_PACKAGE:
        from ml import __version__

        return BUILTIN_PACKAGE, __version__
    module_file = getattr(sys.modules.get(cls.__module__), "__file__", None) or ""
    from importlib.metadata import distribution

    for name in packages_distributions().get(top, []):
        if _holds(distribution(name), module_file):
            return name, version(name)
    raise ModelClassError(f"{cls.__module__}.{cls.__name__} is not from an installed package: make it one "
                          f"(a pyproject.toml, `pip install` into the image) so its version can be recorded")


def _holds(dist, module_file: str) -> bool:
    """Whether ``module_file`` is one of ``dist``'s files, or inside its editable install's folder."""
    import json
    import os
    from urllib.parse import unquote, urlparse

    real = os.path.realpath(module_file)
    if any(os.path.realpath(dist.locate_file(f)) == real for f in dist.files or ()):
        return True
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
    except ValueError:
        return False
    if direct.get("dir_info", {}).get("editable") and direct.get("url", "").startswith("file://"):
        return real.startswith(os.path.realpath(unquote(urlparse(direct["url"]).path)) + os.sep)
    return False


def check_recorded(extra: dict, environ=None) -> type[Model]:
    """The class an artifact's manifest records, refused unless it is allowed here, imports, and
    comes from the same version of its package as the one that trained it."""
    path = extra.get("model_class")
    if not path:  # written before the model interface: a scikit-learn estimator in model.skops
        path = BUILTINS["sklearn"]
    if path not in allowed(environ).values():
        raise ModelClassError(f"the artifact's model class {path} is not allowed here; allow it with "
                              f"{ENVIRONMENT}={path} (and install its package)")
    cls = import_class(path)
    recorded = extra.get("model_package")
    if recorded and recorded != BUILTIN_PACKAGE:
        name, installed = package_of(cls)
        wanted = extra.get("model_package_version")
        if wanted != installed:
            raise ModelClassError(f"the artifact was trained with {recorded}=={wanted}, this image has "
                                  f"{name}=={installed}: serve it from an image with {recorded}=={wanted}, "
                                  f"or retrain it with {installed}")
    return cls
