"""S3 semantics against a dict model, driven by Hypothesis through the real HTTP API."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from tests._server import GatewayProcess
from tests.conftest import make_client

# A small key space, so that overwrites, prefixes and delimiters collide often.
KEYS = st.sampled_from(["a", "a/b", "a/b/c", "a/c", "ab", "b/", "b/x", "é/ü", "sp ace",
                        "a+b", "%41", "..", "z" * 300, "dir//x"])
BODIES = st.binary(max_size=3000)
PREFIXES = st.sampled_from(["", "a", "a/", "b", "é", "z", "q"])
DELIMITERS = st.sampled_from(["", "/", "b"])


def utf8_sorted(keys: Any) -> list[str]:
    return sorted(keys, key=lambda k: k.encode())


class S3Model(RuleBasedStateMachine):
    server: GatewayProcess

    def __init__(self) -> None:
        super().__init__()
        self.s3 = make_client(self.server)
        self.model: dict[str, bytes] = {}
        self.bucket = ""

    @initialize()
    def create_bucket(self) -> None:
        self.bucket = f"sm-{uuid.uuid4().hex[:16]}"
        self.s3.create_bucket(Bucket=self.bucket)

    @rule(key=KEYS, body=BODIES)
    def put(self, key: str, body: bytes) -> None:
        r = self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        assert r["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
        self.model[key] = body

    @rule(key=KEYS, body=BODIES)
    def put_if_absent(self, key: str, body: bytes) -> None:
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "PreconditionFailed"
            assert key in self.model
            return
        assert key not in self.model
        self.model[key] = body

    @rule(src=KEYS, dst=KEYS)
    def copy(self, src: str, dst: str) -> None:
        source = {"Bucket": self.bucket, "Key": src}
        kwargs: dict[str, Any] = {"MetadataDirective": "REPLACE"} if src == dst else {}
        try:
            self.s3.copy_object(Bucket=self.bucket, Key=dst, CopySource=source, **kwargs)
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "NoSuchKey"
            assert src not in self.model
            return
        self.model[dst] = self.model[src]

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=key)
        self.model.pop(key, None)

    @rule(keys=st.lists(KEYS, min_size=1, max_size=5, unique=True))
    def delete_many(self, keys: list[str]) -> None:
        r = self.s3.delete_objects(Bucket=self.bucket,
                                   Delete={"Objects": [{"Key": k} for k in keys]})
        assert sorted(d["Key"] for d in r.get("Deleted", [])) == sorted(keys)
        for k in keys:
            self.model.pop(k, None)

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "NoSuchKey"
            assert key not in self.model
            return
        assert body == self.model[key]

    @rule(prefix=PREFIXES, delimiter=DELIMITERS, page=st.integers(1, 4))
    def list_v2(self, prefix: str, delimiter: str, page: int) -> None:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": page}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        keys: list[str] = []
        prefixes: list[str] = []
        while True:
            r = self.s3.list_objects_v2(**kwargs)
            keys += [o["Key"] for o in r.get("Contents", [])]
            prefixes += [p["Prefix"] for p in r.get("CommonPrefixes", [])]
            assert r["KeyCount"] <= page
            if not r["IsTruncated"]:
                break
            kwargs["ContinuationToken"] = r["NextContinuationToken"]
        want_keys, want_prefixes = [], set()
        for k in utf8_sorted(self.model):
            if not k.startswith(prefix):
                continue
            rest = k[len(prefix):]
            if delimiter and delimiter in rest:
                want_prefixes.add(prefix + rest[: rest.index(delimiter) + len(delimiter)])
            else:
                want_keys.append(k)
        assert keys == want_keys
        assert prefixes == utf8_sorted(want_prefixes)

    @invariant()
    def sizes_match(self) -> None:
        if not self.bucket:
            return
        listed = {o["Key"]: o["Size"] for o in
                  self.s3.list_objects_v2(Bucket=self.bucket).get("Contents", [])}
        assert listed == {k: len(v) for k, v in self.model.items()}

    def teardown(self) -> None:
        if self.bucket:
            for k in list(self.model):
                self.s3.delete_object(Bucket=self.bucket, Key=k)
            self.s3.delete_bucket(Bucket=self.bucket)


@pytest.fixture
def machine(gateway: GatewayProcess) -> type[S3Model]:
    S3Model.server = gateway
    return S3Model


def test_s3_semantics_match_model(machine: type[S3Model]) -> None:
    run_state_machine_as_test(machine, settings=settings(
        max_examples=15, stateful_step_count=25, deadline=None,
        suppress_health_check=[HealthCheck.too_slow]))
