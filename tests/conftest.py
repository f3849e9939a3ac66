from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests import _postgres as postgres
from tests._buckets import remove_bucket
from tests._server import GatewayProcess
from tests._upstreams import UPSTREAM_KINDS, Upstream, backend_env, make_upstream, unique_bucket

#: Where a gateway under test keeps its blobs: ``fs`` (its data dir), or an upstream S3
#: server of one of ``UPSTREAM_KINDS`` (moto, or a second gateway on ``fs``).
BACKEND_KINDS = ("fs", *UPSTREAM_KINDS, "postgresql")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--upstreams", default=",".join(BACKEND_KINDS),
        help="comma-separated backends that modules marked 'upstreams' (and the backend "
             f"contract suite's s3 harnesses) run against; default: {','.join(BACKEND_KINDS)}")


def selected_kinds(config: pytest.Config) -> list[str]:
    chosen = [k.strip() for k in str(config.getoption("--upstreams")).split(",") if k.strip()]
    unknown = set(chosen) - set(BACKEND_KINDS)
    if unknown:
        raise pytest.UsageError(f"--upstreams: unknown {sorted(unknown)}; use {BACKEND_KINDS}")
    return [k for k in BACKEND_KINDS if k in chosen]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Modules marked ``upstreams`` run once per backend kind of the gateway under test
    (``pytest.mark.upstreams("fs", "s3-moto")`` narrows that); the others only on ``fs``
    and never start an upstream."""
    marker = metafunc.definition.get_closest_marker("upstreams")
    if marker is None or "upstream" not in metafunc.fixturenames:
        return
    kinds = [k for k in selected_kinds(metafunc.config) if not marker.args or k in marker.args]
    metafunc.parametrize("upstream", kinds, indirect=True, scope="module")


class UpstreamPool:
    """Upstream S3 servers and gateways, started the first time a test asks for them and
    stopped at the end of the session."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self._tmp = tmp
        self._upstreams: dict[str, Upstream] = {}
        self._gateways: dict[str, GatewayProcess] = {}
        self._databases: list[str] = []

    def upstream(self, kind: str) -> Upstream:
        if kind not in self._upstreams:
            self._upstreams[kind] = make_upstream(kind, self._tmp.mktemp(kind)).start()
        return self._upstreams[kind]

    def gateway(self, kind: str) -> GatewayProcess:
        """The gateway under test whose blobs live on ``kind`` (``postgresql``: the local
        filesystem, with its metadata on PostgreSQL instead of SQLite)."""
        if kind not in self._gateways:
            env: dict[str, str] = {}
            if kind == "postgresql":
                reason = postgres.unreachable()
                if reason is not None:
                    pytest.skip(reason)
                env["GATEWAY_DATABASE_URL"] = postgres.create_database()
                self._databases.append(env["GATEWAY_DATABASE_URL"])
            elif kind != "fs":
                upstream = self.upstream(kind)
                env = backend_env(upstream, upstream.create_bucket(unique_bucket("gw")), "gw")
            data = self._tmp.mktemp("gateway" if kind == "fs" else f"gateway-{kind}") / "data"
            self._gateways[kind] = GatewayProcess(data, env_extra=env).start()
        return self._gateways[kind]

    def close(self) -> None:
        for server in self._gateways.values():
            server.stop()
        for upstream in self._upstreams.values():
            upstream.stop()
        for url in self._databases:
            postgres.drop_database(url)


@pytest.fixture(scope="session")
def upstream_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamPool]:
    pool = UpstreamPool(tmp_path_factory)
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def upstream(request: pytest.FixtureRequest) -> str:
    """The backend kind of the gateway under test: ``fs`` unless the module is marked
    ``upstreams`` (see ``pytest_generate_tests``)."""
    return str(getattr(request, "param", "fs"))


@pytest.fixture(scope="session")
def gateway(upstream: str, upstream_pool: UpstreamPool) -> GatewayProcess:
    """One real gateway process (SQLite + its blobs on ``upstream``) per backend kind for
    the session: the local filesystem, or an upstream S3 server."""
    return upstream_pool.gateway(upstream)


@pytest.fixture
def fs_only(upstream: str) -> None:
    """For tests that look at the gateway's data directory for its blobs."""
    if upstream != "fs":
        pytest.skip(f"inspects blob files under the data dir; on {upstream} they live upstream")


def make_client(server: GatewayProcess, **kwargs: Any) -> Any:
    """boto3 with its default configuration, pointed at the gateway."""
    return boto3.client(
        "s3",
        endpoint_url=server.url,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
        **kwargs,
    )


@pytest.fixture(scope="session")
def s3(gateway: GatewayProcess) -> Any:
    return make_client(gateway)


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:20]}"
    s3.create_bucket(Bucket=name)
    yield name
    remove_bucket(s3, name)  # so tests stay independent


@pytest.fixture
def data_path(gateway: GatewayProcess) -> Path:
    return gateway.data_dir


AWS_CLI = Path(sys.executable).parent / "aws"


@pytest.fixture
def aws(gateway: GatewayProcess, tmp_path: Path) -> Any:
    """Run aws-cli against the gateway with its default settings (empty config files)."""
    config = tmp_path / "aws-config"
    credentials = tmp_path / "aws-credentials"
    config.write_text("")
    credentials.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({
        "AWS_ACCESS_KEY_ID": gateway.access_key,
        "AWS_SECRET_ACCESS_KEY": gateway.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        "AWS_PAGER": "",
    })

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(AWS_CLI), "--endpoint-url", gateway.url, *args],
            env=env, capture_output=True, text=True, timeout=300, check=False)
        if check:
            assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    return run


# -- the order modules run in ----------------------------------------------------------------


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """Modules with a ``slow`` test first, then the others by their number of tests, most
    first; a module's tests stay together and in order. Under ``--dist loadfile
    --no-loadscope-reorder`` (``make test``) pytest-xdist hands modules out in this order,
    so the minute-long campaigns start early instead of running alone at the end while
    the other workers idle."""
    count: dict[str, int] = {}
    slow: set[str] = set()
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        count[module] = count.get(module, 0) + 1
        if item.get_closest_marker("slow") is not None:
            slow.add(module)

    def weight(item: pytest.Item) -> tuple[bool, int]:
        module = item.nodeid.split("::", 1)[0]
        return module not in slow, -count[module]

    items.sort(key=weight)


# -- no secret in any gateway log ------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After the whole run, every log a gateway under test wrote (``gateway-<port>.log``
    beside its data dir, below the session's base temporary directory) is searched for
    secrets: the root secret key, signatures, bearer and API tokens (tests/_secret_scan.py).
    Any hit is shown masked and fails the session. Under pytest-xdist the controller does
    it once, after every worker has finished: the workers' base directories are inside
    its own."""
    if hasattr(session.config, "workerinput"):
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None:
        return
    from tests._secret_scan import gateway_logs, scan

    found = scan(gateway_logs(factory.getbasetemp()))
    if not found.hits:
        return
    lines = [f"SECRETS IN GATEWAY LOGS: {len(found.hits)} in {found.lines:,} lines of "
             f"{found.files} logs", *(f"  {hit}" for hit in found.hits[:50])]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for line in lines:
        if reporter is not None:
            reporter.write_line(line, red=True)
        else:
            print(line, file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
