"""Fetching the flowers archive: verified, resumable by reuse, extracted safely, abandoned with the
manual route when the network fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

import build_dataset
from pyimagesearch.data.download import DownloadLimits, download, extract
from pyimagesearch.utils import settings
from pyimagesearch.utils.errors import UserError, run_cli


def limits(**changed) -> DownloadLimits:
    """The limits build_dataset.py passes (utils/settings.py), with ``changed`` ones."""
    return dataclasses.replace(DownloadLimits(settings.DOWNLOAD_MIN_SPEED, settings.DOWNLOAD_SPEED_WINDOW,
                                              settings.DOWNLOAD_DEADLINE, settings.EXTRACT_MAX_BYTES,
                                              settings.EXTRACT_MAX_MEMBERS), **changed)

def _args(tmp_path, url: str) -> list[str]:
    return ["--data", str(tmp_path / "flower_photos"), "--output", str(tmp_path / "dataset"), "--download",
            "--url", url, "--cache-dir", str(tmp_path / "cache")]


class Server:
    """Serves ``files`` on 127.0.0.1; ``drop_after`` bytes cuts a response short."""

    def __init__(self, files: dict[str, bytes], drop_after: int | None = None) -> None:
        self.files, self.drop_after, self.requests = files, drop_after, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if server.drop_after is None else body[: server.drop_after])
                self.wfile.flush()
                if server.drop_after is not None:
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def flowers_tgz() -> bytes:
    members = {"flower_photos/LICENSE.txt": b"CC-BY"}
    for name, color in {"daisy": (250, 250, 250), "roses": (200, 20, 40), "tulips": (220, 60, 90)}.items():
        for i in range(4):
            members[f"flower_photos/{name}/{i}.jpg"] = _jpeg(color, seed=i)
    return _tgz(members)


def _tgz(members: dict[str, bytes], links: dict[str, tuple[str, str]] | None = None) -> bytes:
    """A gzip tar of ``members`` (name -> bytes) and ``links`` (name -> (kind, target))."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
            info.linkname = target
            tar.addfile(info)
    return buffer.getvalue()


