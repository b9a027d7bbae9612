"""The OpenAPI document: valid, equal to Flask's URL map, naming every error code the server answers."""
from __future__ import annotations

import re
from pathlib import Path

import edge_server
from edge_server.openapi import CODES

# Codes no client ever reads: the connection is gone (499), Flask's fallback for statuses we never raise,
# and HubError's default (every hub failure names its own code).
UNSENT = {"client_disconnected", "http_error", "bad_request", "method_not_allowed", "hub_error"}


def test_document_is_valid_openapi_3_1(client):
    from openapi_spec_validator import validate

    doc = client.get("/openapi.json").json
    assert doc["openapi"] == "3.1.0"
    validate(doc)


def test_document_and_url_map_are_equal(tiny_app):
    doc = tiny_app.test_client().get("/openapi.json").json
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    routed = set()
    for rule in tiny_app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        routed |= {(path, method) for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == routed


def test_every_error_code_raised_is_documented():
    source = "\n".join(p.read_text() for p in Path(edge_server.__file__).parent.rglob("*.py"))
    raised = set(re.findall(r'\bcode="([a-z_]+)"', source))
    raised |= set(re.findall(r'status, code = \d+, "([a-z_]+)"', source))
    raised |= set(re.findall(r'\d{3}: "([a-z_]+)"', source))  # Flask's own errors, mapped in errors.py
    assert raised - UNSENT <= set(CODES), raised - UNSENT - set(CODES)
    assert "unauthorized" in raised and "model_not_found" in raised  # the patterns still find codes


def test_public_operations_and_security(client):
    doc = client.get("/openapi.json").json
    public = {path for path, ops in doc["paths"].items() if ops.get("get", {}).get("security") == []}
    assert public == {"/", "/health", "/openapi.json", "/docs/", "/docs/{path}", "/web/{name}"}
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    launch = doc["paths"]["/model/launch"]["post"]
    assert "401" in launch["responses"] and "415" in launch["responses"] and "502" in launch["responses"]
    stream = doc["paths"]["/generate/fromtext"]["post"]["responses"]["200"]["content"]
    assert list(stream) == ["text/plain"]
    image = doc["paths"]["/generate/fromimagetext"]["post"]["requestBody"]["content"]
    assert set(image) == {"application/json", "multipart/form-data"}
