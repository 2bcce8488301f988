import hashlib
import http.server
import threading
from functools import partial

import pytest

from xcross_lib.data.download import download, parse_sums, shipped_sums
from xcross_lib.errors import DataError

pytestmark = pytest.mark.unit


@pytest.fixture
def server(tmp_path):
    """An HTTP server on loopback serving files that the test makes; counts requests."""
    root = tmp_path / "served"
    for domain in ("Tools", "Toys"):
        (root / domain).mkdir(parents=True)
        for name in ("train.json", "smap.json"):
            (root / domain / name).write_text(f'{{"{domain}": "{name}"}}')
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            hits.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    sums = {f"{d}/{n}": hashlib.sha256((root / d / n).read_bytes()).hexdigest()
            for d in ("Tools", "Toys") for n in ("train.json", "smap.json")}
    yield f"http://127.0.0.1:{httpd.server_port}", root, sums, hits
    httpd.shutdown()


def test_download_checks_and_skips_present_files(server, tmp_path):
    url, root, sums, hits = server
    dest = tmp_path / "dest"
    download("Tools,Toys", dest, base_url=url, checksums=sums, files=("train.json", "smap.json"))
    for key in sums:
        assert (dest / key).read_bytes() == (root / key).read_bytes()
    assert len(hits) == 4
    download("Tools", dest, base_url=url, checksums=sums, files=("train.json", "smap.json"))
    assert len(hits) == 4  # nothing fetched again
    (dest / "Tools" / "smap.json").write_text("corrupted")
    download("Tools", dest, base_url=url, checksums=sums, files=("train.json", "smap.json"))
    assert len(hits) == 5 and (dest / "Tools" / "smap.json").read_bytes() == (root / "Tools" / "smap.json").read_bytes()


def test_checksum_mismatch_writes_nothing(server, tmp_path):
    url, _, sums, _ = server
    wrong = {**sums, "Tools/train.json": "0" * 64}
    with pytest.raises(DataError, match="checksum mismatch"):
        download("Tools", tmp_path / "dest", base_url=url, checksums=wrong, files=("train.json",))
    assert list((tmp_path / "dest" / "Tools").iterdir()) == []  # no partial file left


def test_missing_remote_file_and_unknown_checksum(server, tmp_path):
    url, _, sums, _ = server
    with pytest.raises(DataError, match="could not download"):
        download("Tools", tmp_path / "d", base_url=url, checksums={**sums, "Tools/umap.json": "0" * 64}, files=("umap.json",))
    with pytest.raises(DataError, match="no checksum known"):
        download("Tools", tmp_path / "d", base_url=url, checksums=sums, files=("meta_data.json",))


def test_shipped_checksums_cover_every_file_of_every_domain():
    sums = shipped_sums()
    assert len(sums) == 20 and all(len(v) == 64 for v in sums.values())
    assert parse_sums("ab  Tools/x.json\n\n") == {"Tools/x.json": "ab"}
