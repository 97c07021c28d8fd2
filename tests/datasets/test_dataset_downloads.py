"""download=True fetches, verifies and extracts the built-in datasets' archives.

A loopback HTTP server (with Range support) serves small archives that the tests build in each
dataset's published layout; the dataset URLs are pointed at it. Nothing leaves the machine.
"""

import hashlib
import http.server
import io
import json
import os
import tarfile
import threading
import urllib.error
import zipfile

import pytest

from deepmetric.datasets import (
    CUB,
    ArchiveError,
    Cars196,
    ChecksumError,
    DownloadError,
    INaturalist2018,
    StanfordOnlineProducts,
)
from deepmetric.datasets._download import WORK_DIR

Image = pytest.importorskip("PIL.Image")


# --------------------------------------------------------------------------- loopback server
class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        if self.path not in server.files:
            self.send_error(404, "Not Found")
            return
        body = server.files[self.path]
        content_type = server.content_types.get(self.path, "application/octet-stream")
        start = 0
        ranged = self.headers.get("Range")
        if ranged and not server.ignore_range:
            start = int(ranged.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        rest = body[start:]
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        if self.path in server.truncate_once:  # advertise everything, send half, hang up
            server.truncate_once.discard(self.path)
            self.wfile.write(rest[: len(rest) // 2])
            self.close_connection = True
            return
        self.wfile.write(rest)
        server.bytes_sent += len(rest)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.files, httpd.content_types, httpd.requests = {}, {}, []
    httpd.truncate_once, httpd.ignore_range, httpd.bytes_sent = set(), False, 0
    httpd.url = lambda path: f"http://127.0.0.1:{httpd.server_address[1]}{path}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


# --------------------------------------------------------------------------- archive builders
def _png(value):
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), color=(value, value, value)).save(buffer, format="PNG")
    return buffer.getvalue()


def _tar_gz(files):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _zip(files):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _md5(data):
    return hashlib.md5(data).hexdigest()


def _cub_archive():
    rows = [(1, "001.Albatross/a.png", 1), (2, "050.Jay/b.png", 50), (3, "150.Wren/c.png", 150)]
    files = {
        "CUB_200_2011/images.txt": "".join(f"{i} {p}\n" for i, p, _ in rows).encode(),
        "CUB_200_2011/image_class_labels.txt": "".join(f"{i} {c}\n" for i, _, c in rows).encode(),
        "attributes.txt": b"1 has_bill_shape::curved\n",
    }
    files.update({f"CUB_200_2011/images/{p}": _png(10 * i) for i, p, _ in rows})
    return _tar_gz(files)


@pytest.fixture
def cub_served(server, monkeypatch):
    """CUB's URL and MD5 pointed at a small archive on the loopback server."""
    data = _cub_archive()
    server.files["/CUB_200_2011.tgz"] = data
    monkeypatch.setattr(CUB, "DOWNLOAD_URL", server.url("/CUB_200_2011.tgz"))
    monkeypatch.setattr(CUB, "DOWNLOAD_MD5", _md5(data))
    return data


# --------------------------------------------------------------------------- full downloads
def test_cub_downloads_verifies_extracts_and_loads(server, cub_served, tmp_path):
    root = str(tmp_path / "cub")
    train = CUB(root, split="train", download=True)
    assert train.labels == [1, 50]
    img, label = train[1]
    assert label == 50 and img.getpixel((0, 0))[0] == 20
    # archive and work folder gone; the extracted layout is in root
    assert sorted(os.listdir(root)) == ["CUB_200_2011", "attributes.txt"]
    assert server.requests == [("/CUB_200_2011.tgz", None)]
    # an existing dataset is read from disk, never downloaded again
    assert CUB(root, split="test", download=True).labels == [150]
    assert CUB(root).labels == [1, 50, 150]
    assert len(server.requests) == 1


def test_cars196_download(server, monkeypatch, tmp_path):
    names = "AM General Hummer SUV 2000\nBMW M3/M5 2012\n" + "".join(f"Car {i}\n" for i in range(3, 197))
    files = {
        "names.csv": names.encode(),
        "anno_train.csv": b"00001.jpg,1,2,3,4,1\n00002.jpg,1,2,3,4,2\n",
        "anno_test.csv": b"00003.jpg,1,2,3,4,99\n",
        "car_data/car_data/train/AM General Hummer SUV 2000/00001.jpg": _png(1),
        "car_data/car_data/train/BMW M3-M5 2012/00002.jpg": _png(2),
        "car_data/car_data/test/Car 99/00003.jpg": _png(3),
    }
    server.files["/cars.zip"] = _zip(files)
    monkeypatch.setattr(Cars196, "DOWNLOAD_URL", server.url("/cars.zip"))
    ds = Cars196(str(tmp_path / "cars"), split="train", download=True)
    assert ds.labels == [1, 2]
    assert ds[1][0].getpixel((0, 0))[0] == 2
    assert Cars196(str(tmp_path / "cars"), split="test").labels == [99]


def test_stanford_online_products_download(server, monkeypatch, tmp_path):
    base = "Stanford_Online_Products"
    files = {
        f"{base}/Ebay_train.txt": b"image_id class_id super_class_id path\n1 7 1 bicycle_final/x.JPG\n",
        f"{base}/Ebay_test.txt": b"image_id class_id super_class_id path\n2 9 2 sofa_final/y.JPG\n",
        f"{base}/bicycle_final/x.JPG": _png(7),
        f"{base}/sofa_final/y.JPG": _png(9),
    }
    server.files["/sop.zip"] = _zip(files)
    monkeypatch.setattr(StanfordOnlineProducts, "DOWNLOAD_URL", server.url("/sop.zip"))
    ds = StanfordOnlineProducts(str(tmp_path / "sop"), download=True)
    assert ds.labels == [7, 9]
    assert ds[1][0].getpixel((0, 0))[0] == 9


def _serve_inaturalist(server, monkeypatch):
    """The four iNaturalist archives, with MD5s for the three the competition publishes."""
    train = {"images": [{"file_name": "train_val2018/Plantae/5/a.jpg", "id": 1}],
             "annotations": [{"image_id": 1, "category_id": 5}]}
    val = {"images": [{"file_name": "train_val2018/Aves/6/b.jpg", "id": 2}],
           "annotations": [{"image_id": 2, "category_id": 6}]}
    archives = {
        "IMG": _tar_gz({"train_val2018/Plantae/5/a.jpg": _png(5), "train_val2018/Aves/6/b.jpg": _png(6)}),
        "TRAIN_ANN": _tar_gz({"train2018.json": json.dumps(train).encode()}),
        "VAL_ANN": _tar_gz({"val2018.json": json.dumps(val).encode()}),
        "SPLITS": _zip({
            "Inat_dataset_splits/Inaturalist_train_set1.txt": b"train_val2018/Aves/6/b.jpg\n",
            "Inat_dataset_splits/Inaturalist_test_set1.txt": b"train_val2018/Plantae/5/a.jpg\n",
        }),
    }
    for key, data in archives.items():
        server.files[f"/{key}"] = data
        monkeypatch.setattr(INaturalist2018, "IMG_DOWNLOAD_URL" if key == "IMG" else f"{key}_URL", server.url(f"/{key}"))
        if key != "SPLITS":
            monkeypatch.setattr(INaturalist2018, f"{key}_MD5", _md5(data))
    return archives


def test_inaturalist_download(server, monkeypatch, tmp_path):
    _serve_inaturalist(server, monkeypatch)
    root = str(tmp_path / "inat")
    ds = INaturalist2018(root, download=True)
    assert ds.labels == [6, 5]
    assert ds[0][0].getpixel((0, 0))[0] == 6
    assert sorted(os.listdir(root)) == ["Inat_dataset_splits", "train2018.json", "train_val2018", "val2018.json"]
    assert [path for path, _ in server.requests] == ["/IMG", "/TRAIN_ANN", "/VAL_ANN", "/SPLITS"]


# --------------------------------------------------------------------------- resuming
def test_resumes_a_partial_download_with_a_range_request(server, cub_served, tmp_path):
    root = tmp_path / "cub"
    part = root / WORK_DIR / "CUB_200_2011.tgz.part"
    part.parent.mkdir(parents=True)
    half = len(cub_served) // 2
    part.write_bytes(cub_served[:half])
    assert CUB(str(root), download=True).labels == [1, 50, 150]
    assert server.requests == [("/CUB_200_2011.tgz", f"bytes={half}-")]
    assert server.bytes_sent == len(cub_served) - half  # only the missing bytes came over the wire
    assert not (root / WORK_DIR).exists()


def test_a_dropped_connection_keeps_the_part_and_the_next_call_resumes(server, cub_served, tmp_path):
    root = str(tmp_path / "cub")
    server.truncate_once.add("/CUB_200_2011.tgz")
    with pytest.raises(DownloadError) as err:
        CUB(root, download=True)
    message = str(err.value)
    assert server.url("/CUB_200_2011.tgz") in message and "CUB_200_2011.tgz.part" in message
    part = os.path.join(root, WORK_DIR, "CUB_200_2011.tgz.part")
    kept = os.path.getsize(part)
    assert 0 < kept < len(cub_served)
    # the half-downloaded dataset does not load ...
    with pytest.raises(ValueError, match="unfinished download"):
        CUB(root)
    # ... and download=True finishes it from where it stopped
    assert CUB(root, download=True).labels == [1, 50, 150]
    assert server.requests[-1] == ("/CUB_200_2011.tgz", f"bytes={kept}-")


def test_a_server_without_range_support_restarts_the_download(server, cub_served, tmp_path):
    root = tmp_path / "cub"
    part = root / WORK_DIR / "CUB_200_2011.tgz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes that must not end up in the archive")
    server.ignore_range = True
    assert CUB(str(root), download=True).labels == [1, 50, 150]
    assert server.bytes_sent == len(cub_served)


