"""Which caller-given ``X-Request-ID`` values the API keeps (``manager.middleware``): a sane one is echoed in
logs, error bodies and the response header, anything else is replaced by a fresh id."""

from __future__ import annotations

import pytest

from manager.middleware import SAFE_REQUEST_ID


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        (b"abc-123_x.y", True),
        (b"x" * 64, True),
        (b"x" * 65, False),
        (b"", False),
        (b"abc\n", False),  # "$" alone matches before a final newline; a header value must not carry one
        (b"abc\r\nSet-Cookie: x", False),
        (b"a b", False),
    ],
)
def test_only_sane_request_ids_are_kept(given: bytes, kept: bool) -> None:
    assert (SAFE_REQUEST_ID.fullmatch(given) is not None) == kept
