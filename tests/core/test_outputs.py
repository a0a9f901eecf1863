"""Atomic outputs and the run lock of an output folder."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from lungcad.core.outputs import OutputBusyError, OutputError, atomic_path, owned_output


def test_atomic_replace_removes_only_what_it_made(tmp_path) -> None:
    target = tmp_path / "part"
    target.mkdir()
    (target / "old.csv").write_text("old")
    bystander = tmp_path / "part.tmp"  # the name the old writer used for its scratch
    bystander.mkdir()
    (bystander / "keep").write_text("not ours")
    with atomic_path(target, "a part") as tmp:
        tmp.mkdir()
        (tmp / "new.csv").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.csv"]
    assert (bystander / "keep").read_text() == "not ours"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part", "part.tmp"]  # no scratch


def test_a_failed_write_leaves_the_previous_output(tmp_path) -> None:
    target = tmp_path / "table.csv"
    target.write_text("previous")
    with pytest.raises(RuntimeError), atomic_path(target, "the table") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed half way")
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_a_folder_in_the_way_of_a_file_is_not_removed(tmp_path) -> None:
    target = tmp_path / "seg.dcm"
    target.mkdir()
    (target / "precious").write_text("x")
    with (
        pytest.raises(OutputError, match="a folder is in the way"),
        atomic_path(target, "the SEG") as tmp,
    ):
        tmp.write_text("new")
    assert (target / "precious").read_text() == "x"


def _hold(out, ready, release) -> None:
    with owned_output(out, "lungcad detect"):
        ready.set()
        release.wait(30)


def test_a_second_run_on_one_output_folder_names_the_first(tmp_path) -> None:
    # spawn, not fork: a fork of a test worker's threads can inherit a lock held mid-call
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(tmp_path / "out", ready, release))
    holder.start()
    try:
        assert ready.wait(120)
        busy = rf"in use by lungcad detect \(pid {holder.pid}"
        with pytest.raises(OutputBusyError, match=busy), owned_output(tmp_path / "out", "x"):
            pass
    finally:
        release.set()
        holder.join(30)
    with owned_output(tmp_path / "out", "lungcad detect") as out:  # free again
        assert out.is_dir()


def _unwritable(folder) -> int:
    """In a child process that may not write ``folder`` (root drops to nobody, whom no
    permission bit can be ignored for): 0 when owned_output says so in one error."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            with owned_output(folder, "x"):
                pass
        except OutputError as exc:
            code = 0 if "permission denied" in str(exc) else 3
        finally:
            os._exit(code)
    return os.waitpid(pid, 0)[1] >> 8


def test_an_output_folder_that_is_a_file_or_read_only_is_one_error(tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file"), owned_output(tmp_path / "file", "x"):
        pass
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    assert _unwritable(read_only) == 0
