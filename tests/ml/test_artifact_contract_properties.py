"""The artifact contract under any interleaving (hypothesis, stateful): several writers of one
URI write files, commit, abort, crash mid-file, crash mid-commit or vanish without cleaning up,
in any order. After every step a reader gets exactly the last committed artifact, complete and
verified, or, before any commit, a clear "incomplete" refusal; never a mix, never a partial file."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from ml import artifacts

payloads = st.lists(st.tuples(st.sampled_from(["a.bin", "b.bin", "c.parquet"]), st.binary(max_size=64)),
                    min_size=1, max_size=3, unique_by=lambda t: t[0])


class Crash(Exception):
    """Stands for the process dying at that point: nothing after it runs."""


class ArtifactWrites(RuleBasedStateMachine):
    writers = Bundle("writers")

    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="artifact-prop-")
        self.uri = os.path.join(self.dir, "artifact")
        self.committed: dict[str, bytes] | None = None

    def teardown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(target=writers, files=payloads)
    def start(self, files):
        return {"writer": artifacts.ArtifactWriter(self.uri, "model"), "todo": list(files), "done": {}}

    @rule(w=writers)
    def write_next(self, w):
        if w["todo"]:
            name, data = w["todo"].pop(0)
            w["writer"].write_bytes(name, data)
            w["done"][name] = data

    @rule(w=writers, cut=st.integers(min_value=0, max_value=63))
    def crash_mid_file(self, w, cut):
        """Half a file on disk, not recorded: a retry writes it again under the same name."""
        if w["todo"]:
            name, data = w["todo"][0]
            with pytest.raises(Crash), w["writer"].open(name) as f:
                f.write(data[:cut])
                raise Crash

    @rule(w=consumes(writers))
    def commit(self, w):
        if not w["done"]:
            return
        try:
            w["writer"].commit(schema=[], row_count=None, lineage={})
        except artifacts.ArtifactIncompleteError:
            return  # another writer committed and removed these files: refused, nothing changes
        self.committed = dict(w["done"])

    @rule(w=consumes(writers))
    def crash_in_commit(self, w):
        """The process dies after writing the manifest's temp file, before the rename."""
        if not w["done"]:
            return
        real = os.replace

        def die(src, dst):
            raise Crash

        os.replace = die
        try:  # or refused before the manifest, when another writer's commit removed these files
            with pytest.raises((Crash, artifacts.ArtifactIncompleteError)):
                w["writer"].commit(schema=[], row_count=None, lineage={})
        finally:
            os.replace = real

    @rule(w=consumes(writers))
    def abort(self, w):
        w["writer"].abort()

    @rule(w=consumes(writers))
    def vanish(self, w):
        """The writer's process is killed: its files stay, nobody cleans up."""

    @invariant()
    def readers_see_the_last_commit_whole_or_a_refusal(self):
        if self.committed is None:
            with pytest.raises(artifacts.ArtifactIncompleteError):
                artifacts.open_verified(self.uri, kind="model")
            return
        manifest = artifacts.open_verified(self.uri, kind="model")
        seen = {}
        for entry in manifest.files:
            with artifacts.open_file(manifest, entry) as f:
                seen[entry.name] = f.read()
        assert seen == self.committed


ArtifactWrites.TestCase.settings = settings(max_examples=150, stateful_step_count=25, deadline=None,
                                            suppress_health_check=[HealthCheck.too_slow])
test_artifact_writes = ArtifactWrites.TestCase
