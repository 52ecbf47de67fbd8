"""`workdir.atomic_write`: the mode of any new file, nothing left behind on
failure (no TensorFlow import)."""

import errno
import os
import stat

import pytest

from vma_tf import workdir


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["022", "027"])
def test_atomic_write_gives_the_mode_of_a_new_file(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = tmp_path / "config.json"
        workdir.atomic_write(path, "{}\n")
        workdir.atomic_write(path, "{}\n")  # A replaced file too.
    finally:
        os.umask(old)
    assert os.umask(old) == old  # The umask is left as it was.
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert path.read_text() == "{}\n"


def test_atomic_write_failure_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    path.write_text("old\n")

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "replace", full_disk)
        with pytest.raises(OSError, match="No space left"):
            workdir.atomic_write(path, "new\n")
    # A failure while writing (a lone surrogate cannot be encoded).
    with pytest.raises(UnicodeEncodeError):
        workdir.atomic_write(path, "new \ud800\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    assert path.read_text() == "old\n"
