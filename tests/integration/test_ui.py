"""The dashboard's front door over the real API app (SQLite and PostgreSQL, real Redis):
login and its cookie, the redirect when logged out, CSRF on every button, tenancy, and the
pages staying out of the OpenAPI schema."""

from __future__ import annotations

import pytest

from jobs.models import Job
from tests.integration.test_api import Api
from tests.integration.ui_helpers import ORIGIN, csrf_of, login, press, submit

pytestmark = pytest.mark.integration


def test_login_form_sets_a_strict_httponly_cookie_scoped_to_ui(api: Api) -> None:
    """The form takes a field named `key`; a good key redirects to the jobs list with a
    session cookie that is HttpOnly, SameSite=Strict, Path=/ui and not Secure over http;
    the form then sends a logged-in browser on to the jobs."""
    form = api.client.get("/ui/login")
    assert form.status_code == 200 and 'name="key"' in form.text
    response = login(api)
    assert response.status_code == 303 and response.headers["location"] == "/ui/"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie
    assert api.key in cookie  # the key itself is the session, as the REST API's bearer
    jobs = api.client.get("/ui/")
    assert jobs.status_code == 200 and "<h1>Jobs</h1>" in jobs.text
    again = api.client.get("/ui/login", follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == "/ui/"


def test_the_cookie_is_secure_over_https(sqlite_api: Api) -> None:
    """Logged in over https, the session cookie is also marked Secure."""
    response = sqlite_api.client.post(
        "https://testserver/ui/login",
        data={"key": sqlite_api.key},
        headers={"Origin": "https://testserver"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert "Secure" in response.headers["set-cookie"]


@pytest.mark.parametrize("key", ["", "nonsense", "sb_0123456789ab_notthesecret", "k" * 5000])
def test_a_bad_key_re_renders_the_form_with_401(sqlite_api: Api, key: str) -> None:
    """An empty, malformed, unknown or huge key is a 401 page with the form and a clear
    message, and sets no cookie."""
    response = (
        login(sqlite_api, key)
        if key
        else sqlite_api.client.post("/ui/login", data={"key": ""}, headers={"Origin": ORIGIN})
    )
    assert response.status_code == 401
    assert 'name="key"' in response.text and "That key is not valid" in response.text
    assert "set-cookie" not in response.headers


def test_a_login_form_posted_from_another_site_is_refused(sqlite_api: Api) -> None:
    """Login CSRF: the form posted with a foreign Origin is a 403, with no cookie."""
    response = sqlite_api.client.post(
        "/ui/login", data={"key": sqlite_api.key}, headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403 and "set-cookie" not in response.headers


@pytest.mark.parametrize(
    "path", ["/ui/", "/ui/jobs/job_0", "/ui/schedules", "/ui/schedules/x", "/ui/providers"]
)
def test_every_page_redirects_to_login_without_a_session(sqlite_api: Api, path: str) -> None:
    """A page asked for without a valid cookie is a 303 to /ui/login."""
    response = sqlite_api.client.get(path, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/ui/login"


def test_a_forged_or_revoked_cookie_is_no_session(sqlite_api: Api) -> None:
    """A cookie holding a key that is not a tenant's redirects to login; live endpoints 401."""
    sqlite_api.client.cookies.set("speechbatch_ui", "0" * 32 + ".sb_0123456789ab_nope", path="/ui")
    page = sqlite_api.client.get("/ui/", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/ui/login"
    live = sqlite_api.client.get("/ui/api/jobs")
    assert live.status_code == 401 and live.json()["error"]["code"] == "unauthorized"


def test_logout_clears_the_session(sqlite_api: Api) -> None:
    """The logout button (a CSRF-checked POST) drops the cookie; pages then redirect."""
    login(sqlite_api)
    response = press(sqlite_api, "/ui/logout", csrf_of(sqlite_api))
    assert response.status_code == 303 and response.headers["location"] == "/ui/login"
    assert sqlite_api.client.get("/ui/", follow_redirects=False).status_code == 303


def test_buttons_refuse_a_missing_or_wrong_token_and_a_foreign_origin(api: Api) -> None:
    """Cancel without the session's token, with another token, from another Origin or with
    neither Origin nor Referer is a 403 page that says why, and cancels nothing; with all
    of them right it cancels."""
    job_id = submit(api, 3)
    login(api)
    csrf = csrf_of(api, f"/ui/jobs/{job_id}")
    action = f"/ui/jobs/{job_id}/cancel"
    cases = [
        (None, ORIGIN, "security token"),
        ("f" * 64, ORIGIN, "security token"),
        (csrf, "https://evil.example", "did not come from"),
        (csrf, None, "did not come from"),
        ("x" * 10_000, ORIGIN, "security token"),
    ]
    for token, origin, says in cases:
        refused = press(api, action, token, origin)
        assert refused.status_code == 403, (token, origin)
        assert says in refused.text
    with api.resources.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == "queued"
    done = press(api, action, csrf)
    assert done.status_code == 303 and done.headers["location"] == f"/ui/jobs/{job_id}"
    with api.resources.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == "canceled" and job.canceled == 3


def test_a_referer_from_this_host_passes_the_origin_check(sqlite_api: Api) -> None:
    """Without Origin, a Referer naming this host is accepted (some browsers omit Origin)."""
    job_id = submit(sqlite_api, 1)
    login(sqlite_api)
    csrf = csrf_of(sqlite_api, f"/ui/jobs/{job_id}")
    response = sqlite_api.client.post(
        f"/ui/jobs/{job_id}/cancel",
        data={"csrf": csrf},
        headers={"Referer": f"{ORIGIN}/ui/jobs/{job_id}"},
        follow_redirects=False,
    )
    assert response.status_code == 303


def test_each_login_gets_its_own_token(sqlite_api: Api) -> None:
    """A token from an earlier session does not pass with a new session's cookie."""
    job_id = submit(sqlite_api, 1)
    login(sqlite_api)
    old = csrf_of(sqlite_api)
    login(sqlite_api)
    new = csrf_of(sqlite_api)
    assert old != new
    assert press(sqlite_api, f"/ui/jobs/{job_id}/cancel", old).status_code == 403


def test_another_tenants_job_is_a_404_everywhere(api: Api) -> None:
    """globex cannot see, poll, cancel or fetch outputs of acme's job: each is a 404."""
    job_id = submit(api, 2)
    login(api, api.other_key)
    page = api.client.get(f"/ui/jobs/{job_id}")
    assert page.status_code == 404 and "No job with that id" in page.text
    assert job_id not in api.client.get("/ui/").text
    live = api.client.get(f"/ui/api/jobs/{job_id}")
    assert live.status_code == 404 and live.json()["error"]["code"] == "not_found"
    assert api.client.get(f"/ui/api/jobs/{job_id}/items").status_code == 404
    assert api.client.get(f"/ui/jobs/{job_id}/items/line-001/output").status_code == 404
    csrf = csrf_of(api)
    assert press(api, f"/ui/jobs/{job_id}/cancel", csrf).status_code == 404
    assert press(api, f"/ui/jobs/{job_id}/retry", csrf).status_code == 404


def test_ui_routes_are_not_in_the_openapi_schema(sqlite_api: Api) -> None:
    """No /ui/ path appears in /openapi.json."""
    paths = sqlite_api.client.get("/openapi.json").json()["paths"]
    assert paths and not [p for p in paths if p.startswith("/ui")]


def test_pages_allow_loading_only_from_this_api(sqlite_api: Api) -> None:
    """Pages carry a CSP of `default-src 'self'` and no-store; the assets they name are
    served by the API itself."""
    login(sqlite_api)
    page = sqlite_api.client.get("/ui/")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    for asset, media in [("app.js", "javascript"), ("style.css", "text/css")]:
        served = sqlite_api.client.get(f"/ui/static/{asset}")
        assert served.status_code == 200 and media in served.headers["content-type"]
        assert f"/ui/static/{asset}" in page.text
