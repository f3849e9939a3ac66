"""Timing-safe comparisons, checked structurally: in the modules that verify credentials
(signatures, token and session hashes, passwords, POST policies, SSE-C key digests, invite
codes), no secret-derived value is compared with ``==`` or ``!=`` — those stop at the first
differing byte, so their timing tells an attacker how much of a guess was right. Such
comparisons must use ``hmac.compare_digest`` (or the password library's verify).

A comparison is flagged when one side is named like a secret (a word of its name is one of
:data:`SECRET_WORDS`, looking through ``.encode()``, ``.lower()`` and the like) and neither
side is a literal or an UPPER_CASE constant (comparing with a fixed, public value leaks
nothing: a header name, a scheme, an algorithm).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The modules that handle credentials, relative to the repository.
MODULES = (
    "gateway/auth/*.py",
    "gateway/api/auth.py",
    "gateway/api/auth_routes.py",
    "gateway/api/tokens.py",
    "gateway/api/presign.py",
    "gateway/api/ws.py",
    "gateway/api/admin.py",
    "gateway/service/tokens.py",
    "gateway/service/sessions.py",
    "gateway/service/accounts.py",
    "gateway/service/encryption.py",
    "gateway/service/sse.py",
    "gateway/service/bots.py",
    "gateway/service/webhooks.py",
    "gateway/s3/endpoint.py",
    "gateway/s3/form.py",
    "gateway/s3/request.py",
    "gateway/console/__init__.py",
)

SECRET_WORDS = frozenset({
    "signature", "sig", "digest", "hexdigest", "token", "secret", "hash", "hashed",
    "password", "passwd", "mac", "hmac", "csrf", "nonce", "md5", "session", "credential",
    "invite", "code",
})
#: Calls that transform a value without making it public.
_TRANSPARENT = frozenset({"encode", "decode", "lower", "upper", "strip", "rstrip", "lstrip",
                          "casefold", "str", "bytes"})
#: Calls whose result reveals nothing secret (a length, a type).
_PUBLIC_CALLS = frozenset({"len", "type", "isinstance", "bool", "id"})
_CONSTANT_NAME = re.compile(r"^_?[A-Z][A-Z0-9_]*$")


@dataclass
class Audit:
    files: int = 0
    #: Every ``==`` / ``!=`` comparison in those modules.
    comparisons: int = 0
    #: ``hmac.compare_digest`` calls (and ``secrets.compare_digest``).
    timing_safe: int = 0
    #: ``path:line: source`` of each secret compared with ``==`` / ``!=``.
    flagged: list[str] = field(default_factory=list)


def _words(name: str) -> set[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return {w for w in re.split(r"[^a-zA-Z0-9]+", spaced.lower()) if w}


def _name(node: ast.expr) -> str | None:
    """The name a value goes by (None for literals and public values)."""
    if isinstance(node, ast.Constant):
        return None
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript):
        index = node.slice
        if isinstance(index, ast.Constant) and isinstance(index.value, str):
            return index.value
        return _name(node.value)
    if isinstance(node, ast.Call):
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else (
            func.id if isinstance(func, ast.Name) else None)
        if called in _PUBLIC_CALLS:
            return None
        if called == "get" and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            return node.args[0].value
        if called in _TRANSPARENT:
            if isinstance(func, ast.Attribute):
                return _name(func.value)
            return _name(node.args[0]) if node.args else None
        return called
    return None


def _is_constant(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return True
    name = _name(node)
    if isinstance(node, (ast.Name, ast.Attribute)) and name and _CONSTANT_NAME.match(name):
        return True
    return isinstance(node, ast.Call) and name is None


def secret_comparison(node: ast.Compare) -> bool:
    if not any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
        return False
    operands = [node.left, *node.comparators]
    if any(_is_constant(o) for o in operands):
        return False
    return any(_words(n) & SECRET_WORDS for o in operands if (n := _name(o)))


def audit(root: Path = ROOT, modules: tuple[str, ...] = MODULES) -> Audit:
    result = Audit()
    for pattern in modules:
        for path in sorted(root.glob(pattern)):
            source = path.read_text()
            tree = ast.parse(source, str(path))
            result.files += 1
            lines = source.splitlines()
            for node in ast.walk(tree):
                if isinstance(node, ast.Compare) and any(
                        isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
                    result.comparisons += 1
                    if secret_comparison(node):
                        where = path.relative_to(root)
                        result.flagged.append(
                            f"{where}:{node.lineno}: {lines[node.lineno - 1].strip()}")
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and node.func.attr == "compare_digest":
                    result.timing_safe += 1
    return result
