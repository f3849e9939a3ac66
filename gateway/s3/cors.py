"""CORS: bucket rules as S3 defines them, preflights, and the headers on actual responses.

Rules are stored as plain dicts (JSON in the bucket row)::

    {"id": str | None, "origins": [...], "methods": [...], "headers": [...],
     "expose": [...], "max_age": int | None}

Origins and allowed headers may hold one ``*`` wildcard each (``https://*.example.com``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from gateway import errors
from gateway.s3.xml import children, el, local, parse

Rule = dict[str, Any]
METHODS = ("GET", "PUT", "POST", "DELETE", "HEAD")
MAX_RULES = 100
#: What a browser may read from answers under the server-wide default rule.
DEFAULT_EXPOSE = ["ETag", "x-amz-request-id", "x-amz-version-id", "Content-Length",
                  "Content-Range", "Content-Disposition", "Last-Modified"]


def parse_rules(body: bytes) -> list[Rule]:
    root = parse(body)
    if local(root.tag) != "CORSConfiguration":
        raise errors.MalformedXML()
    rules: list[Rule] = []
    for node in children(root, "CORSRule"):
        rule: Rule = {"id": None, "origins": [], "methods": [], "headers": [], "expose": [],
                      "max_age": None}
        for child in node:
            name, text = local(child.tag), (child.text or "").strip()
            if name == "AllowedOrigin":
                rule["origins"].append(text)
            elif name == "AllowedMethod":
                rule["methods"].append(text)
            elif name == "AllowedHeader":
                rule["headers"].append(text)
            elif name == "ExposeHeader":
                rule["expose"].append(text)
            elif name == "MaxAgeSeconds":
                try:
                    rule["max_age"] = int(text)
                except ValueError:
                    raise errors.MalformedXML() from None
            elif name == "ID":
                rule["id"] = text
            else:
                raise errors.MalformedXML()
        _validate(rule)
        rules.append(rule)
    if not rules or len(rules) > MAX_RULES:
        raise errors.MalformedXML()
    return rules


def _validate(rule: Rule) -> None:
    if not rule["origins"] or not rule["methods"]:
        raise errors.MalformedXML()
    for method in rule["methods"]:
        if method not in METHODS:
            raise errors.InvalidRequest(
                f"Found unsupported HTTP method in CORS config. Unsupported method is {method}")
    for pattern in (*rule["origins"], *rule["headers"]):
        if pattern.count("*") > 1:
            raise errors.InvalidRequest(
                f'AllowedOrigin "{pattern}" can not have more than one wildcard.')
    if rule["max_age"] is not None and rule["max_age"] < 0:
        raise errors.MalformedXML()


def rules_xml(rules: Sequence[Rule]) -> list[str]:
    out = []
    for rule in rules:
        parts = [el("ID", rule.get("id"))]
        parts += [el("AllowedOrigin", o) for o in rule["origins"]]
        parts += [el("AllowedMethod", m) for m in rule["methods"]]
        parts += [el("AllowedHeader", h) for h in rule["headers"]]
        parts += [el("ExposeHeader", h) for h in rule["expose"]]
        parts.append(el("MaxAgeSeconds", rule.get("max_age")))
        out.append("<CORSRule>" + "".join(parts) + "</CORSRule>")
    return out


def default_rule(origins_setting: str) -> Rule | None:
    origins = [o.strip() for o in origins_setting.split(",") if o.strip()]
    if not origins:
        return None
    return {"id": "gateway-default", "origins": origins, "methods": list(METHODS),
            "headers": ["*"], "expose": DEFAULT_EXPOSE, "max_age": 3600}


def _wild(pattern: str, value: str, *, fold: bool) -> bool:
    if fold:
        pattern, value = pattern.lower(), value.lower()
    if "*" not in pattern:
        return pattern == value
    head, _, tail = pattern.partition("*")
    return len(value) >= len(head) + len(tail) and value.startswith(head) \
        and value.endswith(tail)


def match(rules: Iterable[Rule], origin: str, method: str,
          request_headers: Sequence[str] = ()) -> Rule | None:
    """The first rule allowing this origin, method and every requested header."""
    for rule in rules:
        if method not in rule["methods"]:
            continue
        if not any(_wild(o, origin, fold=False) for o in rule["origins"]):
            continue
        if all(any(_wild(h, wanted, fold=True) for h in rule["headers"])
               for wanted in request_headers):
            return rule
    return None


def _allow_origin(rule: Rule, origin: str) -> dict[str, str]:
    if "*" in rule["origins"]:
        return {"Access-Control-Allow-Origin": "*"}
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true"}


def preflight_headers(rule: Rule, origin: str, request_headers: Sequence[str]) -> dict[str, str]:
    headers = _allow_origin(rule, origin)
    headers["Access-Control-Allow-Methods"] = ", ".join(rule["methods"])
    if request_headers:
        headers["Access-Control-Allow-Headers"] = ", ".join(request_headers)
    if rule["expose"]:
        headers["Access-Control-Expose-Headers"] = ", ".join(rule["expose"])
    if rule.get("max_age") is not None:
        headers["Access-Control-Max-Age"] = str(rule["max_age"])
    headers["Vary"] = "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"
    return headers


def response_headers(rule: Rule, origin: str) -> dict[str, str]:
    headers = _allow_origin(rule, origin)
    headers["Access-Control-Allow-Methods"] = ", ".join(rule["methods"])
    if rule["expose"]:
        headers["Access-Control-Expose-Headers"] = ", ".join(rule["expose"])
    return headers


def requested_headers(value: str | None) -> list[str]:
    if not value:
        return []
    return [h.strip().lower() for h in value.split(",") if h.strip()]
