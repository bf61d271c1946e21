"""adapters/http.py: one translation of HTTP failures into the DeliveryError tree."""
from __future__ import annotations

import pytest
import requests
import responses
from responses import matchers

from loyalty_ladder.adapters.http import send
from loyalty_ladder.errors import RateLimited, Rejected, Unavailable

URL = "https://api.example/things"


def call(**kwargs):
    return send(requests.Session(), "POST", URL, who="Example", timeout=3, **kwargs)


@responses.activate(assert_all_requests_are_fired=True)
def test_a_2xx_answer_is_returned_and_the_request_goes_out_as_given():
    responses.post(URL, status=201, json={"id": 1},
                   match=[matchers.json_params_matcher({"a": 1}), matchers.header_matcher({"X-Key": "k"})])
    assert call(json={"a": 1}, headers={"X-Key": "k"}).json() == {"id": 1}


@pytest.mark.parametrize(("exc", "needle"), [
    (requests.exceptions.ReadTimeout("slow"), "Example: timed out after 3 s"),
    (requests.exceptions.ConnectTimeout("slow"), "timed out"),
    (requests.exceptions.ConnectionError("refused"), "Example: could not be reached: ConnectionError"),
])
@responses.activate(assert_all_requests_are_fired=True)
def test_timeouts_and_connection_errors_are_unavailable(exc, needle):
    responses.post(URL, body=exc)
    with pytest.raises(Unavailable, match=needle):
        call()


@pytest.mark.parametrize(("headers", "default", "wait"), [
    ({"Retry-After": "7"}, None, 7.0),
    ({"Retry-After": "7"}, 2.0, 7.0),
    ({}, None, None),  # the outbox's backoff decides
    ({}, 2.0, 2.0),
    ({"Retry-After": "soon"}, 2.0, 2.0),
])
@responses.activate(assert_all_requests_are_fired=True)
def test_429_is_rate_limited_with_the_retry_after(headers, default, wait):
    responses.post(URL, status=429, headers=headers, json={"errors": "Throttled"})
    with pytest.raises(RateLimited) as info:
        call(default_retry_after=default)
    assert info.value.retry_after == wait and "Example: rate limited (HTTP 429): Throttled" in info.value.message


@pytest.mark.parametrize("status", [500, 502, 503, 408])
@responses.activate(assert_all_requests_are_fired=True)
def test_server_errors_and_408_are_unavailable(status):
    responses.post(URL, status=status, body="upstream trouble")
    with pytest.raises(Unavailable, match=f"Example: HTTP {status}: upstream trouble"):
        call()


@pytest.mark.parametrize(("status", "answer", "message", "code"), [
    (400, {"json": {"code": "rest_invalid_param", "message": "Invalid parameter(s): email"}},
     "Invalid parameter(s): email", "rest_invalid_param"),  # WooCommerce / WordPress
    (403, {"json": {"errors": "Access denied"}}, "Access denied", None),  # Shopify, a string
    (422, {"json": {"errors": {"base": ["Unprocessable"]}}}, "base: ['Unprocessable']", None),
    (404, {"json": {"errors": [{"message": "Not Found"}]}}, "Not Found", None),
    (404, {"body": "no such hook"}, "no such hook", None),
    (401, {"body": ""}, "Unauthorized", None),
])
@responses.activate(assert_all_requests_are_fired=True)
def test_other_4xx_are_rejected_with_the_shops_message(status, answer, message, code):
    responses.post(URL, status=status, **answer)
    with pytest.raises(Rejected) as info:
        call()
    assert not isinstance(info.value, (RateLimited, Unavailable))
    assert info.value.message == f"Example: HTTP {status}: {message}"
    assert info.value.errors == {"status": status, "code": code, "message": message}


@responses.activate(assert_all_requests_are_fired=True)
def test_an_unfollowed_redirect_is_rejected_naming_the_target():
    responses.post(URL, status=301, headers={"Location": "https://elsewhere.example/"})
    with pytest.raises(Rejected, match="HTTP 301: redirected to https://elsewhere.example/"):
        call(allow_redirects=False)