def test_a_complete_part_is_not_downloaded_again(server, cub_served, tmp_path):
    root = tmp_path / "cub"
    part = root / WORK_DIR / "CUB_200_2011.tgz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(cub_served)
    assert CUB(str(root), download=True).labels == [1, 50, 150]
    assert server.bytes_sent == 0  # the server answered 416: nothing left to send


def test_an_interrupted_multi_archive_download_resumes_without_refetching(server, monkeypatch, tmp_path):
    archives = _serve_inaturalist(server, monkeypatch)
    server.files["/VAL_ANN"] = archives["VAL_ANN"][:-30]  # truncated: its MD5 will not match
    root = str(tmp_path / "inat")
    with pytest.raises(ChecksumError):
        INaturalist2018(root, download=True)
    assert os.listdir(root) == [WORK_DIR]  # nothing half-extracted where the dataset is read
    with pytest.raises(ValueError, match="unfinished download"):
        INaturalist2018(root)
    server.files["/VAL_ANN"] = archives["VAL_ANN"]
    assert INaturalist2018(root, download=True).labels == [6, 5]
    fetched = [path for path, _ in server.requests]
    assert fetched == ["/IMG", "/TRAIN_ANN", "/VAL_ANN", "/VAL_ANN", "/SPLITS"]


# --------------------------------------------------------------------------- failures
def test_checksum_mismatch_names_the_url_and_file_and_deletes_the_part(server, cub_served, monkeypatch, tmp_path):
    monkeypatch.setattr(CUB, "DOWNLOAD_MD5", "0" * 32)
    root = str(tmp_path / "cub")
    with pytest.raises(ChecksumError) as err:
        CUB(root, download=True)
    message = str(err.value)
    assert server.url("/CUB_200_2011.tgz") in message and "CUB_200_2011.tgz.part" in message
    assert "0" * 32 in message and _md5(cub_served) in message
    assert not os.path.exists(os.path.join(root, WORK_DIR, "CUB_200_2011.tgz.part"))
    assert isinstance(err.value, DownloadError) and isinstance(err.value, urllib.error.URLError)


