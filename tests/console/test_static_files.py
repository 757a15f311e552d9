"""Static files with DEBUG off, as production runs: WhiteNoise serves collectstatic's
hashed, compressed copies with a long cache life (tests run with DEBUG off)."""

import gzip

from django.conf import settings
from django.templatetags.static import static
from django.test import Client

SOURCE = settings.BASE_DIR / "static" / "console.css"


def test_pages_name_static_files_by_a_hash_of_their_content():
    url = static("console.css")
    assert url.startswith("/static/console.") and url.endswith(".css")
    assert url != "/static/console.css"


def test_a_hashed_static_url_is_served_compressed_and_cached_for_long_with_debug_off():
    assert not settings.DEBUG
    response = Client().get(static("console.css"), HTTP_ACCEPT_ENCODING="gzip")
    assert response.status_code == 200
    assert response["Content-Encoding"] == "gzip"
    assert "immutable" in response["Cache-Control"]
    max_age = int(response["Cache-Control"].split("max-age=")[1].split(",")[0])
    assert max_age >= 365 * 24 * 3600
    assert gzip.decompress(b"".join(response.streaming_content)) == SOURCE.read_bytes()


def test_an_unhashed_static_url_is_served_but_not_cached_for_long():
    response = Client().get("/static/console.css")
    assert response.status_code == 200
    assert "immutable" not in response["Cache-Control"]
