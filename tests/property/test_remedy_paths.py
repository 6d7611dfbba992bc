"""The file fixes read paths as pathlib and ``os.path`` do, on any name.

``create-missing-parent-directory`` records the directory it creates as
``str(Path(name).absolute().parent)`` did, and takes a value for the file an error names as
``os.path.abspath`` compares them; both read the common names off the string, without building
paths. The references below build them, on names made of the parts that pathlib treats apart:
empty parts, ``.``, ``..``, leading and trailing slashes, a leading ``//``.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from onward.healing.remedies import _absolute_parent, _same_file

PARTS = st.sampled_from(["", ".", "..", "a", "b.txt", "é", " ", "~", "a.b", "\\"])
NAMES = st.lists(PARTS, max_size=6).map("/".join) | st.builds(
    lambda lead, name: lead + name, st.sampled_from(["/", "//", "///", "./"]), st.just("a/b")
)


@settings(max_examples=400)
@given(NAMES)
@example("")
@example("/")
@example("//")
@example("/a")
@example("a")
@example("/a/b/")
@example("/a/./b")
@example("/a/..")
def test_the_parent_directory_is_the_one_pathlib_gives(name: str) -> None:
    assert _absolute_parent(name) == str(Path(name).absolute().parent)
    assert _absolute_parent(Path(name)) == str(Path(name).absolute().parent)


@settings(max_examples=300)
@given(NAMES, NAMES)
@example("/a/b", "/a/b")
@example("/a/b", "/a//b")
@example("a/b", "a/b")
@example("/a/../b", "/b")
def test_a_file_is_the_same_as_os_path_says(one: str, other: str) -> None:
    expected = os.path.abspath(one) == os.path.abspath(other)
    assert _same_file(one, other) is expected
    assert _same_file(Path(one), other) is expected


def test_bytes_and_other_values_are_no_file() -> None:
    assert not _same_file(b"/a/b", "/a/b")
    assert not _same_file("/a/b", None)
    assert not _same_file(3, "/a/b")