def test_network_error_names_the_url_and_file(monkeypatch, tmp_path):
    import socket

    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/CUB_200_2011.tgz"
    monkeypatch.setattr(CUB, "DOWNLOAD_URL", url)
    with pytest.raises(DownloadError) as err:
        CUB(str(tmp_path / "cub"), download=True)
    assert url in str(err.value) and "CUB_200_2011.tgz.part" in str(err.value)
    assert isinstance(err.value, OSError)


def test_http_error_names_the_status(server, monkeypatch, tmp_path):
    monkeypatch.setattr(CUB, "DOWNLOAD_URL", server.url("/missing.tgz"))
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        CUB(str(tmp_path / "cub"), download=True)
    assert server.url("/missing.tgz") in str(err.value)


def test_an_html_page_instead_of_the_archive_is_an_error(server, monkeypatch, tmp_path):
    server.files["/page"] = b"<html>Sign in to continue</html>"
    server.content_types["/page"] = "text/html; charset=utf-8"
    monkeypatch.setattr(StanfordOnlineProducts, "DOWNLOAD_URL", server.url("/page"))
    with pytest.raises(DownloadError, match="HTML page"):
        StanfordOnlineProducts(str(tmp_path / "sop"), download=True)


def test_a_corrupt_archive_without_checksum_is_reported_and_deleted(server, monkeypatch, tmp_path):
    data = bytearray(_zip({"Stanford_Online_Products/Ebay_train.txt": b"header\n" + b"1 7 1 x.JPG\n" * 50}))
    data[60] ^= 0xFF  # inside the first member's compressed bytes: its CRC-32 no longer matches
    server.files["/sop.zip"] = bytes(data)
    monkeypatch.setattr(StanfordOnlineProducts, "DOWNLOAD_URL", server.url("/sop.zip"))
    root = str(tmp_path / "sop")
    with pytest.raises(ArchiveError, match="corrupt"):
        StanfordOnlineProducts(root, download=True)
    assert not os.path.exists(os.path.join(root, WORK_DIR, "Stanford_Online_Products.zip"))


