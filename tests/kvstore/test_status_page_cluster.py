"""The status page on a real 3-node cluster with 3 lock voters: the HTTP contract of /status
and /status/v1 (hostile input included), then the page itself in Debian's chromium driven
by playwright: it draws the ring, names the nodes, the lock leader, a session and its locks,
and, without a reload, shows a node going down, an event about it, and goes stale when its
own node stops. A screenshot goes to the test's tmp_path (and to $RINGLOCK_SCREENSHOT_DIR).
Last, one node with an auth file: the page draws when its paths are public (docs/status.md).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
from pathlib import Path

import pytest

from kvstore.client import Client
from lockservice.client import LockClient
from tests.cluster import Cluster, NodeProcess, free_ports

RING_SIZE = 32  # partitions: few enough that each arc is visible in the screenshot
CHROMIUM = Path("/usr/bin/chromium")
# Debian's chromium on a closed network: without the background-networking flags its own
# connections are refused and it stalls; --no-sandbox because the tests run as root.
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
WAIT_MS = 60_000  # bound on each wait for the page to show something (a loaded 2-core box)
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
HOSTILE_LOCK = 'status/<img src=x onerror="document.title=\'owned\'">&amp;'


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("status-cluster")
    with Cluster(root, size=3, lock_voters=3,
                 extra_args=["--ring-size", str(RING_SIZE)]) as c:
        yield c


def status_doc(cluster: Cluster, node: str) -> dict:
    status, _, body = cluster.http(node, "GET", "/status/v1")
    assert status == 200, body
    return json.loads(body)


# -- the HTTP contract --------------------------------------------------------------------

def test_status_is_json_for_programs_and_the_page_for_browsers(cluster) -> None:
    node = cluster.names[0]
    for headers in ({}, {"Accept": "*/*"}, {"Accept": "application/json"}):
        status, got, body = cluster.http(node, "GET", "/status", headers=headers)
        assert status == 200 and got["Content-Type"].startswith("application/json")
        assert json.loads(body)["node"] == node
        assert got["Vary"] == "Accept"
    with Client([node]) as client:  # the client library and `kv status` keep their JSON
        assert client.status()["node"] == node
    status, got, body = cluster.http(node, "GET", "/status", headers={"Accept": BROWSER_ACCEPT})
    assert status == 200 and got["Content-Type"].startswith("text/html")
    assert b'<svg' not in body and b'status/static/status.js' in body
    assert "script-src 'self'" in got["Content-Security-Policy"]
    assert got["Cache-Control"] == "no-store"
    status, got, body = cluster.http(node, "HEAD", "/status", headers={"Accept": BROWSER_ACCEPT})
    assert status == 200 and body == b"" and got["Content-Type"].startswith("text/html")
    for name, kind in (("status.js", "text/javascript"), ("status.css", "text/css")):
        status, got, body = cluster.http(node, "GET", f"/status/static/{name}")
        assert status == 200 and got["Content-Type"].startswith(kind) and body


def test_status_v1_describes_ring_members_lock_service_and_events(cluster) -> None:
    node = cluster.names[1]
    doc = status_doc(cluster, node)
    assert doc["version"] == 1 and doc["node"] == node
    assert doc["ring"]["ring_size"] == RING_SIZE == len(doc["ring"]["owners"])
    assert set(doc["ring"]["owners"]) == set(cluster.names)
    assert {m["name"]: m["member"] for m in doc["members"]} == dict.fromkeys(cluster.names,
                                                                             True)
    assert sum(m["partitions"] for m in doc["members"]) == RING_SIZE
    lock = doc["lock"]
    assert lock["configured"] and lock["member"] and lock["member_id"] == 2
    assert [v["address"] for v in lock["voters"]] == cluster.names
    assert lock["sessions_total"] == len(lock["sessions"])
    assert all(e["kind"] in ("membership", "node", "lock", "handoff", "aae")
               for e in doc["events"]["items"])


@pytest.mark.parametrize("query", [
    "x=1", "events=5", "%00", "a=%ff%fe", "a=<script>alert(1)</script>", "&&&", "=",
    "a" * 2000, "limit=-1&limit=1e309"])
def test_status_v1_refuses_any_query_string_with_400(cluster, query) -> None:
    node = cluster.names[0]
    status, got, body = cluster.http(node, "GET", f"/status/v1?{query}")
    assert status == 400, body
    assert got["Content-Type"].startswith("application/json")
    assert json.loads(body)["error"] == "invalid_request"
    assert status_doc(cluster, node)["node"] == node  # and the node answers as before


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_status_v1_refuses_other_methods_with_405_and_changes_nothing(cluster, method) -> None:
    node = cluster.names[0]
    before = status_doc(cluster, node)["ring"]
    status, got, body = cluster.http(node, method, "/status/v1", body=b'{"ring": []}',
                                     headers={"Content-Type": "application/json"})
    assert status == 405, body
    assert "GET" in got["Allow"]
    assert json.loads(body)["error"] == "method_not_allowed"
    assert status_doc(cluster, node)["ring"] == before


@pytest.mark.parametrize("path", [
    "/status/static/", "/status/static/nothing.js", "/status/static/status.html",
    "/status/static/..%2fstatus_page.py", "/status/static/%2e%2e%2f%2e%2e%2fnode.py",
    "/status/static/status.js%00", "/status/v2", "/status/v1/", "/status/"])
def test_unknown_status_paths_answer_404_and_serve_no_file(cluster, path) -> None:
    status, _, body = cluster.http(cluster.names[0], "GET", path)
    assert status == 404, body
    assert json.loads(body)["error"] == "not_found"
    assert b"import" not in body  # no source file leaked


@pytest.mark.parametrize("accept", [
    "text/html;q=nan", "text/html;q=inf, application/json;q=-1", "x" * 8000,
    ";;;,,,/", "text/html\u00e9", "*/*;q=0.1, text/html;q=0.0001"])
def test_odd_accept_headers_get_the_page_or_the_json_never_an_error(cluster, accept) -> None:
    node = cluster.names[0]
    status, got, body = cluster.http(node, "GET", "/status",
                                     headers={"Accept": accept.encode().decode("latin-1")})
    assert status == 200, body
    kind = got["Content-Type"].split(";")[0]
    assert kind in ("text/html", "application/json")
    if kind == "application/json":
        assert json.loads(body)["node"] == node


def test_status_v1_matches_its_schema_in_openapi(cluster) -> None:
    import jsonschema
    import yaml

    doc = yaml.safe_load((Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml")
                         .read_text())
    # The whole document as the root schema: its other keys are unknown keywords (ignored),
    # and "#/components/..." references inside the response schema resolve against it.
    pointer = "#/paths/~1status~1v1/get/responses/200/content/application~1json/schema"
    validator = jsonschema.Draft202012Validator({**doc, "$ref": pointer})
    for node in cluster.names:
        if cluster.node(node).running:
            validator.validate(status_doc(cluster, node))
    with pytest.raises(jsonschema.ValidationError):  # the schema does constrain something
        validator.validate({**status_doc(cluster, cluster.names[0]), "version": 2})


# -- the page in a real browser -------------------------------------------------------------

def _chromium(tmp_path: Path):
    """A playwright context on Debian's chromium (playwright's own download is out of
    reach here) with a fresh profile folder under tmp_path."""
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium package at /usr/bin/chromium "
                    "(apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    manager = sync_playwright()
    pw = manager.start()
    try:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1180, "height": 860})
    except BaseException:
        manager.__exit__(None, None, None)
        raise
    return manager, context


def _save_screenshot(page, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000  # a picture, not an empty page
    keep = os.environ.get("RINGLOCK_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / name)
    return shot


def test_status_page_in_chromium_shows_the_cluster_and_follows_a_node_going_down(
        cluster, tmp_path) -> None:
    page_node = cluster.names[0]
    manager, context = _chromium(tmp_path)
    stopped = []
    try:
        with LockClient(list(cluster.lock_peers.values())) as locks:
            held = locks.acquire("status/report")
            odd = locks.acquire(HOSTILE_LOCK)
            leader = locks.leader()
            page = context.new_page()
            urls: list[str] = []
            page.on("request", lambda r: urls.append(r.url))
            page.goto(f"http://{page_node}/status")
            expect = _expect()

            # The ring: one arc per partition, coloured by owner; the legend names all nodes.
            arcs = page.locator("#ring svg path.arc")
            expect(arcs).to_have_count(RING_SIZE, timeout=WAIT_MS)
            owners = arcs.evaluate_all("as => as.map(a => [a.dataset.owner, "
                                       "a.getAttribute('fill')])")
            assert {o for o, _ in owners} == set(cluster.names)
            fills = {o: {f for p, f in owners if p == o} for o in cluster.names}
            assert all(len(f) == 1 for f in fills.values())  # one colour per owner
            assert len({next(iter(f)) for f in fills.values()}) == 3  # and a different one
            legend = page.locator("#legend li[data-node]")
            expect(legend).to_have_count(3)
            assert sorted(legend.evaluate_all("ls => ls.map(l => l.dataset.node)")) == \
                cluster.names
            for name in cluster.names:
                expect(page.locator(f'#legend li[data-node="{name}"]')).to_have_attribute(
                    "data-health", "alive", timeout=WAIT_MS)

            # The lock service: the leader, our session and our locks (names as plain text).
            expect(page.locator("#lock-leader")).to_have_text(
                f"#{leader['leader']} {leader['address']}", timeout=WAIT_MS)
            session = page.locator(f'#sessions tr[data-session="{held.session}"]')
            expect(session).to_contain_text("status/report", timeout=WAIT_MS)
            row = page.locator('#locks tr[data-lock="status/report"]')
            expect(row).to_contain_text("exclusive")
            expect(row).to_contain_text(f"{held.session}:{held.generation}")
            odd_row = page.locator("#locks tr").filter(has_text="status/<img")
            expect(odd_row.locator("td.name")).to_have_text(HOSTILE_LOCK)
            assert odd_row.get_attribute("data-lock") == odd.name == HOSTILE_LOCK
            assert page.locator("#locks img").count() == 0
            assert page.title() == f"ringlock {page_node}"

            # A node stops: without a reload the page shows it down, and an event about it.
            victim = next(n for n in cluster.nodes if n.name not in (
                page_node, leader["address"]))
            victim.stop()
            stopped.append(victim)
            expect(page.locator(f'#legend li[data-node="{victim.name}"]')).to_have_attribute(
                "data-health", "down", timeout=WAIT_MS)
            expect(page.locator("#events li").filter(
                has_text=f"node {victim.name} is down")).not_to_have_count(0, timeout=WAIT_MS)
            down_arcs = page.locator(f'#ring path.arc.down[data-owner="{victim.name}"]')
            expect(down_arcs).to_have_count(
                sum(1 for o, _ in owners if o == victim.name), timeout=WAIT_MS)
            expect(page.locator("body")).to_have_attribute("data-state", "live")
            shot = _save_screenshot(page, tmp_path, "status.png")

            # Everything it fetched came from the node itself: no CDN, no other origin.
            assert urls and all(u.startswith(f"http://{page_node}/status") for u in urls), urls
            assert f"http://{page_node}/status/v1" in urls

            # The page's own node stops: the page keeps the last picture and says it is stale.
            locks.release(held)
            locks.release(odd)
        cluster.node(page_node).stop()
        stopped.append(cluster.node(page_node))
        expect(page.locator("body")).to_have_attribute("data-state", "stale", timeout=WAIT_MS)
        expect(page.locator("#freshness")).to_contain_text("stale")
        expect(page.locator("#ring svg path.arc")).to_have_count(RING_SIZE)
        _save_screenshot(page, tmp_path, "status-stale.png")
        assert shot.exists()
    finally:
        context.close()
        manager.__exit__(None, None, None)
        for node in stopped:  # the module's cluster stays whole for any test after this one
            node.start()
        for node in stopped:
            node.wait_ready()


def _expect():
    from playwright.sync_api import expect

    return expect


AUTH_FILE = """
[peer]
token = "status-page-test-peer-token-0123456789"

