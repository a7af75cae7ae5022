"""Per-draft image state in ``poflow status`` (table and JSON) and the API's upload status, on both databases:
counts always, the per-draft list bounded (drafts and images per draft) with how many more there are."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from poflow_dagster.api import create_app
from poflow_dagster.api.queries import merchant_upload_status
from poflow_dagster.api.settings import ApiSettings
from poflow_dagster.images.collect import collect_images
from poflow_dagster.images.status import IMAGES_PER_DRAFT, upload_image_status
from poflow_dagster.status_view import render_status, status_json
from poflow_dagster.store.drafts import drafts_for_upload
from poflow_dagster.store.schema import DraftImage
from poflow_dagster.store.tokens import issue_token
from poflow_dagster.store.workflow import status_report
from poflow_dagster_tests.image_server import ImageServer, image_server  # noqa: F401
from poflow_dagster_tests.test_image_collect import _Attach, _settings, _upload


@pytest.fixture
def allowed(monkeypatch):
    monkeypatch.setenv("POFLOW_IMAGE_ALLOWED_HOSTS", "127.0.0.1")


def _collected(db, server: ImageServer, tmp_path) -> str:
    """An upload whose drafts have: A an attached PNG, B a 404, C no image at all."""
    upload = _upload(db, {"A": [server.url("/png")], "B": [server.url("/missing")], "C": []})
    collect_images(db, upload, settings=_settings(tmp_path), attach=_Attach())
    return upload


def test_status_json_lists_each_drafts_images_with_state_source_and_reason(db, image_server, allowed, tmp_path):
    upload = _collected(db, image_server, tmp_path)

    images = upload_image_status(db, upload)

    assert images["counts"] == {"drafts": 3, "drafts_with_images": 2, "attached": 1, "fetched": 0, "found": 0,
                                "duplicate": 0, "rejected": 1, "skipped": 0, "failed": 0}
    assert images["rejected"] == {"http_404": 1} and images["drafts_more"] == 0
    a, b = images["drafts"]
    assert (a["sku"], b["sku"]) == ("A", "B")  # drafts without images are counted, not listed
    assert a["images"] == [{"state": "attached", "source": "document", "url": image_server.url("/png"),
                            "media_gid": "gid://shopify/MediaImage/1", "reason": None}]
    assert b["images"][0]["state"] == "rejected" and b["images"][0]["reason"].startswith("http_404")

    data = status_json(status_report(db, upload), images)
    assert data["images"] == images and {"upload_id", "workflow", "stages", "verification"} <= set(data)
    text = render_status(status_report(db, upload), images)
    assert "images      1 attached, 1 rejected  (2 of 3 drafts)" in text
    assert "rejected    http_404 1" in text
    assert any(line.split()[:3] == ["A", "attached", "document"] and "gid://shopify/MediaImage/1" in line
               for line in text.splitlines())
    assert any(line.split()[:3] == ["B", "rejected", "document"] and "http_404" in line for line in text.splitlines())


def test_the_api_and_the_cli_show_the_same_images(home, db, db_url, image_server, allowed, tmp_path):
    upload = _collected(db, image_server, tmp_path)
    merchant = "m1"
    expected = upload_image_status(db, upload)

    assert merchant_upload_status(db, merchant, upload)["images"] == expected
    token = issue_token(db, merchant).token
    settings = ApiSettings(home=home, database_url=db_url, redis_url=None, namespace=None, max_upload_bytes=4096)
    with TestClient(create_app(settings)) as client:
        shown = client.get(f"/api/uploads/{upload}", headers={"Authorization": f"Bearer {token}"})
    assert shown.status_code == 200, shown.text
    assert shown.json()["images"] == json.loads(json.dumps(expected))
    assert shown.json()["upload_id"] == upload and "stages" in shown.json()  # the existing keys stay

    env = {**os.environ, "POFLOW_HOME": str(home), "POFLOW_DATABASE_URL": db_url}
    cli = subprocess.run([sys.executable, "-m", "poflow_dagster.cli", "status", upload, "--format", "json"],
                         capture_output=True, text=True, env=env, timeout=120, check=False)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["images"] == json.loads(json.dumps(expected))
    table = subprocess.run([sys.executable, "-m", "poflow_dagster.cli", "status", upload],
                           capture_output=True, text=True, env=env, timeout=120, check=False)
    assert "1 attached, 1 rejected" in table.stdout


def test_the_list_is_bounded_and_says_how_many_more(db, image_server, allowed, tmp_path):
    upload = _upload(db, {f"S-{i}": [] for i in range(5)})
    drafts = drafts_for_upload(db, upload)
    with db.session() as session:
        for draft in drafts:
            for position in range(IMAGES_PER_DRAFT + 2):
                session.add(DraftImage(draft_id=draft.id, merchant_id="m1", upload_id=upload,
                                       candidate_key=f"k{position}", source="feed",
                                       url=f"https://cdn.example.com/{draft.sku}/{position}.jpg",
                                       position=position, state="rejected" if position % 2 else "fetched",
                                       reason="http_404: Not Found" if position % 2 else None))

    images = upload_image_status(db, upload, limit=2)

    assert images["counts"]["drafts_with_images"] == 5 and images["counts"]["fetched"] == 5 * 6
    assert images["rejected"] == {"http_404": 5 * 6}
    assert [d["sku"] for d in images["drafts"]] == ["S-0", "S-1"] and images["drafts_more"] == 3
    assert all(len(d["images"]) == IMAGES_PER_DRAFT and d["more"] == 2 for d in images["drafts"])
    text = render_status(status_report(db, upload), images)
    assert "… 3 more drafts with images" in text and "S-0                   … 2 more images" in text
    assert "S-2" not in text


def test_an_upload_without_images_says_so(db):
    upload = _upload(db, {"A": [], "B": []})
    images = upload_image_status(db, upload)
    assert images["counts"]["drafts"] == 2 and images["counts"]["drafts_with_images"] == 0 and not images["drafts"]
    assert "images      none found for 2 drafts" in render_status(status_report(db, upload), images)
