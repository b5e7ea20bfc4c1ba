"""What a model's ``save`` may write: plain files with plain names, none of them a pickle, no
archive holding one; each refusal names the file and says what to use instead."""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from ml.models.contract import check_saved
from ml.models.interface import ModelContractError


def refusal(tmp_path) -> str:
    with pytest.raises(ModelContractError) as raised:
        check_saved(tmp_path, "M")
    return str(raised.value)


def test_plain_data_files_pass(tmp_path):
    np.save(tmp_path / "w.npy", np.arange(3.0), allow_pickle=False)
    np.savez(tmp_path / "w.npz", a=np.ones(2))
    (tmp_path / "c.json").write_text("{}")
    assert [p.name for p in check_saved(tmp_path, "M")] == ["c.json", "w.npy", "w.npz"]


@pytest.mark.parametrize("name,data,message", [
    ("state.joblib", b"not really", "'state.joblib' is not data-only: its name says pickle"),
    ("state.bin", pickle.dumps([1], protocol=2), "it is a pickle (protocol 2)"),
    ("broken.npy", b"\x93NUMPY\x01\x00garbage", "its .npy header is unreadable"),
])
def test_pickles_by_name_by_opcodes_and_unreadable_arrays_are_refused(tmp_path, name, data, message):
    (tmp_path / name).write_bytes(data)
    assert message in refusal(tmp_path)


def test_an_archive_holding_a_pickle_is_refused_and_a_broken_one_is_only_data(tmp_path):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("inner/", "")
        z.writestr("inner/x.pkl", b"x")
    (tmp_path / "model.zip").write_bytes(archive.getvalue())
    assert "'model.zip' (member inner/x.pkl) is not data-only" in refusal(tmp_path)
    (tmp_path / "model.zip").write_bytes(b"PK\x03\x04 not a real archive")
    assert [p.name for p in check_saved(tmp_path, "M")] == ["model.zip"]


def test_folders_links_odd_names_and_nothing_at_all_are_refused(tmp_path):
    assert "wrote no file" in refusal(tmp_path)
    (tmp_path / "sub").mkdir()
    assert "'sub', which is not a plain file" in refusal(tmp_path)
    os.rmdir(tmp_path / "sub")
    (tmp_path / "real.json").write_text("{}")
    os.symlink(tmp_path / "real.json", tmp_path / "link.json")
    assert "'link.json', which is not a plain file" in refusal(tmp_path)
    os.unlink(tmp_path / "link.json")
    (tmp_path / "wéird name.json").write_text("{}")
    assert "file names may hold letters, digits" in refusal(tmp_path)
