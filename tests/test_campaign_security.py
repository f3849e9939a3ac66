"""The security campaign's short version (tenant isolation through every door, secrets at
rest and in logs, TLS), and the structural check that credentials are compared in
constant time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from campaigns import security
from campaigns._timing_audit import Audit, audit, secret_comparison

CHANNELS = ("s3", "presigned", "post-policy", "json", "changes", "websocket", "console")


@pytest.mark.slow
def test_security_campaign(tmp_path: Path) -> None:
    report = security.run(tmp_path, long=False)
    message = report.render()
    assert report.ok, message
    figures = report.figures
    # Every door was tried, both ways: refused where it must be, open to the owner.
    for channel in CHANNELS:
        assert figures[f"matrix cells: {channel}"] >= 10, (channel, message)
    assert figures["matrix cells checked"] >= 400, message
    assert figures["matrix refusals checked"] >= 250, message
    assert figures["matrix positive controls"] >= 150, message
    assert figures["matrix wrongly granted"] == 0, message
    # Access lost while subscribed ends the delivery: closed, or the subscription ended.
    endings = {k: v for k, v in figures.items() if k.startswith("ws subscription, ")}
    assert len(endings) == 5, message
    assert all(v.startswith(("closed 4401", "error FORBIDDEN")) for v in endings.values()), \
        message
    assert figures["plaintext secrets looked for at rest"] >= 50, message
    assert figures["plaintext secrets found at rest"] == 0, message
    assert figures["database bytes scanned"] > 100_000, message
    assert figures["log lines scanned"] >= 1000, message
    assert figures["secret values looked for in logs"] >= 200, message
    assert figures["secrets found in logs"] == 0, message
    assert figures["TLS requests served"] >= 20, message
    assert figures["TLS connections refused (plain HTTP, untrusted)"] == 3, message
    assert figures["timing audit: secrets compared with ==/!="] == 0, message
    # Webhooks aimed inward, in every spelling, reached nothing.
    assert figures["webhook URLs aimed inward"] >= 15, message
    assert figures["deliveries refused as 'address not allowed'"] >= 15, message
    assert figures["connections reaching the inward listener"] == 0, message


def test_credentials_are_compared_in_constant_time() -> None:
    """No signature, token or session hash, password, invite code or SSE-C key digest is
    compared with ``==`` / ``!=`` in the modules that verify credentials."""
    result = audit()
    assert not result.flagged, "\n".join(result.flagged)
    assert result.files >= 20 and result.comparisons >= 100
    assert result.timing_safe >= 10


def _flags(source: str) -> list[bool]:
    return [secret_comparison(node) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Compare)]


def test_the_timing_audit_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The scan is not vacuous: secret comparisons are flagged, public ones are not."""
    flagged = [
        "ok = signature == expected",
        "if provided.lower() != self._signature: pass",
        "if token_hash == digest: pass",
        "if rest['inviteCode'] != bot.invite_code: pass",
        "if customer.md5 != params.get('key_md5'): pass",
        "if hmac.new(key, msg, sha256).hexdigest() == given: pass",
        "if stored_password == password.encode(): pass",
    ]
    public = [
        "if scheme != 'AWS4-HMAC-SHA256': pass",
        "if name == TRAILER_SIGNATURE: pass",
        "if len(signature) != 64: pass",
        "if caller.via != 'session': pass",
        "if credential.date != amz_date[:8]: pass",
        "if token is None: pass",
        "ok = hmac.compare_digest(signature, expected)",
    ]
    for line in flagged:
        assert _flags(line) == [True], line
    for line in public:
        assert not any(_flags(line)), line
    module = tmp_path / "gateway" / "auth" / "leaky.py"
    module.parent.mkdir(parents=True)
    module.write_text("import hmac\n\n\ndef check(signature, expected):\n"
                      "    return signature == expected or hmac.compare_digest(b'', b'')\n")
    found: Audit = audit(tmp_path, ("gateway/auth/*.py",))
    assert found.files == 1 and found.comparisons == 1 and found.timing_safe == 1
    assert found.flagged == ["gateway/auth/leaky.py:5: return signature == expected or "
                             "hmac.compare_digest(b'', b'')"]
