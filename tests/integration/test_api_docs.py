"""What the API says about itself: the OpenAPI schema it serves and the offline /docs page.

The schema is read as a client reads it (GET /openapi.json), from an in-process API on SQLite.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from jobs.api import create_app
from jobs.settings import Settings
from workers.audio import _ENCODINGS
from workers.render import RENDERERS

pytestmark = pytest.mark.integration

ENVELOPE = {"$ref": "#/components/schemas/ErrorEnvelope"}
# The error statuses each route can really return (README "REST API", jobs/api/routes_*.py).
ERRORS = {
    ("post", "/v1/jobs"): {"400", "401", "409", "413", "422"},
    ("get", "/v1/jobs"): {"400", "401", "422"},
    ("get", "/v1/jobs/{job_id}"): {"401", "404"},
    ("get", "/v1/jobs/{job_id}/items"): {"400", "401", "404", "422"},
    ("get", "/v1/jobs/{job_id}/manifest"): {"401", "404"},
    ("get", "/v1/jobs/{job_id}/items/{item_id}/output"): {"401", "404", "422"},
    ("post", "/v1/jobs/{job_id}/cancel"): {"401", "404"},
    ("post", "/v1/jobs/{job_id}/retry"): {"401", "404", "409"},
    ("post", "/v1/uploads"): {"400", "401", "413", "415", "422"},
    ("post", "/v1/schedules"): {"400", "401", "409", "413", "422"},
    ("get", "/v1/schedules"): {"400", "401", "422"},
    ("get", "/v1/schedules/{schedule_id}"): {"401", "404", "422"},
    ("patch", "/v1/schedules/{schedule_id}"): {"400", "401", "404", "409", "413", "422"},
    ("delete", "/v1/schedules/{schedule_id}"): {"401", "404"},
    ("post", "/v1/schedules/{schedule_id}/run"): {"401", "404"},
    ("get", "/v1/webhook-secret"): {"401"},
    ("get", "/v1/providers"): {"401"},
    ("post", "/v1/webhook-secret/rotate"): {"401"},
    ("get", "/v1/jobs/{job_id}/webhooks"): {"401", "404"},
    ("post", "/v1/jobs/{job_id}/webhooks/{delivery_id}/redeliver"): {"401", "404"},
}


@pytest.fixture
def client(sqlite_url: str, redis_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        database_url=sqlite_url, broker_url=redis_url, storage_url=f"file://{tmp_path / 'o'}"
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def schema(client: TestClient) -> dict[str, Any]:
    served: dict[str, Any] = client.get("/openapi.json").json()
    return served


def test_every_v1_route_declares_bearer_auth_and_healthz_is_open(schema: dict[str, Any]) -> None:
    """The schema names an HTTP bearer scheme, every /v1 operation requires it, /healthz not."""
    assert schema["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: `speechbatch keys create`.",
    }
    operations = {(m, p): op for p, ops in schema["paths"].items() for m, op in ops.items()}
    assert set(ERRORS) == {key for key in operations if key[1].startswith("/v1/")}
    for (method, path), operation in operations.items():
        expected = [{"HTTPBearer": []}] if path.startswith("/v1/") else None
        assert operation.get("security") == expected, (method, path)
    parameters = [p["name"].lower() for op in operations.values() for p in op.get("parameters", [])]
    assert "authorization" not in parameters  # the scheme, not a loose header parameter


def test_each_route_declares_its_error_statuses_with_the_envelope(schema: dict[str, Any]) -> None:
    """Each route lists the 4xx statuses it can return, all as `{"error": {code, message}}`."""
    for (method, path), statuses in ERRORS.items():
        responses = schema["paths"][path][method]["responses"]
        assert {s for s in responses if s.startswith("4")} == statuses, (method, path)
        for status in [*statuses, "default"]:
            content = responses[status]["content"]
            assert content == {"application/json": {"schema": ENVELOPE}}, (method, path, status)
    components = schema["components"]["schemas"]
    assert "HTTPValidationError" not in components
    envelope = components["ErrorEnvelope"]
    assert envelope["required"] == ["error"]
    assert components["ErrorBody"]["required"] == ["code", "message"]
    codes = components["ErrorCode"]["enum"]
    assert {"invalid_request", "format_unavailable", "unauthorized"} <= set(codes)


def test_streamed_routes_declare_the_media_types_they_send(schema: dict[str, Any]) -> None:
    """The manifest is JSON Lines, and the output route lists every type a worker stores."""
    manifest = schema["paths"]["/v1/jobs/{job_id}/manifest"]["get"]["responses"]["200"]
    assert list(manifest["content"]) == ["application/x-ndjson"]
    output = schema["paths"]["/v1/jobs/{job_id}/items/{item_id}/output"]["get"]
    declared = set(output["responses"]["200"]["content"])
    stored = {e.content_type for e in _ENCODINGS.values()} | {t for _, t in RENDERERS.values()}
    assert declared == stored | {"application/json"}
    (fmt,) = [p for p in output["parameters"] if p["name"] == "format"]
    assert {"wav", "mp3", "json", "vtt"} <= set(fmt["schema"]["anyOf"][0]["enum"])


def test_docs_load_their_assets_from_this_api_not_a_cdn(client: TestClient) -> None:
    """/docs and /redoc reference only local URLs, and those answer with JavaScript and CSS."""
    kinds = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    for page in ("/docs", "/redoc"):
        html = client.get(page)
        assert html.status_code == 200
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html.text)
        assert urls and all(u.startswith("/docs/assets/") for u in urls), urls
        assert "http://" not in html.text and "https://" not in html.text
        for url in urls:
            asset = client.get(url)
            assert asset.status_code == 200, url
            assert asset.headers["content-type"].startswith(kinds[Path(url).suffix]), url
            assert len(asset.content) > 1000