@pytest.mark.parametrize(
    "archive",
    [
        _tar_gz({"CUB_200_2011/images.txt": b"", "../escaped.txt": b"x"}),
        _tar_gz({"/tmp/absolute.txt": b"x"}),
        _zip({"CUB_200_2011/images.txt": b"", "../escaped.txt": b"x"}),
    ],
    ids=["tar-dotdot", "tar-absolute", "zip-dotdot"],
)
def test_members_outside_the_dataset_folder_are_refused(server, monkeypatch, tmp_path, archive):
    server.files["/evil"] = archive
    monkeypatch.setattr(CUB, "DOWNLOAD_URL", server.url("/evil"))
    monkeypatch.setattr(CUB, "DOWNLOAD_MD5", None)
    with pytest.raises(ArchiveError, match="outside the dataset folder"):
        CUB(str(tmp_path / "root" / "cub"), download=True)
    assert not (tmp_path / "root" / "escaped.txt").exists()
    assert not (tmp_path / "root" / "cub" / WORK_DIR / "escaped.txt").exists()


def test_a_symlink_out_of_the_dataset_folder_is_refused(server, monkeypatch, tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        link = tarfile.TarInfo("CUB_200_2011/images")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../../etc"
        tar.addfile(link)
    server.files["/link.tgz"] = buffer.getvalue()
    monkeypatch.setattr(CUB, "DOWNLOAD_URL", server.url("/link.tgz"))
    monkeypatch.setattr(CUB, "DOWNLOAD_MD5", None)
    with pytest.raises(ArchiveError, match="links to"):
        CUB(str(tmp_path / "cub"), download=True)


def test_an_unknown_split_fails_before_downloading(server, cub_served, tmp_path):
    with pytest.raises(ValueError, match="supported splits"):
        CUB(str(tmp_path / "cub"), split="val", download=True)
    assert server.requests == [] and not (tmp_path / "cub").exists()
