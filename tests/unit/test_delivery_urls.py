"""The idempotency key on Apprise channels that can carry a request header, read back by
Apprise itself (its URL parser is what builds the request)."""

from __future__ import annotations

import apprise
from hypothesis import given
from hypothesis import strategies as st

from delivery.worker import HEADER_SCHEMES, IDEMPOTENCY_HEADER, apprise_url


def headers_of(url: str) -> dict[str, str]:
    ap = apprise.Apprise()
    assert ap.add(url), url
    [server] = list(ap)
    return dict(server.headers)  # type: ignore[attr-defined]


def test_json_form_and_xml_channels_carry_the_key_as_a_header() -> None:
    for scheme in ("json", "jsons", "form", "forms", "xml", "xmls"):
        url = apprise_url(f"{scheme}://user:pw@example.invalid:8080/hook", "a1b2")
        assert headers_of(url) == {IDEMPOTENCY_HEADER: "a1b2"}


def test_the_channels_own_headers_and_payload_are_kept_and_a_stale_key_replaced() -> None:
    url = apprise_url("json://h/p?:extra=1&+X-Team=ops&+idempotency-key=old", "new")
    assert headers_of(url) == {"X-Team": "ops", IDEMPOTENCY_HEADER: "new"}
    ap = apprise.Apprise()
    ap.add(url)
    assert next(iter(ap)).payload_extras == {"extra": "1"}  # type: ignore[attr-defined]


def test_channels_without_request_headers_are_left_as_they_are() -> None:
    for url in ("ntfy://topic", "discord://1234/abcd", "mailto://u:p@example.invalid"):
        assert apprise_url(url, "a1b2") == url
    assert "apprise" in HEADER_SCHEMES and "ntfy" not in HEADER_SCHEMES


@given(st.text(alphabet="0123456789abcdef", min_size=1, max_size=64))
def test_any_alert_id_arrives_unchanged(key: str) -> None:
    assert headers_of(apprise_url("json://127.0.0.1:9/x", key))[IDEMPOTENCY_HEADER] == key
