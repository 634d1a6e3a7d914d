"""Bad input against a real server: markup renders as text, no path leaves the static folder, unknown
ids and paths are 404 pages, over-long input is a 400 that says the limit, another site's form cannot
relabel, a bad store fails at start-up, and 50 concurrent requests get what each gets alone."""

from __future__ import annotations

import http.client
import shutil
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from web_helpers import MARKUP, served, shared_store, web_sae

from rama.errors import ConfigError, RamaError
from rama.features import FeatureStore, StoreError, StoreMismatchError
from rama.hooks.model import HookedModel
from rama.sae import SAE
from rama.web import create_app

SCRIPT = MARKUP[3]  # "<script>alert(1)</script>", a word of the tiny corpus


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, HookedModel, SAE]]:
    """(URL, store, model, SAE) of a server that runs the model."""
    db, model, sae = shared_store(tmp_path_factory)
    db = Path(shutil.copy(db, tmp_path_factory.mktemp("safety") / "copy.db"))  # its labels change
    with served(db, model, sae) as url:
        yield url, db, model, sae


def raw_get(url: str, path: str) -> tuple[int, str]:
    """GET `path` byte for byte as written (no client-side normalisation of `..` or `%2e`)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        return answer.status, answer.read().decode("utf-8", "replace")
    finally:
        connection.close()


def test_markup_in_the_corpus_and_in_queries_renders_as_text(
    live: tuple[str, Path, HookedModel, SAE],
) -> None:
    url, db, _, _ = live
    with FeatureStore(db) as store:
        latent = next(i for i in range(24) if any(SCRIPT in e["tokens"] for e in store.examples(i)))
    pages = [
        httpx.get(f"{url}/feature/{latent}").text,
        httpx.get(f"{url}/text", params={"text": f"v7 {SCRIPT} v9"}).text,
        httpx.get(f"{url}/search", params={"q": SCRIPT}).text,
        httpx.get(f"{url}/", params={"label": SCRIPT}).text,
        httpx.get(f"{url}/feature/{SCRIPT}").text,
    ]
    for html in pages:
        assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>bold</b>" not in pages[0] + pages[1]


TRAVERSALS = [
    "/static/../app.py",
    "/static/../../../../../../etc/passwd",
    "/static/..%2fapp.py",
    "/static/%2e%2e/app.py",
    "/static/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/static/%252e%252e%252fapp.py",
    "/static/..%5capp.py",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/style.css/../../app.py",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_path_leaves_the_static_folder(live: tuple[str, Path, HookedModel, SAE], path: str) -> None:
    status, body = raw_get(live[0], path)
    assert status in (400, 404), (path, status)
    assert "def create_app" not in body and "root:" not in body


def test_static_files_are_served(live: tuple[str, Path, HookedModel, SAE]) -> None:
    answer = httpx.get(f"{live[0]}/static/style.css")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/css")
    assert answer.text == (Path(__file__).parents[2] / "src/rama/web/static/style.css").read_text()


@pytest.mark.parametrize(
    "path",
    ["/feature/24", "/feature/-1", "/feature/abc", "/feature/1.5", "/neuron/64", "/nowhere", "/feature/"],
)
def test_unknown_ids_and_paths_are_404_pages(live: tuple[str, Path, HookedModel, SAE], path: str) -> None:
    answer = httpx.get(live[0] + path)
    assert (
        answer.status_code == 404 and "<h1>Not found</h1>" in answer.text and "Traceback" not in answer.text
    )


def test_over_long_input_is_a_400_that_names_the_limit(live: tuple[str, Path, HookedModel, SAE]) -> None:
    url = live[0]
    cases = [
        (httpx.get(f"{url}/search", params={"q": "x" * 201}), "limit is 200"),
        (httpx.get(f"{url}/text", params={"text": "v7 " * 700}), "limit is 2,000"),
        (httpx.get(f"{url}/", params={"label": "y" * 300}), "limit is 200"),
        (httpx.post(f"{url}/feature/3/label", data={"label": "z" * 201}), "limit is 200"),
        (httpx.post(f"{url}/steer", data={"prompt": "v7", "latent_0": "3", "value_0": "1", "new_tokens": "65"}),
         "between 1 and 64"),
        (httpx.post(f"{url}/steer", data={"prompt": "v7", "latent_0": "99", "value_0": "1"}), "outside"),
        (httpx.post(f"{url}/steer", data={"prompt": "v7", "latent_0": "x"}), "whole numbers"),
    ]  # fmt: skip
    for answer, message in cases:
        assert answer.status_code == 400 and message in answer.text, (answer.status_code, message)
    huge = httpx.post(f"{url}/feature/3/label", data={"label": "w" * 20_000})
    assert huge.status_code == 413 and "16,384 bytes" in huge.text


def test_a_form_from_another_site_cannot_relabel(live: tuple[str, Path, HookedModel, SAE]) -> None:
    url, db, _, _ = live
    refused = httpx.post(
        f"{url}/feature/2/label", data={"label": "pwned"}, headers={"Origin": "http://evil.example"}
    )
    assert refused.status_code == 403 and "evil.example" in refused.text
    host = urlsplit(url).netloc
    same = httpx.post(f"{url}/feature/2/label", data={"label": "fine"}, headers={"Origin": f"http://{host}"})
    assert same.status_code == 303
    with FeatureStore(db) as store:
        assert store.unit(2)["label"] == "fine"  # type: ignore[index]


def test_only_local_host_names_are_answered(live: tuple[str, Path, HookedModel, SAE]) -> None:
    """A DNS name rebound to 127.0.0.1 arrives with its own name in Host: refused."""
    url, port = live[0], urlsplit(live[0]).port
    rebound = httpx.get(f"{url}/feature/3", headers={"Host": f"attacker.example:{port}"})
    assert rebound.status_code == 400 and "127.0.0.1" in rebound.text and "attacker.example" in rebound.text
    for name in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
        assert httpx.get(f"{url}/feature/3", headers={"Host": name}).status_code == 200


def test_a_bad_store_is_a_clear_error_before_the_server_starts(
    tmp_path: Path, live: tuple[str, Path, HookedModel, SAE]
) -> None:
    db = live[1]
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(db.read_bytes()[:8192])
    foreign = tmp_path / "foreign.db"
    sqlite3.connect(foreign).execute("CREATE TABLE things (x)").connection.commit()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 10)
    for path, message in [
        (tmp_path / "missing.db", "no feature store there"),
        (truncated, "truncated"),
        (foreign, "not a rama feature store"),
        (garbage, "not an SQLite database"),
    ]:
        with pytest.raises(StoreError, match=message):
            create_app(path)
    with pytest.raises(StoreMismatchError, match="another SAE"):
        create_app(db, sae=web_sae(seed=1))
    with pytest.raises(ConfigError, match="page_size"):
        create_app(db, page_size=0)
    assert issubclass(StoreError, RamaError)
    copy = Path(shutil.copy(db, tmp_path / "copy.db"))
    create_app(copy).state.dashboard.store.close()  # the original store is fine


def fetch(client: httpx.Client, url: str) -> tuple[int, str]:
    answer = client.get(url)
    return answer.status_code, answer.text


def test_fifty_concurrent_requests_get_what_each_gets_alone(live: tuple[str, Path, HookedModel, SAE]) -> None:
    url = live[0]
    texts = [f"v{7 + i} v{20 + 2 * i} {SCRIPT} v{40 + i}" for i in range(10)]
    paths = [f"/feature/{i % 24}" for i in range(25)] + [f"/text?text={t.replace(' ', '+')}" for t in texts]
    paths += [f"/neuron/{i}" for i in range(15)]
    with httpx.Client() as client:
        alone = {path: client.get(url + path).text for path in set(paths)}
    assert len(paths) == 50 and all("Traceback" not in page for page in alone.values())

    limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
    with httpx.Client(timeout=60, limits=limits) as client, ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(lambda path: (path, *fetch(client, url + path)), paths))
    assert [(path, status) for path, status, _ in answers] == [(path, 200) for path in paths]
    assert [text for _, _, text in answers] == [alone[path] for path in paths]
