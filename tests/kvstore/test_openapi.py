"""docs/openapi.yaml describes what the nodes serve (read as text: no YAML parser needed).

Checked with openapi-spec-validator as OpenAPI 3.1 when written; here the cheap facts that
drift: every public route is documented, and every error code the API can answer is in
the Error schema's enum.
"""

from __future__ import annotations

import re
from pathlib import Path

from kvstore import errors, http_codec
from kvstore.http_api import NodeInfo, PublicApi

DOC = (Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml").read_text()
PATHS = set(re.findall(r"^  (/\S*):$", DOC, re.MULTILINE))


def test_every_public_route_is_documented() -> None:
    api = PublicApi(None, NodeInfo("n:1", ring=lambda: None, is_alive=lambda n: True))
    served = {route.path.replace(r"{key:[\s\S]+}", "{key}") for route in api.routes()}
    assert served - {"/kv"} <= PATHS, served - PATHS
    assert {"/admin/v1/join", "/admin/v1/leave", "/admin/v1/remove", "/admin/v1/members",
            "/internal/v1/{op}", "/internal/v1/gossip"} <= PATHS


def test_every_error_code_is_in_the_error_enum() -> None:
    samples = [errors.InvalidContext("x"), errors.InvalidRequest("x"),
               errors.SequencerRejected("x"), errors.SiblingLimitExceeded(2, 1),
               errors.QuorumFailed("put", 2, 1, indeterminate=True),
               errors.NodeUnavailable("n", "x"), RuntimeError("x")]
    codes = {http_codec.error_for(e)[1]["error"] for e in samples}
    codes |= {"not_found", "method_not_allowed", "too_large"}
    enum = re.search(r"enum: \[(invalid_request, invalid_context, not_found[^\]]*)\]", DOC).group(1)
    assert codes <= {c.strip() for c in enum.split(",")}
