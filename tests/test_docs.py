"""Interactive docs at /docs (Swagger UI), served whole by the service: no CDN, so they work
with no internet access. A real browser (headless Chromium) renders them from a running
gunicorn, with every host name but 127.0.0.1 unresolvable, and leaves a screenshot in
build/ (a CI artifact)."""
import re
import subprocess

from helpers import chromium
from messenger_app.config import PROJECT_ROOT

SCREENSHOT = PROJECT_ROOT / "build" / "docs.png"
SMS_OPERATIONS = ["list_messages", "create_message", "read_message", "update_message",
                  "partial_update_message", "delete_message"]


def test_the_docs_page_loads_everything_from_the_service(client):
    page = client.get("/docs")
    html = page.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)

    assert page.status_code == 200 and page.content_type.startswith("text/html")
    assert "://" not in html  # no CDN, nor any other host
    assert len(assets) == 3 and all(asset.startswith("/docs/assets/") for asset in assets)
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200 and len(response.data) > 10_000, asset
        assert response.content_type.startswith(("text/css", "text/javascript")), asset
    assert client.get("/docs/assets/../__init__.py").status_code == 404


def test_a_browser_shows_the_sms_operations_with_no_internet(service, tmp_path):
    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)

    rendered = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
         f"--user-data-dir={tmp_path / 'profile'}",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # no internet at all
         "--window-size=1280,2000", "--virtual-time-budget=15000",
         f"--screenshot={SCREENSHOT}", "--dump-dom", f"{service.base}/docs#/sms/create_message"],
        capture_output=True, text=True, timeout=120)

    dom = rendered.stdout
    operations = re.findall(r'id="operations-sms-(\w+)"', dom)
    assert operations == SMS_OPERATIONS, rendered.stderr[-2000:]
    assert "2025-08-31T15:55:11.247Z" in dom  # create_message opened, with its example
    assert SCREENSHOT.stat().st_size > 10_000
