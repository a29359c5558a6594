"""Issue 13 defect 4: forged and hostile requests to the review server, over real sockets and the CLI."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest
from damage_rig.rig.events import EventLog
from damage_rig.rig.review import server as server_mod
from damage_rig.rig.review.server import ReviewServer

from tests.helpers.review import make_state


@pytest.fixture
def server(tmp_path):
    make_state(tmp_path)
    srv = ReviewServer(tmp_path, port=0).start()
    yield srv
    srv.stop()


def raw(srv, request: bytes, timeout: float = 10.0, host: str | None = None) -> tuple[int, dict | bytes]:
    """Send bytes as they are; -> (status, JSON body or raw body)."""
    family = socket.AF_INET6 if ":" in srv.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect((host or srv.host, srv.port))
        s.sendall(request)
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def req(srv, method, path, body=b"", headers=None) -> tuple[int, dict | bytes]:
    h = {"Host": f"127.0.0.1:{srv.port}", "Content-Type": "application/json",
         "X-CSRF-Token": srv.guard.csrf, "Content-Length": str(len(body)), "Connection": "close"}
    h.update(headers or {})
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in h.items() if v is not None]
    return raw(srv, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)


def label_body(verdict="damaged") -> bytes:
    return json.dumps({"verdict": verdict, "reviewer": "ana"}).encode()


def test_cross_origin_text_plain_post_is_refused_and_changes_nothing(server, tmp_path):
    st, data = req(server, "POST", "/api/items/it000006/label", label_body(),
                   {"Content-Type": "text/plain", "Origin": "http://evil.example", "X-CSRF-Token": None})
    assert st == 403 and "evil.example" in data["error"]
    # a same-origin page without the token, or with the wrong content type, is refused too
    st, data = req(server, "POST", "/api/items/it000006/label", label_body(), {"X-CSRF-Token": None})
    assert st == 403 and "CSRF" in data["error"]
    st, data = req(server, "POST", "/api/items/it000006/label", label_body(), {"Content-Type": "text/plain"})
    assert st == 415
    for path, body in (("/api/gallery/enroll", b'{"sku": "A"}'), ("/api/gallery/rollback", b"{}")):
        st, _ = req(server, "POST", path, body, {"Origin": "http://evil.example"})
        assert st == 403
    with EventLog(tmp_path) as log:
        assert log.get("it000006")["label"] is None


def test_page_carries_the_csrf_token_that_posts_need(server):
    st, page = req(server, "GET", "/")
    assert st == 200
    token = re.search(rb'<meta name="csrf-token" content="([^"]+)">', page).group(1).decode()
    st, data = req(server, "POST", "/api/items/it000006/label", label_body(),
                   {"X-CSRF-Token": token, "Origin": f"http://127.0.0.1:{server.port}"})
    assert st == 200 and data["label"] == "damaged"


def test_foreign_host_header_is_refused(server):
    st, data = req(server, "GET", "/api/items", headers={"Host": f"rebind.example:{server.port}"})
    assert st == 403 and "Host" in data["error"]
    st, _ = req(server, "GET", "/api/items", headers={"Host": f"localhost:{server.port}"})
    assert st == 200


@pytest.mark.parametrize("length, status", [("-1", 400), ("-300000000", 400), ("abc", 400),
                                            (str(300 * 2**20), 413), (None, 411)])
def test_content_length_is_validated(server, length, status):
    st, data = req(server, "POST", "/api/items/it000006/label", label_body(), {"Content-Length": length})
    assert st == status, data
    assert "error" in data


def test_limit_is_clamped(server):
    st, data = req(server, "GET", "/api/items?limit=-1")
    assert st == 200 and len(data["items"]) == 1
    st, data = req(server, "GET", "/api/items?limit=99999999999")
    assert st == 200 and len(data["items"]) == 4


@pytest.mark.parametrize("body", [{"verdict": ["damaged"]}, {"verdict": "damaged", "rev": "0"},
                                  {"verdict": "damaged", "rev": True}, {"verdict": "damaged", "type": 3},
                                  {"verdict": "damaged", "reviewer": {"a": 1}}, {"verdict": None}, [1, 2], "x"])
def test_wrong_typed_fields_answer_400_json(server, body):
    st, data = req(server, "POST", "/api/items/it000006/label", json.dumps(body).encode())
    assert st == 400 and isinstance(data, dict) and data["error"]
    st, data = req(server, "POST", "/api/gallery/enroll", json.dumps({"sku": 5}).encode())
    assert st == 400


def test_idle_connection_is_closed(tmp_path, monkeypatch):
    make_state(tmp_path)
    monkeypatch.setattr(server_mod, "IDLE_TIMEOUT_S", 0.5)
    srv = ReviewServer(tmp_path, port=0).start()
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"POST /api/items/it000006/label HTTP/1.1\r\nHost: x")  # and then nothing
            t0 = time.monotonic()
            while s.recv(4096):
                pass
            assert time.monotonic() - t0 < 3.0
    finally:
        srv.stop()


def test_ipv6_loopback_works(tmp_path):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    make_state(tmp_path)
    srv = ReviewServer(tmp_path, port=0, host="::1").start()
    try:
        assert srv.url == f"http://[::1]:{srv.port}/"
        st, data = raw(srv, f"GET /api/items HTTP/1.1\r\nHost: [::1]:{srv.port}\r\nConnection: close\r\n\r\n"
                       .encode())
        assert st == 200 and len(data["items"]) == 4
    finally:
        srv.stop()


def _rig(*args, env=None, timeout=30):
    return subprocess.run([sys.executable, "-m", "damage_rig.rig.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, check=False)


def test_cli_refuses_a_public_bind_without_token(tmp_path):
    make_state(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "RIG_REVIEW_TOKEN"}
    r = subprocess.run([sys.executable, "-m", "damage_rig.rig.cli", "review", "--state", str(tmp_path),
                        "--host", "0.0.0.0", "--port", "0"], capture_output=True, text=True, timeout=30, env=env, check=False)
    assert r.returncode == 1
    assert "RIG_REVIEW_TOKEN" in r.stderr + r.stdout and "Traceback" not in r.stderr


def test_public_bind_with_token_needs_it_on_every_request(tmp_path):
    make_state(tmp_path)
    token = "t" * 32
    srv = ReviewServer(tmp_path, port=0, host="0.0.0.0", token=token).start()
    try:
        srv.host = "127.0.0.1"  # connect over loopback; the server is bound to every interface
        st, _ = req(srv, "GET", "/api/items")
        assert st == 401
        st, _ = req(srv, "GET", "/api/items", headers={"Authorization": "Bearer wrong"})
        assert st == 401
        st, data = req(srv, "GET", "/api/items", headers={"Authorization": f"Bearer {token}"})
        assert st == 200 and len(data["items"]) == 4
        st, _ = req(srv, "GET", f"/?token={token}")
        assert st == 303  # cookie set, token out of the address bar (test_review_station.py follows it)
        st, page = req(srv, "GET", "/", headers={"Cookie": f"rig_review_token={token}"})
        assert st == 200 and b"csrf-token" in page
    finally:
        srv.stop()


def test_property_any_body_or_length_gets_a_4xx_json_never_a_crash(tmp_path, monkeypatch):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as hs

    make_state(tmp_path)
    monkeypatch.setattr(server_mod, "IDLE_TIMEOUT_S", 0.2)  # a body shorter than its length: 408 quickly
    srv = ReviewServer(tmp_path, port=0).start()
    json_values = hs.recursive(hs.none() | hs.booleans() | hs.integers() | hs.floats() | hs.text(max_size=20),
                               lambda c: hs.lists(c, max_size=4) | hs.dictionaries(hs.text(max_size=8), c, max_size=4),
                               max_leaves=10)
    bodies = (hs.binary(max_size=200)
              | hs.dictionaries(hs.sampled_from(["verdict", "rev", "type", "reviewer", "sku", "version"]),
                                json_values, max_size=5).map(lambda d: json.dumps(d).encode()))
    paths = hs.sampled_from(["/api/items/it000006/label", "/api/items/nope/label", "/api/gallery/enroll",
                             "/api/gallery/rollback", "/api/items?limit=", "/img/x/y.jpg"])

    try:
        @settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
        @given(body=bodies, path=paths, length=hs.none() | hs.integers(-2**40, 2**40).map(str),
               ctype=hs.sampled_from(["application/json", "text/plain", "", "application/json; charset=x"]))
        def check(body, path, length, ctype):
            st, data = req(srv, "POST", path, body, {"Content-Length": length if length is not None
                                                     else str(len(body)), "Content-Type": ctype})
            no_model = st == 503 and "gallery" in path  # this server has no model directory
            assert 200 <= st < 500 or no_model, (st, data)
            if st != 200:
                assert isinstance(data, dict) and "error" in data

        check()
    finally:
        srv.stop()


def test_enroll_over_http_keeps_every_shipped_reference_and_is_idempotent(tmp_path, model_dir):
    """Issue 13 defect 5 through the HTTP API, on a copy of the shipped model (whose reference
    sources are paths on the machine that trained it)."""
    import shutil

    from damage_rig.rig.detect.gallery import load_gallery
    from damage_rig.rig.review.store import ReviewStore

    from tests.helpers.events import make_record

    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    sku = "sku000-carton"
    before = load_gallery(model).skus[sku].n_refs
    state = tmp_path / "state"
    with EventLog(state) as log:
        for i in range(2):
            log.record(make_record(i, "divert", sku=sku, t0=time.time() - 60, size=96))
    st = ReviewStore(state)
    st.label("it000000", "packaging_changed")
    st.label("it000001", "not_damaged")
    st.close()
    srv = ReviewServer(state, port=0, model_dir=model).start()
    try:
        code, data = req(srv, "POST", "/api/gallery/enroll", json.dumps({"sku": sku}).encode())
        assert code == 200 and data["enrolled"] == 4, data
        after = load_gallery(model).skus[sku].n_refs
        assert after == before + 4, (before, after)  # 70 -> 74, not 70 -> 4
        code, again = req(srv, "POST", "/api/gallery/enroll", json.dumps({"sku": sku}).encode())
        assert code == 200 and again["enrolled"] == 0 and again["version"] == data["version"]
        assert load_gallery(model).skus[sku].n_refs == after
    finally:
        srv.stop()
