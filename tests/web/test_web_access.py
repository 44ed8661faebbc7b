"""Who gets into the dashboard, over real HTTP: every page needs a signed-in session; the login
takes the API token or the dashboard password and says nothing more when it refuses; every form
needs the session's CSRF token; the API and the webhook path work as before."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from http.cookies import SimpleCookie

import httpx
import pytest
from seeded import PASSWORD, csrf_of, dashboard_settings, serve, sign_in

from builders import envelope, phone_quality
from conftest import API_TOKEN, LiveServer
from waquality.alerting import book
from waquality.web.auth import COOKIE, MAX_FAILURES

PAGES = [
    "/",
    "/numbers",
    "/numbers/106540352242922",
    "/templates",
    "/templates/806312974732579",
    "/alerts",
    "/response-times",
]
FORMS = ["/alerts/silences", "/alerts/silences/1/expire", "/logout"]


@pytest.fixture
def server(database_url: str) -> Iterator[LiveServer]:
    yield from serve(dashboard_settings(database_url))


def fresh(server: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30)


def cookie_attributes(response: httpx.Response) -> dict[str, str | bool]:
    [header] = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
    parsed = SimpleCookie()
    parsed.load(header)
    morsel = parsed[COOKIE]
    return {
        "httponly": bool(morsel["httponly"]),
        "samesite": str(morsel["samesite"]).lower(),
        "path": str(morsel["path"]),
        "max-age": str(morsel["max-age"]),
    }


def test_every_page_sends_a_stranger_to_the_login(server: LiveServer) -> None:
    with fresh(server) as client:
        for path in [*PAGES, "/numbers?range=all&waba=1"]:
            response = client.get(path, follow_redirects=False)
            assert response.status_code == 303, path
            location = httpx.URL(response.headers["location"])
            assert location.path == "/login"
            assert location.params["next"] == path
            assert response.headers["cache-control"] == "no-store"
        for path in FORMS:  # forms too, before anything is read
            response = client.post(path, data={"csrf": "x"}, follow_redirects=False)
            assert response.status_code in (303, 403), path
            assert response.headers.get("location", "/login").startswith("/login")


def test_a_forged_or_foreign_cookie_is_no_session(server: LiveServer) -> None:
    with fresh(server) as client:
        assert sign_in(client).status_code == 303
        good = client.cookies[COOKIE]
        for forged in (good[:-3] + "abc", "x", good.split(".")[0]):
            client.cookies.set(COOKIE, forged)
            assert client.get("/", follow_redirects=False).status_code == 303
        client.cookies.set(COOKIE, good)
        assert client.get("/").status_code == 200


def test_the_api_token_signs_in_with_a_strict_http_only_cookie(server: LiveServer) -> None:
    with fresh(server) as client:
        page = client.get("/login", params={"next": "/alerts?range=7d"})
        assert page.status_code == 200
        anonymous = cookie_attributes(page)
        assert anonymous["httponly"] and anonymous["samesite"] == "strict"
        response = client.post(
            "/login",
            data={"csrf": csrf_of(page.text), "secret": API_TOKEN, "next": "/alerts?range=7d"},
            follow_redirects=False,
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/alerts?range=7d"
        signed = cookie_attributes(response)
        assert signed == {"httponly": True, "samesite": "strict", "path": "/", "max-age": "43200"}
        assert API_TOKEN not in response.headers["set-cookie"]
        assert client.get("/alerts").status_code == 200


def test_the_configured_password_signs_in_too(server: LiveServer) -> None:
    with fresh(server) as client:
        assert sign_in(client, PASSWORD).status_code == 303
        assert client.get("/numbers").status_code == 200


def test_a_wrong_login_says_only_that_it_is_wrong(server: LiveServer) -> None:
    answers = set()
    with fresh(server) as client:
        for secret in (API_TOKEN + "x", PASSWORD[:-1], "nothing", API_TOKEN.upper()):
            response = sign_in(client, secret)
            assert response.status_code == 401
            answers.add(response.text.split('role="alert">', 1)[1].split("<", 1)[0])
            assert COOKIE not in response.headers.get("set-cookie", "")
        assert client.get("/", follow_redirects=False).status_code == 303
    assert answers == {"That token or password is not right."}


def test_wrong_logins_are_braked(server: LiveServer) -> None:
    with fresh(server) as client:
        for _ in range(MAX_FAILURES):
            assert sign_in(client, "guess").status_code == 401
        assert sign_in(client, API_TOKEN).status_code == 429  # even the right one, for a while


def test_the_login_form_needs_its_csrf_token(server: LiveServer) -> None:
    with fresh(server) as client:
        client.get("/login")
        for data in ({"secret": API_TOKEN}, {"secret": API_TOKEN, "csrf": "forged"}):
            response = client.post("/login", data=data, follow_redirects=False)
            assert response.status_code == 403
            assert client.get("/", follow_redirects=False).status_code == 303
    with fresh(server) as other:  # no session at all (a form posted from elsewhere)
        response = other.post("/login", data={"secret": API_TOKEN, "csrf": "x"})
        assert response.status_code == 403


def test_forms_of_a_signed_in_session_need_its_csrf_token(server: LiveServer) -> None:
    with fresh(server) as client:
        assert sign_in(client).status_code == 303
        page = client.get("/alerts")
        data = {"matchers": "waba_id=102290129340398", "duration": "2h", "comment": "x"}
        for csrf in (None, "forged", csrf_of(page.text)[:-1]):
            form = {**data, **({"csrf": csrf} if csrf else {})}
            response = client.post("/alerts/silences", data=form, follow_redirects=False)
            assert response.status_code == 403
        assert book.silences(server.runtime.db, datetime.now(UTC)) == []
        response = client.post(
            "/alerts/silences", data={**data, "csrf": csrf_of(page.text)}, follow_redirects=False
        )
        assert response.status_code == 303
        [silence] = book.silences(server.runtime.db, datetime.now(UTC))
        assert silence["matchers"] == {"waba_id": "102290129340398"}
        # a form that is not URL-encoded is refused
        response = client.post(
            "/alerts/silences", json={**data, "csrf": csrf_of(page.text)}, follow_redirects=False
        )
        assert response.status_code == 415
        # logging out needs it too, and ends the session
        assert client.post("/logout", data={"csrf": "forged"}).status_code == 403
        assert client.get("/").status_code == 200
        out = client.post("/logout", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert client.get("/", follow_redirects=False).status_code == 303


def test_a_bad_silence_is_refused_with_the_form_kept(server: LiveServer) -> None:
    with fresh(server) as client:
        sign_in(client)
        csrf = csrf_of(client.get("/alerts").text)
        for matchers, duration in (("no label", "2h"), ("waba_id=1", "forever"), ("a=b", "0")):
            response = client.post(
                "/alerts/silences",
                data={"csrf": csrf, "matchers": matchers, "duration": duration},
            )
            assert response.status_code == 400
            assert "Not silenced" in response.text and duration in response.text
        assert client.post("/alerts/silences/999/expire", data={"csrf": csrf}).status_code == 404


def test_the_next_page_is_always_on_this_site(server: LiveServer) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:1"):
        with fresh(server) as client:
            response = sign_in(client, target=target)
            assert response.status_code == 303
            assert response.headers["location"] == "/", target


def test_pages_carry_a_strict_content_security_policy(server: LiveServer) -> None:
    with fresh(server) as client:
        sign_in(client)
        for path in ("/", "/login"):
            headers = client.get(path).headers
            assert "script-src 'self'" in headers["content-security-policy"]
            assert "frame-ancestors 'none'" in headers["content-security-policy"]
            assert headers["x-content-type-options"] == "nosniff"
        static = client.get("/static/dashboard.css")
        assert static.status_code == 200 and static.headers["content-type"].startswith("text/css")
        assert client.get("/static/../app.py").status_code == 404


def test_a_link_from_another_site_looks_again_with_the_cookie(server: LiveServer) -> None:
    # A SameSite=Strict cookie is not sent on a navigation from another site: the page asks
    # the browser to load it again from here (where it is sent) rather than ask for a login.
    with fresh(server) as client:
        response = client.get(
            "/alerts", headers={"Sec-Fetch-Site": "cross-site"}, follow_redirects=False
        )
        assert response.status_code == 200
        assert 'http-equiv="refresh" content="0;url=/alerts"' in response.text


def test_the_api_keeps_its_bearer_token_and_the_webhook_path_works(server: LiveServer) -> None:
    with fresh(server) as client:
        sign_in(client)
        assert client.get("/").status_code == 200
        # a dashboard session does not open the API
        for path in ("/api/v1/phone-numbers", "/metrics"):
            assert client.get(path).status_code == 401
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        assert client.get("/api/v1/phone-numbers", headers=headers).status_code == 200
        assert client.get("/api/v1/nothing-here", headers=headers).status_code == 404
    body = envelope(phone_quality("FLAGGED", 1_750_000_000))
    assert server.post_webhook(body).status_code == 200
    server.wait_processed()
    assert server.api("/api/v1/phone-numbers")["items"][0]["status"] == "FLAGGED"


def test_unknown_numbers_and_templates_are_a_page_saying_so(server: LiveServer) -> None:
    with fresh(server) as client:
        sign_in(client)
        for path in ("/numbers/19999999999", "/templates/424242", "/templates/%3Cscript%3E"):
            response = client.get(path)
            assert response.status_code == 404
            assert "No such" in response.text and "<script>" not in response.text
