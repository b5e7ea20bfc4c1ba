"""Podman's storage set up from a clone that lives deep in the file system: podman refuses a
``--runroot`` over 50 characters, so the run root must not follow the clone's path."""

from __future__ import annotations

from pathlib import Path

from demo.container_engine import PODMAN_RUNROOT_MAX, Podman, short_runroot


def test_podman_works_from_a_deep_clone_path(tmp_path):
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 6, "clone", ".cache", "containers")
    assert len(str(deep / "podman" / "run")) > 150  # what the run root used to be
    pm = Podman(cache=deep)
    assert len(str(pm.runroot)) <= PODMAN_RUNROOT_MAX
    info = pm.run("info", "--format", "{{.Store.RunRoot}}")  # podman checks the run root's length here
    assert info.stdout.strip() == str(pm.runroot)
    assert pm.run("images", "--format", "{{.ID}}").returncode == 0
    assert (deep / "podman" / "root").is_dir()  # the storage itself stays in the clone


def test_each_clone_gets_its_own_short_run_root(tmp_path):
    one, other = tmp_path / "one" / "podman", tmp_path / "other" / "podman"
    assert short_runroot(one) == short_runroot(Path(str(one)))  # the same clone finds its run root again
    assert short_runroot(one) != short_runroot(other)
    assert all(len(str(short_runroot(p))) <= PODMAN_RUNROOT_MAX for p in (one, other))
