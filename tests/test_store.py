"""The model store against a real HTTP server on 127.0.0.1: fetch, verify, resume, refuse, explain."""
from __future__ import annotations

import datetime
import hashlib
import ipaddress
import re
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from wav2lip import store
from wav2lip.checkpoints import save_checkpoint
from wav2lip.cli import main
from wav2lip.errors import Wav2LipError
from wav2lip.models.generator import Wav2Lip

RETINAFACE = "retinaface_mobilenet0.25.pth"


class WeightServer:
    """Serves `files` (URL path -> bytes) with Range support and faults switched on by attribute."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.drop_after: int | None = None  # send only this many body bytes, once, then hang up
        self.ignore_range = False
        self.requests: list[tuple[str, str | None, int]] = []  # (path, Range header, status)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = server.files.get(self.path)
                asked = self.headers.get("Range")
                if data is None:
                    server.requests.append((self.path, asked, 404))
                    self.send_error(404)
                    return
                start, status = 0, 200
                match = re.fullmatch(r"bytes=(\d+)-", asked or "")
                if match and not server.ignore_range:
                    start, status = int(match[1]), 206
                    if start >= len(data):
                        server.requests.append((self.path, asked, 416))
                        self.send_error(416)
                        return
                server.requests.append((self.path, asked, status))
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if server.drop_after is not None:
                    body, server.drop_after = body[: server.drop_after], None
                    self.close_connection = True
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        return Handler


@pytest.fixture
def server():
    s = WeightServer()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("WAV2LIP_HOME", "WAV2LIP_MIRROR", "WAV2LIP_OFFLINE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def payload() -> bytes:
    return np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()


def tiny_entry(server: WeightServer, payload: bytes, name: str = "tiny.pth") -> store.WeightFile:
    server.files[f"/{name}"] = payload
    return store.WeightFile(
        name, "wav2lip", (f"{server.url}/{name}",), len(payload),
        hashlib.sha256(payload).hexdigest(), "a small generated file", server.url,
    )


def test_fetch_downloads_verifies_and_then_uses_the_cache(tmp_path, server, payload):
    entry = tiny_entry(server, payload)
    path = store.fetch(entry, root=tmp_path, progress=False)
    assert path == tmp_path / "tiny.pth"
    assert path.read_bytes() == payload
    assert not (tmp_path / "tiny.pth.part").exists()
    assert store.fetch(entry, root=tmp_path, progress=False) == path
    assert len(server.requests) == 1, "a verified cached file needs no network"
    store.fetch(entry, root=tmp_path, progress=False, force=True)
    assert len(server.requests) == 2


def test_dropped_connection_leaves_a_part_that_resumes_with_range(tmp_path, server, payload):
    entry = tiny_entry(server, payload)
    server.drop_after = 100_000
    with pytest.raises(Wav2LipError, match="run again to resume"):
        store.fetch(entry, root=tmp_path, progress=False)
    part = tmp_path / "tiny.pth.part"
    assert part.stat().st_size == 100_000
    assert not (tmp_path / "tiny.pth").exists()

    path = store.fetch(entry, root=tmp_path, progress=False)
    assert server.requests[-1] == ("/tiny.pth", "bytes=100000-", 206)
    assert path.read_bytes() == payload
    assert not part.exists()


def test_server_that_ignores_range_gets_a_fresh_download(tmp_path, server, payload):
    entry = tiny_entry(server, payload)
    server.ignore_range = True
    (tmp_path / "tiny.pth.part").write_bytes(b"\0" * 1000)  # not even a prefix of the file
    path = store.fetch(entry, root=tmp_path, progress=False)
    assert server.requests[-1] == ("/tiny.pth", "bytes=1000-", 200)
    assert path.read_bytes() == payload


def test_checksum_mismatch_deletes_the_part_and_says_so(tmp_path, server, payload):
    entry = tiny_entry(server, payload)
    server.files["/tiny.pth"] = payload[::-1]  # right size, wrong bytes
    with pytest.raises(Wav2LipError) as err:
        store.fetch(entry, root=tmp_path, progress=False)
    message = str(err.value)
    assert "checksum mismatch" in message and "deleted" in message
    assert hashlib.sha256(payload[::-1]).hexdigest() in message
    assert not (tmp_path / "tiny.pth.part").exists()
    assert not (tmp_path / "tiny.pth").exists()


def test_offline_error_says_which_file_where_to_put_it_and_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("WAV2LIP_OFFLINE", "1")
    with pytest.raises(Wav2LipError) as err:
        store.resolve("s3fd.pth", root=tmp_path)
    message = str(err.value)
    assert message.startswith("s3fd.pth:")
    assert "WAV2LIP_OFFLINE" in message
    assert str(tmp_path / "s3fd.pth") in message
    assert "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth" in message
    assert "\n" not in message


def test_download_not_allowed_gives_the_same_directions(tmp_path):
    with pytest.raises(Wav2LipError, match=re.escape(str(tmp_path / "syncnet_v2.model"))) as err:
        store.resolve("syncnet_v2.model", download=False, root=tmp_path)
    assert "robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model" in str(err.value)


def test_failed_download_is_one_error_with_directions(tmp_path, server, monkeypatch):
    monkeypatch.setenv("WAV2LIP_MIRROR", server.url)
    with pytest.raises(Wav2LipError) as err:
        store.resolve("wav2lip_gan.pth", root=tmp_path)
    message = str(err.value)
    assert "HTTP 404" in message and str(tmp_path / "wav2lip_gan.pth") in message
    assert "Rudrabha/Wav2Lip" in message


def test_existing_path_is_used_as_is_even_offline(tmp_path, monkeypatch):
    mine = tmp_path / "my_generator.pth"
    mine.write_bytes(b"anything")
    monkeypatch.setenv("WAV2LIP_OFFLINE", "1")
    assert store.resolve(mine) == mine
    assert store.resolve(str(mine)) == mine


def test_unknown_name_lists_the_known_ones(tmp_path):
    with pytest.raises(Wav2LipError, match="not a known weight name") as err:
        store.resolve(tmp_path / "typo_gan.pth")
    for name in store.KNOWN:
        assert name in str(err.value)


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert store.cache_dir() == tmp_path / "xdg" / "wav2lip"
    monkeypatch.setenv("WAV2LIP_HOME", str(tmp_path / "home"))
    assert store.cache_dir() == tmp_path / "home"
    assert store.cache_dir(tmp_path / "flag") == tmp_path / "flag"


def test_resolve_downloads_a_known_file_on_first_use_then_works_offline(
    tmp_path, server, monkeypatch, models_dir
):
    real = (models_dir / RETINAFACE).read_bytes()
    server.files[f"/{RETINAFACE}"] = real
    monkeypatch.setenv("WAV2LIP_MIRROR", server.url + "/")
    monkeypatch.setenv("WAV2LIP_HOME", str(tmp_path))
    path = store.resolve(RETINAFACE)
    assert path == tmp_path / RETINAFACE and path.read_bytes() == real

    monkeypatch.setenv("WAV2LIP_OFFLINE", "1")
    assert store.resolve(RETINAFACE) == path
    assert len(server.requests) == 1


def test_resolve_resumes_a_broken_first_use_download(tmp_path, server, monkeypatch, models_dir):
    real = (models_dir / RETINAFACE).read_bytes()
    server.files[f"/{RETINAFACE}"] = real
    server.drop_after = 700_000
    monkeypatch.setenv("WAV2LIP_MIRROR", server.url)
    with pytest.raises(Wav2LipError, match=f"^{re.escape(RETINAFACE)}: download failed"):
        store.resolve(RETINAFACE, root=tmp_path)
    assert store.resolve(RETINAFACE, root=tmp_path).read_bytes() == real
    assert server.requests[-1] == (f"/{RETINAFACE}", "bytes=700000-", 206)


def test_corrupt_cached_copy_is_reported_then_replaced(tmp_path, server, monkeypatch, models_dir):
    cached = tmp_path / RETINAFACE
    cached.write_bytes(b"truncated")
    assert [r for r in store.list_weights(tmp_path) if r.name == RETINAFACE][0][1:3] == (True, False)

    monkeypatch.setenv("WAV2LIP_OFFLINE", "1")
    with pytest.raises(Wav2LipError, match="cached copy is 9 bytes, expected 1,789,735"):
        store.resolve(RETINAFACE, root=tmp_path)

    monkeypatch.delenv("WAV2LIP_OFFLINE")
    monkeypatch.setenv("WAV2LIP_MIRROR", server.url)
    with pytest.raises(Wav2LipError) as failed:  # online, but the server does not have it
        store.resolve(RETINAFACE, root=tmp_path)
    message = str(failed.value)
    assert "download failed" in message and f"replace {cached} (it is 9 bytes" in message
    assert "put the file at" not in message
    server.files[f"/{RETINAFACE}"] = (models_dir / RETINAFACE).read_bytes()
    assert store.resolve(RETINAFACE, root=tmp_path) == cached
    assert store.sha256_of(cached) == store.KNOWN[RETINAFACE].sha256


def test_file_url_mirror(tmp_path, monkeypatch, models_dir):
    monkeypatch.setenv("WAV2LIP_MIRROR", models_dir.as_uri())
    path = store.fetch(RETINAFACE, root=tmp_path, progress=False)
    assert store.check(path, store.KNOWN[RETINAFACE]) is None


def test_cli_fetch_then_list(tmp_path, server, monkeypatch, models_dir, capsys):
    server.files[f"/{RETINAFACE}"] = (models_dir / RETINAFACE).read_bytes()
    monkeypatch.setenv("WAV2LIP_MIRROR", server.url)
    assert main(["weights", "fetch", RETINAFACE, "--weights-dir", str(tmp_path)]) == 0
    assert (tmp_path / RETINAFACE).is_file()

    capsys.readouterr()
    assert main(["weights", "list", "--weights-dir", str(tmp_path)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(lines) == set(store.KNOWN)
    assert "verified" in lines[RETINAFACE]
    assert "missing" in lines["s3fd.pth"]


def test_cli_fetch_wrong_file_is_exit_2_with_one_line(tmp_path, server, monkeypatch, payload, capsys):
    server.files["/s3fd.pth"] = payload
    monkeypatch.setenv("WAV2LIP_MIRROR", server.url)
    assert main(["weights", "fetch", "s3fd.pth", "--weights-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("wav2lip: error: s3fd.pth:") and "checksum mismatch" in err
    assert not any(tmp_path.iterdir())


def test_cli_inspect_reports_the_network(models_dir, capsys):
    assert main(["weights", "inspect", str(models_dir / RETINAFACE)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^kind:\s+retinaface$", out, re.M)
    assert re.search(r"^parameters:\s+[\d,]+$", out, re.M)


def test_cli_inspect_tells_a_gan_generator_with_its_training_state(tmp_path, capsys):
    model = Wav2Lip(width=0.25)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.999))  # the GAN recipe's betas
    save_checkpoint(tmp_path / "mine.pth", model, optimizer, step=1234, epoch=5)
    assert main(["weights", "inspect", str(tmp_path / "mine.pth")]) == 0
    fields = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines())
    fields = {key: value.strip() for key, value in fields.items()}
    n_params = sum(p.numel() for p in model.parameters())
    assert fields == {
        "file": str(tmp_path / "mine.pth"), "kind": "wav2lip", "parameters": f"{n_params:,}",
        "step": "1234", "epoch": "5", "variant": "gan", "width": "0.25", "residual": "yes",
        "size": f"{(tmp_path / 'mine.pth').stat().st_size / 1e6:,.1f} MB",
    }


def test_every_missing_weight_is_named_in_one_error(tmp_path, monkeypatch, models_dir):
    monkeypatch.setenv("WAV2LIP_OFFLINE", "1")
    with pytest.raises(Wav2LipError) as caught:
        store.resolve_all(["wav2lip_gan.pth", RETINAFACE, models_dir / RETINAFACE], root=tmp_path)
    message = str(caught.value)
    assert message.startswith("2 weight files are missing: ") and "\n" not in message
    assert str(tmp_path / "wav2lip_gan.pth") in message and str(tmp_path / RETINAFACE) in message
    assert store.resolve_all([models_dir / RETINAFACE], root=tmp_path) == [models_dir / RETINAFACE]


def test_a_known_name_is_the_known_file_not_a_stranger_in_the_current_folder(tmp_path, monkeypatch, models_dir):
    """`--checkpoint wav2lip_gan.pth` run where some other file of that name lies must not load that file
    instead of the verified copy; `./name` says "this file" and is used as is."""
    real = (models_dir / RETINAFACE).read_bytes()
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / RETINAFACE).write_bytes(real)
    monkeypatch.setenv("WAV2LIP_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / RETINAFACE).write_bytes(b"not the detector")
    with pytest.raises(Wav2LipError) as refused:
        store.resolve(RETINAFACE)
    message = str(refused.value)
    assert message.startswith(f"{RETINAFACE}: the file of that name in {tmp_path} is 16 bytes") and "\n" not in message
    assert f"./{RETINAFACE}" in message
    assert store.resolve(f"./{RETINAFACE}").read_bytes() == b"not the detector"  # asked for by path: as is
    (tmp_path / RETINAFACE).write_bytes(real)  # the known file itself: fine either way
    assert store.resolve(RETINAFACE).read_bytes() == real


@pytest.mark.parametrize("mirror", ["http://weights.example.com/models", "ftp://weights.example.com", "weights"])
def test_a_mirror_must_be_https(tmp_path, monkeypatch, mirror):
    monkeypatch.setenv("WAV2LIP_MIRROR", mirror)
    with pytest.raises(Wav2LipError, match="^WAV2LIP_MIRROR must be an https:// URL"):
        store.fetch(RETINAFACE, root=tmp_path, progress=False)
    assert not list(tmp_path.iterdir())


def self_signed(folder) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    pytest.importorskip("cryptography", reason="makes the test certificate")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


def test_a_redirect_from_https_to_http_is_refused(tmp_path, server, monkeypatch, payload):
    """An https source that sends the client to plain http would hand the download to anyone on the path."""
    entry = tiny_entry(server, payload)  # the plain-http copy a redirect points at
    cert, key = self_signed(tmp_path)

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", f"{server.url}{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    secure = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    secure.socket = context.wrap_socket(secure.socket, server_side=True)
    threading.Thread(target=secure.serve_forever, daemon=True).start()
    monkeypatch.setenv("SSL_CERT_FILE", cert)  # this test's certificate is the one trusted
    monkeypatch.setenv("WAV2LIP_MIRROR", f"https://127.0.0.1:{secure.server_address[1]}")
    try:
        with pytest.raises(Wav2LipError, match=f"redirected to {re.escape(server.url)}/tiny.pth, not https"):
            store.fetch(entry, root=tmp_path / "cache", progress=False)
    finally:
        secure.shutdown()
        secure.server_close()
    assert server.requests == []  # the plain-http copy was never asked for
    assert not (tmp_path / "cache" / "tiny.pth").exists()


def test_both_released_generators_are_verified_by_size_and_digest(tmp_path):
    """A download or a file in the current folder named like the authors' generators is used only when it
    is their file: both records carry a size and a SHA-256 (wav2lip.pth's from two public mirrors)."""
    for name in ("wav2lip.pth", "wav2lip_gan.pth"):
        entry = store.KNOWN[name]
        assert entry.size and entry.size > 400_000_000 and len(entry.sha256 or "") == 64
        impostor = tmp_path / name
        impostor.write_bytes(b"\0" * 1000)
        assert store.check(impostor, entry) == f"is 1,000 bytes, expected {entry.size:,}"
