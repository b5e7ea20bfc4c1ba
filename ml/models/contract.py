"""The checks that keep a model's artifact data-only and its loading confined to it.

- ``check_saved``: what ``save`` wrote is plain files with plain names, none of them a pickle
  (by name, by the pickle opcodes it starts with, or an object array inside ``.npy``/``.npz``),
  and no archive (a skops file, an ``.npz``) holding one.
- ``confined``: while a model loads, an audit hook (PEP 578) refuses every file opened outside its
  directory (code and installed package data excepted) and every unpickled global. A hook sees
  what the model's code really does, wherever it opens from; it is a contract check for code the
  image already trusts, not a sandbox.
"""

from __future__ import annotations

import io
import os
import re
import sys
import threading
import zipfile
from contextlib import contextmanager
from pathlib import Path

from ml.models.interface import ModelContractError

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".dill", ".cloudpickle", ".pt", ".pth", ".ckpt")
_CODE_SUFFIXES = (".py", ".pyc", ".so", ".pth")
_SYSTEM = ("/proc/", "/sys/", "/dev/")
# read-only system data a library may read while loading (time zones, locales, shared libraries)
_SYSTEM_DATA = ("/usr/", "/lib/", "/lib64/", "/etc/localtime", "/etc/timezone", "/etc/ld.so.")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,199}$")
_state = threading.local()
_hook_installed = False
_hook_lock = threading.Lock()


def _pickle_reason(name: str, head: bytes) -> str | None:
    if name.lower().endswith(PICKLE_SUFFIXES):
        return "its name says pickle"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "it is a pickle (protocol %d)" % head[1]
    if head.startswith(b"\x93NUMPY"):
        try:
            _, _, dtype = _npy_header(head)
        except ValueError as exc:
            return f"its .npy header is unreadable ({exc})"
        if dtype.hasobject:
            return "it is a .npy array of Python objects (it loads only by unpickling)"
    return None


def _npy_header(data: bytes):
    import numpy as np

    stream = io.BytesIO(data)
    major, _ = np.lib.format.read_magic(stream)
    reader = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    return reader(stream)


def _scan(name: str, data: bytes, where: str) -> None:
    reason = _pickle_reason(name, data[:4096])
    if reason:
        raise ModelContractError(f"{where} is not data-only: {reason}. Save arrays with numpy.save/savez "
                                 f"(read back with allow_pickle=False), JSON, skops, safetensors or ONNX")
    if data[:4] == b"PK\x03\x04":  # an archive (.npz, skops, ...): every member must be data too
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for member in archive.infolist():
                    if not member.is_dir():
                        _scan(member.filename, archive.read(member), f"{where} (member {member.filename})")
        except zipfile.BadZipFile:
            pass


def check_saved(directory: Path, model_name: str) -> list[Path]:
    """The files ``save`` wrote, or ModelContractError saying what is wrong with them."""
    directory = Path(directory)
    files = []
    for entry in sorted(directory.iterdir()):
        where = f"{model_name}.save wrote {entry.name!r}"
        if entry.is_symlink() or not entry.is_file():
            raise ModelContractError(f"{where}, which is not a plain file (a folder or a link): save plain files "
                                     f"directly into the directory it is given")
        if not _NAME.match(entry.name):
            raise ModelContractError(f"{where}: file names may hold letters, digits, '.', '_' and '-' only")
        _scan(entry.name, entry.read_bytes(), where)
        files.append(entry)
    if not files:
        raise ModelContractError(f"{model_name}.save wrote no file: a model must save its fitted state")
    return files


def _allowed_roots() -> tuple[str, ...]:
    roots = {os.path.realpath(p) + "/" for p in {sys.prefix, sys.base_prefix, sys.exec_prefix}}
    return tuple(sorted(roots))


def _audit(event: str, args) -> None:
    if event != "open" and event != "pickle.find_class":
        return
    guard = getattr(_state, "guard", None)
    if guard is None:
        return
    directory, model_name, roots = guard
    if event == "pickle.find_class":
        _refuse(f"{model_name}.load unpickled {args[0]}.{args[1]}: a model artifact holds data only, never a pickle")
    path, mode = args[0], args[1]
    if not isinstance(path, (str, bytes, os.PathLike)):
        return  # an already open file descriptor
    real = os.path.realpath(os.fsdecode(path))
    if real.startswith(directory) or real.startswith(_SYSTEM):
        return
    reading = mode is None or ("r" in str(mode) and "+" not in str(mode))
    if reading and (real.endswith(_CODE_SUFFIXES) or real.startswith(roots) or real.startswith(_SYSTEM_DATA)):
        return  # importing code, package data of the installed environment, system data
    _refuse(f"{model_name}.load opened {real}, outside its directory: load may read only the files save wrote")


_audit.__cantrace__ = True  # CPython runs audit hooks untraced unless asked: coverage and debuggers see it


def _refuse(message: str) -> None:
    _state.violation = _state.violation or message
    raise ModelContractError(message)


def _install_hook() -> None:
    global _hook_installed
    with _hook_lock:
        if not _hook_installed:
            sys.addaudithook(_audit)  # process-wide and permanent: it returns at once unless a guard is set
            _hook_installed = True


@contextmanager
def confined(directory: Path, model_name: str):
    """While the body runs in this thread, files outside ``directory`` and pickles are refused; a
    violation is raised after the body even when the model's code caught it."""
    _install_hook()
    _state.violation = None
    _state.guard = (os.path.realpath(directory) + "/", model_name, _allowed_roots())
    try:
        yield
    finally:
        _state.guard = None
    if _state.violation:
        violation, _state.violation = _state.violation, None
        raise ModelContractError(violation)