def _jpeg(color, seed: int = 0) -> bytes:
    """A noisy 24 px photo of ``color``: distinct per seed (identical photos would be kept together
    on one side of the split, as duplicates)."""
    noise = np.random.default_rng(seed).normal(0, 30, (24, 24, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.array(color) + noise, 0, 255).astype(np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


class TrickleServer:
    """Announces 100,000 bytes, then sends ``chunk`` bytes every ``pause`` seconds (for 30 s at most)."""

    def __init__(self, chunk: int, pause: float) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                with contextlib.suppress(OSError):
                    for _ in range(1500):  # 30 s at most, whatever the client does
                        self.wfile.write(b"x" * chunk)
                        self.wfile.flush()
                        time.sleep(pause)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/flower_photos.tgz"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_extract_split_then_reuse(tmp_path, capsys, no_network):
    with Server({"/flower_photos.tgz": flowers_tgz()}) as server:
        build_dataset.main(_args(tmp_path, server.url("/flower_photos.tgz")))
        captured = capsys.readouterr()
        assert "downloading" in captured.err  # the tqdm bar, with sizes
        assert sorted(os.listdir(tmp_path / "flower_photos")) == ["LICENSE.txt", "daisy", "roses", "tulips"]
        assert sorted(os.listdir(tmp_path / "dataset" / "train")) == ["daisy", "roses", "tulips"]
        assert (tmp_path / "cache" / "flower_photos.tgz").stat().st_size == len(server.files["/flower_photos.tgz"])
        assert not [e for e in os.listdir(tmp_path) if e.startswith(".")]

        build_dataset.main(_args(tmp_path, server.url("/flower_photos.tgz")))  # folder there: no download
        assert len(server.requests) == 1

        import shutil

        shutil.rmtree(tmp_path / "flower_photos")  # archive still cached: extract again, no download
        build_dataset.main(_args(tmp_path, server.url("/flower_photos.tgz")))
        assert len(server.requests) == 1
        assert "reusing the downloaded archive" in capsys.readouterr().out


def test_a_dropped_connection_leaves_nothing_behind(tmp_path, capsys):
    body = flowers_tgz()
    with Server({"/flower_photos.tgz": body}, drop_after=len(body) // 3) as server:
        code = run_cli(build_dataset.main, _args(tmp_path, server.url("/flower_photos.tgz")))
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "Traceback" not in err and server.url("/flower_photos.tgz") in err
    assert not (tmp_path / "flower_photos").exists() and not (tmp_path / "dataset").exists()
    assert os.listdir(tmp_path / "cache") == []  # no partial archive passing for a finished one


def test_http_error_names_the_url_and_the_manual_route(tmp_path, capsys):
    with Server({}) as server:
        code = run_cli(build_dataset.main, _args(tmp_path, server.url("/missing.tgz")))
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "/missing.tgz" in err and "404" in err and "unpack it yourself" in err


def test_offline_download_fails_fast_with_the_manual_route(tmp_path, capsys, no_network):
    code = run_cli(build_dataset.main, _args(tmp_path, "https://example.invalid/flower_photos.tgz"))
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "example.invalid" in err and "DATA_PATH" in err


@pytest.mark.parametrize("members,links,why", [
    ({"flower_photos/../../evil.txt": b"x"}, None, "'..'"),
    ({"/tmp/evil-absolute.txt": b"x"}, None, "absolute path"),
    ({}, {"flower_photos/link": ("sym", "/etc/passwd")}, "links outside"),
    ({}, {"flower_photos/up": ("sym", "../../outside")}, "links outside"),
    ({}, {"flower_photos/hard": ("hard", "/etc/passwd")}, "links outside"),
])
def test_hostile_archives_are_refused_and_write_nothing(tmp_path, members, links, why):
    base = {"flower_photos/daisy/0.jpg": _jpeg((255, 255, 255)), "flower_photos/roses/0.jpg": _jpeg((200, 0, 0))}
    archive = tmp_path / "cache" / "evil.tgz"
    archive.parent.mkdir()
    archive.write_bytes(_tgz({**base, **members}, links))
    target = tmp_path / "sandbox" / "flower_photos"
    with pytest.raises(UserError, match=why):
        extract(str(archive), str(target), limits())
    assert not target.exists() and os.listdir(tmp_path / "sandbox") == []
    assert not (tmp_path / "evil.txt").exists() and not os.path.exists("/tmp/evil-absolute.txt")


def test_an_archive_without_class_folders_is_refused(tmp_path):
    archive = tmp_path / "odd.tgz"
    archive.write_bytes(_tgz({"flower_photos/readme.txt": b"nothing here"}))
    with pytest.raises(UserError, match="class folders"):
        extract(str(archive), str(tmp_path / "flower_photos"), limits())
    archive.write_bytes(b"not a tar at all")
    with pytest.raises(UserError, match="not a readable"):
        extract(str(archive), str(tmp_path / "flower_photos"), limits())
    assert not (tmp_path / "flower_photos").exists()


def test_an_archive_that_expands_past_the_cap_is_refused_before_writing(tmp_path):
    archive = tmp_path / "bomb.tgz"
    archive.write_bytes(_tgz({"flower_photos/daisy/a.jpg": b"\0" * 1000, "flower_photos/roses/huge.jpg": b"\0" * (8 << 20)}))
    assert archive.stat().st_size < 64 << 10
    (tmp_path / "sandbox").mkdir()
    with pytest.raises(UserError, match="EXTRACT_MAX_BYTES"):
        extract(str(archive), str(tmp_path / "sandbox" / "flower_photos"), limits(max_bytes=1 << 20))
    assert os.listdir(tmp_path / "sandbox") == []

    archive.write_bytes(_tgz({f"flower_photos/daisy/{i}.jpg": b"x" for i in range(10)}))
    with pytest.raises(UserError, match="EXTRACT_MAX_MEMBERS"):
        extract(str(archive), str(tmp_path / "sandbox" / "flower_photos"), limits(max_members=5))
    assert os.listdir(tmp_path / "sandbox") == []


# Each case can end one way only, however busy the machine: 1 byte per 20 ms never reaches 100 bytes/s
# (a starved server thread only sends less), and with a minimum speed of 1 byte/s only the deadline
# stops the second; the server trickles for longer than either takes.
@pytest.mark.parametrize("chunk,limits,message", [
    (1, limits(min_bytes_per_s=100, window_s=0.5, deadline_s=600), "slowed to"),
    (50, limits(min_bytes_per_s=1, window_s=0.5, deadline_s=1.0), "took longer than"),
])
def test_a_trickling_download_is_abandoned_and_leaves_nothing(tmp_path, chunk, limits, message):
    server = TrickleServer(chunk, pause=0.02)
    try:
        started = time.monotonic()
        with pytest.raises(UserError, match=message):
            download(server.url, str(tmp_path / "cache" / "flower_photos.tgz"), limits, progress=False)
        assert time.monotonic() - started < 25  # abandoned, not waited out (the server trickles for 30 s)
    finally:
        server.close()
    assert os.listdir(tmp_path / "cache") == []


@pytest.mark.parametrize("field,value", [("max_bytes", 0), ("deadline_s", -1.0), ("max_members", "many"), ("window_s", True)])
def test_download_and_extraction_limits_are_checked_and_named(field, value):
    names = {"max_bytes": "EXTRACT_MAX_BYTES", "deadline_s": "DOWNLOAD_DEADLINE", "max_members": "EXTRACT_MAX_MEMBERS",
             "window_s": "DOWNLOAD_SPEED_WINDOW"}
    with pytest.raises(UserError, match=rf"{names[field]} .*utils/settings\.py"):
        limits(**{field: value})
