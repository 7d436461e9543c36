"""The receiver's link-target rule (blobs.names.link_escape_reason): an
absolute target, or one that steps above the link's top-level item when
resolved lexically (following the manifest's own links), is unsafe."""

from __future__ import annotations

import pytest

from p2pcp.blobs.names import MAX_LINK_HOPS, link_escape_reason


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("d/l", "x"),
        ("d/l", "."),
        ("d/l", "sub/../x"),
        ("d/a/l", "../sibling"),  # inside a folder item, a sibling is fine
        ("d/a/b/l", "../../x"),
        ("d/a/l", "a/../../x"),  # up from d/a/a, back to d: inside
        ("d/l", "x//y/./z/"),
        ("d/l", "\udcff"),
        ("photos/l", "photos-not"),  # a name beside the link
    ],
)
def test_targets_that_stay_inside(path: str, target: str) -> None:
    assert link_escape_reason(path, target) is None


@pytest.mark.parametrize(
    ("path", "target", "reason"),
    [
        ("d/l", "a/../../x", "leaves 'd'"),
        ("d/l", "..", "leaves 'd'"),
        ("d/l", "../d/x", "leaves 'd'"),  # passes outside even if it comes back
        ("d/a/l", "../../x", "leaves 'd'"),
        ("d/l", "/etc/passwd", "absolute"),
        ("d/a/l", "/d/a/x", "absolute"),
        ("d/l", "x/../../..", "leaves 'd'"),
    ],
)
def test_targets_that_escape(path: str, target: str, reason: str) -> None:
    found = link_escape_reason(path, target)
    assert found is not None and reason in found


def test_the_manifests_own_links_are_followed() -> None:
    # d/deep/up -> .. is safe (it is d); d/l -> deep/up/.. is safe as text,
    # but physically goes up from d.
    links = {"d/deep/up": "..", "d/here": "."}
    assert link_escape_reason("d/deep/up", "..", links) is None
    reason = link_escape_reason("d/l", "deep/up/..", links)
    assert reason is not None and "leaves 'd'" in reason
    assert link_escape_reason("d/l", "deep/up/x", links) is None  # d/x
    assert link_escape_reason("d/l", "here/here/x", links) is None
    # A link as the last component is not followed (it is checked itself).
    assert link_escape_reason("d/l", "deep/up", links) is None
    absolute = {"d/abs": "/etc"}
    reason = link_escape_reason("d/l", "abs/passwd", absolute)
    assert reason is not None and "absolute" in reason


def test_a_loop_of_links_is_unsafe() -> None:
    links = {"d/a": "b/x", "d/b": "a/x"}
    reason = link_escape_reason("d/l", "a/x", links)
    assert reason is not None and "too many links" in reason
    chain = {f"d/l{n}": f"l{n + 1}/." for n in range(MAX_LINK_HOPS + 5)}
    assert link_escape_reason("d/x", "l0/y", chain) is not None
