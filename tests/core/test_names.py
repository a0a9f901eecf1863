"""Names from outside data never name another place; paths outside the output root are
refused."""

from __future__ import annotations

import pytest

from lungcad.core.names import UnsafePathError, inside, is_uid, safe_name, scan_stem


@pytest.mark.parametrize(
    "value",
    ["1.3.6.1.4.1.14519.5.2.1.6279.6001.298806137288633453246975630178", "LIDC-IDRI-0001", "a"],
)
def test_uids_and_plain_identifiers_are_kept(value) -> None:
    assert safe_name(value) == value


@pytest.mark.parametrize(
    "value",
    ["../../../x", "/etc/passwd", "..", ".", "", "a/b", "a\\b", "x\x00y", "é" * 80, "-rf", "~"],
)
def test_anything_else_becomes_one_plain_name(tmp_path, value) -> None:
    name = safe_name(value)
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert name not in (".", "..") and name[0].isalnum() and len(name) <= 53
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()


def test_distinct_values_keep_distinct_names() -> None:
    values = ["../x", "..x", "/x", "x/", "x", "x-0274b71897ca", "../../../x"]
    assert len({safe_name(v) for v in values}) == len(values)


def test_uid_syntax() -> None:
    assert is_uid("1.2.840.10008.5.1.4.1.1.2")
    for bad in ("1.02.3", "1..2", ".1", "1.2.", "1.2.a", "1" * 65, "", None, 1.2):
        assert not is_uid(bad)


def test_paths_outside_the_root_are_refused(tmp_path) -> None:
    assert inside(tmp_path, tmp_path / "a" / "b.csv") == tmp_path / "a" / "b.csv"
    with pytest.raises(UnsafePathError, match="outside the output folder"):
        inside(tmp_path / "out", tmp_path / "out" / ".." / "elsewhere")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError):
        inside(tmp_path / "out", tmp_path / "out" / "link" / "x")


def test_scan_stem_of_hostile_headers_is_one_name() -> None:
    stem = scan_stem("../../../p", "../../../x")
    assert "/" not in stem and not stem.startswith(".")
    assert (
        scan_stem("LIDC-IDRI-0001", "1.2.3.4.5.6.7.8.9.10.11.12") == "LIDC-IDRI-0001_8.9.10.11.12"
    )
