"""Faults of the blob store: the disk fills; the upstream S3 server goes away."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from campaigns._faultkit import (
    KiB,
    MiB,
    Phase,
    SlowUpload,
    TcpProxy,
    answer,
    api_client,
    api_token,
    check_no_internal_errors,
    fill,
    head_status,
    http_status,
    md5,
    outcome,
    presigned,
    staging_files,
    stray_files,
    timed,
    tmpfs,
    until,
    xml_code,
)
from campaigns._gateway import running_gateway, s3_client
from campaigns._report import Report
from tests._server import GatewayProcess, free_port

# -- disk full -----------------------------------------------------------------------------

_INJECTED_ENOSPC = '''\
import errno, os
from storage_backends import _streams

_flag = os.environ["FAULTS_DISK_FULL_FLAG"]
_write = _streams.StagedFile.write


def write(self, data):
    if os.path.exists(_flag):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    _write(self, data)


_streams.StagedFile.write = write
'''


def disk_full(work: Path, report: Report, long: bool) -> None:
    phase = Phase(report, "disk full")
    medium = work / "medium"
    cycles = 4 if long else 1
    with tmpfs(medium, "8m") as refused:
        root = medium / "objects"
        env = {"GATEWAY_BACKEND": f"fs://{root}"}
        flag = work / "full.flag"
        if refused is None:
            report.figure("disk full: medium", "tmpfs of 8 MiB holding the blob store")
        else:
            # No tmpfs here: the backend's own file writes fail with ENOSPC instead.
            inject = work / "inject"
            inject.mkdir(exist_ok=True)
            (inject / "sitecustomize.py").write_text(_INJECTED_ENOSPC)
            env.update(PYTHONPATH=os.pathsep.join(
                [str(inject), *filter(None, [os.environ.get("PYTHONPATH")])]),
                FAULTS_DISK_FULL_FLAG=str(flag))
            report.figure("disk full: medium",
                          f"ENOSPC injected into staging writes (mount refused: {refused})")
        with running_gateway(work / "data", **env) as gw:
            s3 = s3_client(gw)
            api = api_client(gw, api_token(gw.data_dir))
            s3.create_bucket(Bucket="full")
            kept = os.urandom(64 * KiB)
            s3.put_object(Bucket="full", Key="kept", Body=kept)
            for cycle in range(cycles):
                _disk_full_cycle(phase, report, gw, s3, api, root, flag, refused is None,
                                 cycle, kept)
            api.close()
            check_no_internal_errors(report, "disk full", gw)
    phase.close()


def _disk_full_cycle(phase: Phase, report: Report, gw: GatewayProcess, s3: Any,
                     api: httpx.Client, root: Path, flag: Path, mounted: bool, cycle: int,
                     kept: bytes) -> None:
    old = os.urandom(100 * KiB)
    s3.put_object(Bucket="full", Key=f"over-{cycle}", Body=old)
    upload = s3.create_multipart_upload(Bucket="full", Key=f"mp-{cycle}")["UploadId"]
    part1 = os.urandom(256 * KiB)
    s3.upload_part(Bucket="full", Key=f"mp-{cycle}", UploadId=upload, PartNumber=1,
                   Body=part1)
    # Fill it: objects until the gateway refuses one, then a filler for what is left.
    fillers: list[str] = []
    if mounted:
        for n in range(32):
            status, _ = outcome(partial(s3.put_object, Bucket="full", Key=f"fill-{cycle}-{n}",
                                        Body=os.urandom(MiB)))
            if status == 507:
                break
            report.check(status == 200, f"disk full: filling PUT answered {status}")
            fillers.append(f"fill-{cycle}-{n}")
        else:
            report.fail("disk full: 32 MiB went onto an 8 MiB tmpfs without a 507")
        report.add("disk full: objects written to fill the disk", len(fillers))
        fill(root.parent / "filler")
    else:
        flag.touch()
    phase.injected()

    new_key = f"new-{cycle}"
    body = os.urandom(256 * KiB)
    status, response = http_status(lambda: httpx.put(
        presigned(s3, "put_object", "full", new_key), content=body, timeout=30))
    if phase.saw("PutObject", status, [507]) and response is not None:
        report.check(xml_code(response.content) == "InsufficientStorage",
                     f"disk full: PutObject's error code is {xml_code(response.content)!r}")
    phase.saw("HeadObject of the refused key", outcome(
        lambda: s3.head_object(Bucket="full", Key=new_key))[0], [404])
    status, response = http_status(lambda: httpx.put(
        presigned(s3, "put_object", "full", f"over-{cycle}"),
        content=os.urandom(300 * KiB), timeout=30))
    phase.saw("PutObject overwriting", status, [507])
    got = s3.get_object(Bucket="full", Key=f"over-{cycle}")["Body"].read()
    phase.saw("GetObject of the overwritten key", 200, [200])
    report.check(md5(got) == md5(old), "disk full: a refused overwrite changed the object")
    status, response = http_status(lambda: httpx.put(
        presigned(s3, "upload_part", "full", f"mp-{cycle}", UploadId=upload, PartNumber=2),
        content=os.urandom(512 * KiB), timeout=30))
    if phase.saw("UploadPart", status, [507]) and response is not None:
        report.check(xml_code(response.content) == "InsufficientStorage",
                     f"disk full: UploadPart's error code is {xml_code(response.content)!r}")
    parts = s3.list_parts(Bucket="full", Key=f"mp-{cycle}", UploadId=upload).get("Parts", [])
    phase.saw("ListParts", 200, [200])
    report.check([p["PartNumber"] for p in parts] == [1],
                 f"disk full: parts after a refused UploadPart: {parts}")
    response = api.put(f"/buckets/full/objects/json-{cycle}", content=body)
    if phase.saw("JSON API upload", response.status_code, [507]):
        error = response.json().get("error") if response.headers.get(
            "content-type", "").startswith("application/json") else None
        report.check(error == "insufficient_storage",
                     f"disk full: JSON API error body {response.text[:200]!r}")
    phase.saw("JSON API HEAD of the refused key",
              api.head(f"/buckets/full/objects/json-{cycle}").status_code, [404])
    status, _ = outcome(lambda: s3.get_object(Bucket="full", Key="kept")["Body"].read())
    phase.saw("GetObject while full", status, [200])
    leftovers = staging_files(root)
    report.check(not leftovers, f"disk full: staging files left while full: {leftovers}")
    refused_parts = [p for p in stray_files(root / "uploads") if Path(p).name.startswith(
        "00002")]
    report.check(not refused_parts,
                 f"disk full: a refused part left files behind: {refused_parts}")
    report.add("disk full: leftover staging files", len(leftovers) + len(refused_parts))

    # Space returns: the filler goes, and the objects that filled the disk are deleted.
    if mounted:
        (root.parent / "filler").unlink()
        if fillers:
            s3.delete_objects(Bucket="full", Delete={"Objects": [{"Key": k} for k in fillers]})
    else:
        flag.unlink()
    freed = time.monotonic()
    recovered = until(lambda: s3.put_object(Bucket="full", Key=new_key, Body=body)
                      ["ResponseMetadata"]["HTTPStatusCode"] == 200, 30)
    if not report.check(recovered is not None, "disk full: writes did not recover"):
        return
    phase.recovered(time.monotonic() - freed)
    got = s3.get_object(Bucket="full", Key=new_key)["Body"].read()
    report.check(md5(got) == md5(body), "disk full: the object written after recovery differs")
    newer = os.urandom(300 * KiB)
    s3.put_object(Bucket="full", Key=f"over-{cycle}", Body=newer)
    got = s3.get_object(Bucket="full", Key=f"over-{cycle}")["Body"].read()
    report.check(md5(got) == md5(newer), "disk full: an overwrite after recovery differs")
    part2 = os.urandom(512 * KiB)
    s3.upload_part(Bucket="full", Key=f"mp-{cycle}", UploadId=upload, PartNumber=2, Body=part2)
    listed = s3.list_parts(Bucket="full", Key=f"mp-{cycle}", UploadId=upload)["Parts"]
    s3.abort_multipart_upload(Bucket="full", Key=f"mp-{cycle}", UploadId=upload)
    report.check([p["Size"] for p in listed] == [len(part1), len(part2)],
                 f"disk full: parts after recovery: {listed}")
    response = api.put(f"/buckets/full/objects/json-{cycle}", content=body)
    report.check(response.status_code == 200,
                 f"disk full: JSON API upload after recovery answered {response.status_code}")
    got = s3.get_object(Bucket="full", Key="kept")["Body"].read()
    report.check(got == kept, "disk full: an object stored before the fault changed")
    for key in (new_key, f"json-{cycle}", f"over-{cycle}"):
        s3.delete_object(Bucket="full", Key=key)


# -- upstream S3 down --------------------------------------------------------------------------


def upstream_down(work: Path, report: Report, long: bool) -> None:
    from tests._upstreams import MotoServer

    phase = Phase(report, "upstream down")
    cycles = 3 if long else 1
    moto = MotoServer(work / "moto").start()
    proxy = TcpProxy(("127.0.0.1", moto.port), free_port()).start()
    try:
        upstream_bucket = moto.create_bucket()
        env = {"GATEWAY_BACKEND": f"s3://{upstream_bucket}/gw",
               "GATEWAY_S3_ENDPOINT": f"http://127.0.0.1:{proxy.port}",
               "GATEWAY_S3_ACCESS_KEY": moto.access_key,
               "GATEWAY_S3_SECRET_KEY": moto.secret_key}
        with running_gateway(work / "data", **env) as gw:
            s3 = s3_client(gw)
            api = api_client(gw, api_token(gw.data_dir))
            s3.create_bucket(Bucket="upstream")
            kept = os.urandom(256 * KiB)
            s3.put_object(Bucket="upstream", Key="kept", Body=kept)
            for cycle in range(cycles):
                _upstream_cycle(phase, report, gw, s3, api, proxy, cycle, kept)
            api.close()
            check_no_internal_errors(report, "upstream down", gw)
    finally:
        proxy.close()
        moto.stop()
    phase.close()


def _upstream_cycle(phase: Phase, report: Report, gw: GatewayProcess, s3: Any,
                    api: httpx.Client, proxy: TcpProxy, cycle: int, kept: bytes) -> None:
    upload = s3.create_multipart_upload(Bucket="upstream", Key=f"mp-{cycle}")["UploadId"]
    part1 = os.urandom(5 * MiB)
    s3.upload_part(Bucket="upstream", Key=f"mp-{cycle}", UploadId=upload, PartNumber=1, Body=part1)
    # An upload in flight when the upstream goes.
    uploader = SlowUpload(presigned(s3, "put_object", "upstream", f"in-flight-{cycle}"),
                          4 * MiB, after=2).start()
    proxy.cut()
    phase.injected()
    put_url = presigned(s3, "put_object", "upstream", f"refused-{cycle}")
    needs_bytes: dict[str, Callable[[], tuple[int, str]]] = {
        "PutObject": lambda: answer(httpx.put(put_url, content=b"x" * 5000, timeout=60))[:2],
        "GetObject": lambda: outcome(lambda: s3.get_object(Bucket="upstream", Key="kept")
                                     ["Body"].read()),
        "CopyObject": lambda: outcome(lambda: s3.copy_object(
            Bucket="upstream", Key=f"copy-{cycle}",
            CopySource={"Bucket": "upstream", "Key": "kept"})),
        "CreateMultipartUpload": lambda: outcome(lambda: s3.create_multipart_upload(
            Bucket="upstream", Key=f"refused-mp-{cycle}")),
        "UploadPart": lambda: outcome(lambda: s3.upload_part(
            Bucket="upstream", Key=f"mp-{cycle}", UploadId=upload, PartNumber=2, Body=b"z" * 1000)),
        "JSON API upload": lambda: answer(api.put(f"/buckets/upstream/objects/json-{cycle}",
                                                content=b"y" * 1000))[:2],
        "JSON API download": lambda: answer(api.get("/buckets/upstream/objects/kept"))[:2],
    }
    metadata_only: dict[str, Callable[[], tuple[int, str]]] = {
        "HeadObject": lambda: outcome(lambda: s3.head_object(Bucket="upstream", Key="kept")),
        "ListObjectsV2": lambda: outcome(lambda: s3.list_objects_v2(Bucket="upstream")),
        "ListParts": lambda: outcome(lambda: s3.list_parts(Bucket="upstream", Key=f"mp-{cycle}",
                                                           UploadId=upload)),
    }
    slowest = 0.0
    for _ in range(3 if report.long else 1):
        for name, call in needs_bytes.items():
            (status, code), seconds = timed(call)
            if phase.saw(name, status, [503], code) and name == "PutObject":
                report.check(code == "ServiceUnavailable",
                             f"upstream down: PutObject's error code is {code!r}")
            report.check(seconds < 15, f"upstream down: {name} took {seconds:.1f} s")
            slowest = max(slowest, seconds)
        for name, call in metadata_only.items():
            phase.saw(name, call()[0], [200])
        phase.saw("/readyz", httpx.get(gw.url + "/readyz", timeout=30).status_code, [503])
    report.figure("upstream down: slowest refused request seconds", round(slowest, 2))
    phase.saw("PutObject in flight", uploader.join(60), [503, 0])
    proxy.restore()
    restored = time.monotonic()
    recovered = until(lambda: s3.put_object(Bucket="upstream", Key=f"after-{cycle}", Body=b"a")
                      ["ResponseMetadata"]["HTTPStatusCode"] == 200, 60, interval=0.2)
    if not report.check(recovered is not None, "upstream down: writes did not recover"):
        return
    phase.recovered(time.monotonic() - restored)
    got = s3.get_object(Bucket="upstream", Key="kept")["Body"].read()
    report.check(got == kept, "upstream down: an object stored before the outage changed")
    for key in (f"refused-{cycle}", f"in-flight-{cycle}", f"json-{cycle}", f"copy-{cycle}"):
        report.check(head_status(s3, "upstream", key) == 404,
                     f"upstream down: {key} is visible after a refusal")
    part2 = os.urandom(64 * KiB)
    etag2 = s3.upload_part(Bucket="upstream", Key=f"mp-{cycle}", UploadId=upload, PartNumber=2,
                           Body=part2)["ETag"]
    etag1 = next(p["ETag"] for p in s3.list_parts(Bucket="upstream", Key=f"mp-{cycle}",
                                                  UploadId=upload)["Parts"]
                 if p["PartNumber"] == 1)
    s3.complete_multipart_upload(
        Bucket="upstream", Key=f"mp-{cycle}", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag1},
                                   {"PartNumber": 2, "ETag": etag2}]})
    got = s3.get_object(Bucket="upstream", Key=f"mp-{cycle}")["Body"].read()
    report.check(md5(got) == md5(part1 + part2),
                 "upstream down: a multipart upload begun before the outage completed wrong")
    report.check(httpx.get(gw.url + "/readyz").status_code == 200,
                 "upstream down: /readyz not ready after recovery")
    for key in (f"after-{cycle}", f"mp-{cycle}"):
        s3.delete_object(Bucket="upstream", Key=key)