[public]
paths = ["/health", "/status", "/status/v1", "/status/static/*"]
"""


def test_with_an_auth_file_the_page_draws_when_docs_status_paths_are_public(tmp_path) -> None:
    """docs/status.md's advice: a browser sends no token, so the page needs its paths public;
    everything else (here /ring) still asks for one."""
    (tmp_path / "auth.toml").write_text(AUTH_FILE)
    name = f"127.0.0.1:{free_ports(1)[0]}"
    node = NodeProcess(name, tmp_path, ["--auth-file", str(tmp_path / "auth.toml"),
                                        "--ring-size", str(RING_SIZE)])
    node.start()
    try:
        node.wait_ready()
        assert _get_status(name, "/ring") == 401
        assert _get_status(name, "/status/v1") == 200
        manager, context = _chromium(tmp_path)
        try:
            page = context.new_page()
            page.goto(f"http://{name}/status")
            expect = _expect()
            expect(page.locator("#ring svg path.arc")).to_have_count(RING_SIZE,
                                                                     timeout=WAIT_MS)
            expect(page.locator(f'#legend li[data-node="{name}"]')).to_have_attribute(
                "data-health", "alive")
            expect(page.locator("body")).to_have_attribute("data-state", "live")
            expect(page.locator("#lock-note")).to_contain_text("no lock service")
        finally:
            context.close()
            manager.__exit__(None, None, None)
    finally:
        node.stop()


def _get_status(node: str, path: str) -> int:
    host, port = node.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()
