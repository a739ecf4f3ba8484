"""Session fixtures: a `tollgate mock` provider and `tollgate gateway`
processes in front of it, all on 127.0.0.1 with ports picked by the OS.

Every process prints exactly one `listening ...` line on stdout once it is
ready; we wait for that line (bounded), then drive the gateway with the
official `openai` and `anthropic` SDKs. Teardown sends SIGTERM and asserts
the gateway drained and exited 0.

`gateway`/`fallback_gateway` front a plain mock (one Mock-type provider);
`formats_gateway` fronts `auth_mock`, which checks every provider format's
credentials, with one route per format (see BACKENDS).
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import textwrap
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import anthropic
import openai
import pytest

REPO = Path(__file__).resolve().parents[2]

def _default_bin() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    if not target.is_absolute():
        target = REPO / target
    return target / "debug" / "tollgate"


API_KEY = "tg-demo-key"
STARTUP_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 30.0
CLIENT_TIMEOUT_S = 30.0
# The main gateway's body limit: small, so a 413 needs no multi-MiB upload.
MAX_BODY_BYTES = 64 * 1024

# Route names as the gateway labels them (namespace/name).
CHAT_ROUTE = "default/chat"
EMBED_ROUTE = "default/embeddings"
MOCK_PROVIDER = "mock"
# The mock's MCP server, passed through at /mcp/{MCP_SERVER}.
MCP_SERVER = "mock-tools"
DEAD_PROVIDER = "dead"


def tollgate_bin() -> Path:
    path = Path(os.environ.get("TOLLGATE_BIN") or _default_bin())
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.exit(
            f"tollgate binary not found at {path}: build it with `cargo build -p tollgate-cli` "
            "or set TOLLGATE_BIN (tests/python/run.sh does this for you)",
            returncode=2,
        )
    return path


@dataclass
class Proc:
    """A tollgate subprocess and the addresses from its `listening` line."""

    name: str
    popen: subprocess.Popen
    addrs: dict[str, str]
    stderr_path: Path
    extra_stdout: list[str] = field(default_factory=list)

    def stderr_tail(self, lines: int = 40) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return "<no stderr>"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> int:
        """SIGTERM, then wait (bounded); SIGKILL as a last resort. Returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)
            raise AssertionError(
                f"{self.name} did not exit within {SHUTDOWN_TIMEOUT_S}s of SIGTERM\n{self.stderr_tail()}"
            )


LISTENING = re.compile(r"^listening((?:\s+\w+=\S+)+)\s*$")


def _read_line(popen: subprocess.Popen, timeout: float) -> str:
    """First stdout line of `popen`, waiting at most `timeout` seconds."""
    assert popen.stdout is not None
    fd = popen.stdout.fileno()
    os.set_blocking(fd, False)
    buf = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no stdout line within {timeout}s (got {buf!r})")
            if not sel.select(timeout=min(remaining, 0.5)):
                if popen.poll() is not None:
                    raise RuntimeError(f"process exited with {popen.returncode} before printing its address")
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"stdout closed before a full line (got {buf!r}); exit={popen.poll()}")
            buf += chunk
    os.set_blocking(fd, True)
    line, _, rest = buf.partition(b"\n")
    if rest.strip():
        raise RuntimeError(f"unexpected extra stdout: {rest!r}")
    return line.decode()


def _drain(proc: Proc) -> None:
    """Keep reading stdout so the child can never block on a full pipe."""
    assert proc.popen.stdout is not None
    for raw in proc.popen.stdout:
        proc.extra_stdout.append(raw.decode(errors="replace").rstrip("\n"))


def start(name: str, args: list[str], workdir: Path) -> Proc:
    workdir.mkdir(parents=True, exist_ok=True)
    stderr_path = workdir / f"{name}.stderr.log"
    stderr = open(stderr_path, "wb")
    # Gateways log Tollgate's own crates at debug: the secrets sweep reads it.
    default_log = "info,tollgate_gateway=debug,tollgate_config=debug,tollgate_llm=debug,tollgate_cli=debug,tollgate=debug"
    env = dict(
        os.environ,
        NO_COLOR="1",
        RUST_LOG=os.environ.get("RUST_LOG", default_log if args[0] == "gateway" else "info"),
    )
    popen = subprocess.Popen(
        [str(tollgate_bin()), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=env,
        cwd=workdir,
    )
    stderr.close()
    proc = Proc(name=name, popen=popen, addrs={}, stderr_path=stderr_path)
    try:
        line = _read_line(popen, STARTUP_TIMEOUT_S)
        match = LISTENING.match(line)
        if not match:
            raise RuntimeError(f"unexpected first stdout line: {line!r}")
        proc.addrs = dict(kv.split("=", 1) for kv in match.group(1).split())
        for url in proc.addrs.values():
            if not re.fullmatch(r"http://127\.0\.0\.1:\d+", url):
                raise RuntimeError(f"{name} is not on loopback: {line!r}")
    except Exception as exc:
        if popen.poll() is None:
            popen.kill()
        popen.wait(timeout=10)
        pytest.fail(f"{name} failed to start: {exc}\n--- stderr ---\n{proc.stderr_tail()}", pytrace=False)
    threading.Thread(target=_drain, args=(proc,), daemon=True).start()
    return proc


def start_gateway_with(name: str, manifest: str, workdir: Path) -> Proc:
    """`tollgate gateway` on loopback with `manifest` as its config, in workdir/name."""
    directory = workdir / name
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "tollgate.yaml"
    config.write_text(manifest)
    return start(
        name,
        ["gateway", "--config", str(config), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
        directory,
    )


# ---------------------------------------------------------------- configs

def gateway_config(mock_url: str, *, fallback: bool = False) -> str:
    """Multi-document manifest. `fallback`: the chat route tries a dead
    provider (priority 0, closed port 1) before the mock (priority 1), and
    a `dead` alias routes to the dead provider alone."""
    head = textwrap.dedent(
        f"""\
        apiVersion: tollgate.dev/v1alpha1
        kind: AIGateway
        metadata: {{name: pytest}}
        spec:
          apiKeys:
          - secretRef: {{name: pytest-keys, key: demo}}
            principal: {{user: demo, team: platform, app: pytest}}
          limits: {{maxRequestBodyBytes: {MAX_BODY_BYTES}}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: pytest-keys}}
        stringData: {{demo: {API_KEY}}}
        ---
        apiVersion: tollgate.dev/v1alpha1
        kind: ModelProvider
        metadata: {{name: {MOCK_PROVIDER}}}
        spec:
          type: Mock
          endpoint: {mock_url}/v1
          models:
          - name: mock-chat
            pricing: {{inputPerMillion: 0.15, outputPerMillion: 0.60}}
          - name: mock-embed
            pricing: {{inputPerMillion: 0.02}}
        """
    )
    if not fallback:
        routes = textwrap.dedent(
            f"""\
            ---
            apiVersion: tollgate.dev/v1alpha1
            kind: AIRoute
            metadata: {{name: chat}}
            spec:
              gatewayRef: {{name: pytest}}
              models: [chat]
              backends: [{{providerRef: {{name: {MOCK_PROVIDER}}}, model: mock-chat}}]
            ---
            apiVersion: tollgate.dev/v1alpha1
            kind: AIRoute
            metadata: {{name: embeddings}}
            spec:
              gatewayRef: {{name: pytest}}
              models: [embed]
              backends: [{{providerRef: {{name: {MOCK_PROVIDER}}}, model: mock-embed}}]
            ---
            apiVersion: tollgate.dev/v1alpha1
            kind: MCPServer
            metadata: {{name: {MCP_SERVER}}}
            spec:
              gatewayRef: {{name: pytest}}
              url: {mock_url}/mcp
            """
        )
    else:
        routes = textwrap.dedent(
            f"""\
            ---
            apiVersion: tollgate.dev/v1alpha1
            kind: ModelProvider
            metadata: {{name: {DEAD_PROVIDER}}}
            spec:
              type: Mock
              endpoint: http://127.0.0.1:1/v1
              timeouts: {{connect: 2s}}
              models:
              - name: mock-chat
            ---
            apiVersion: tollgate.dev/v1alpha1
            kind: AIRoute
            metadata: {{name: chat}}
            spec:
              gatewayRef: {{name: pytest}}
              models: [chat]
              backends:
              - {{providerRef: {{name: {DEAD_PROVIDER}}}, model: mock-chat, priority: 0}}
              - {{providerRef: {{name: {MOCK_PROVIDER}}}, model: mock-chat, priority: 1}}
            ---
            apiVersion: tollgate.dev/v1alpha1
            kind: AIRoute
            metadata: {{name: dead-only}}
            spec:
              gatewayRef: {{name: pytest}}
              models: [dead]
              backends: [{{providerRef: {{name: {DEAD_PROVIDER}}}, model: mock-chat}}]
            """
        )
    return head + routes


@dataclass
class Gateway:
    proc: Proc
    config_path: Path

    @property
    def data_url(self) -> str:
        return self.proc.addrs["data"]

    @property
    def admin_url(self) -> str:
        return self.proc.addrs["admin"]

    def client(self, api_key: str = API_KEY, **kwargs) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.data_url}/v1",
            api_key=api_key,
            max_retries=0,
            timeout=CLIENT_TIMEOUT_S,
            **kwargs,
        )

    def anthropic(self, api_key: str = API_KEY, **kwargs) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            base_url=self.data_url,
            api_key=api_key,
            max_retries=0,
            timeout=CLIENT_TIMEOUT_S,
            **kwargs,
        )


def _start_gateway(name: str, mock: Proc, workdir: Path, *, fallback: bool) -> Gateway:
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "tollgate.yaml"
    config_path.write_text(gateway_config(mock.addrs["data"], fallback=fallback))
    proc = start(
        name,
        [
            "gateway",
            "--config",
            str(config_path),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--drain-timeout-secs",
            "10",
        ],
        workdir,
    )
    assert set(proc.addrs) == {"data", "admin"}, proc.addrs
    return Gateway(proc=proc, config_path=config_path)


# What the secrets sweep reads: gateway logs and these admin responses,
# saved just before each gateway stops. The mocks' logs and the config
# files (which hold the keys by design) are not product output.
ADMIN_PATHS = ("/metrics", "/config", "/readyz", "/healthz", "/v1/usage")
SWEPT_GLOBS = ("gateway*/*.stderr.log", "gateway*/admin-*.txt")


def _save_admin_responses(gw: Gateway) -> None:
    for path in ADMIN_PATHS:
        try:
            with urllib.request.urlopen(gw.admin_url + path, timeout=10) as answer:
                body = answer.read()
        except urllib.error.HTTPError as error:
            body = error.read()
        (gw.config_path.parent / f"admin-{path.strip('/').replace('/', '-')}.txt").write_bytes(body)


def _stop_gateway(gw: Gateway) -> None:
    _save_admin_responses(gw)
    code = gw.proc.stop()
    assert code == 0, f"{gw.proc.name} exited with {code} after SIGTERM\n{gw.proc.stderr_tail()}"


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tollgate")


@pytest.fixture(scope="session", autouse=True)
def secrets_sweep(workdir):
    """After every gateway has stopped (this fixture is set up first, so it
    is torn down last): no credential the suite configured appears in any
    gateway log line (debug level for the gateway's own crates) or admin
    response (metrics, config, health)."""
    yield
    credentials = [API_KEY, *MOCK_KEYS.values(), WRONG_PROVIDER_KEY]
    swept = [f for pattern in SWEPT_GLOBS for f in sorted(workdir.glob(pattern))]
    leaks = [
        f"{f.relative_to(workdir)}: {c[:6]}..."
        for f in swept
        for c in credentials
        if c.encode() in f.read_bytes()
    ]
    logs = [f for f in swept if f.suffix == ".log"]
    assert logs, f"no gateway logs to sweep under {workdir}"
    assert not leaks, f"credentials in gateway output: {leaks}"


@pytest.fixture(scope="session")
def mock(workdir) -> Proc:
    proc = start("mock", ["mock", "--listen", "127.0.0.1:0", "--drain-timeout-secs", "2"], workdir / "mock")
    assert set(proc.addrs) == {"data"}, proc.addrs
    yield proc
    code = proc.stop()
    assert code == 0, f"mock exited with {code} after SIGTERM\n{proc.stderr_tail()}"


@pytest.fixture(scope="session")
def gateway(mock, workdir) -> Gateway:
    gw = _start_gateway("gateway", mock, workdir / "gateway", fallback=False)
    yield gw
    _stop_gateway(gw)


@pytest.fixture(scope="session")
def fallback_gateway(mock, workdir) -> Gateway:
    gw = _start_gateway("gateway-fallback", mock, workdir / "gateway-fallback", fallback=True)
    yield gw
    _stop_gateway(gw)


@pytest.fixture()
def client(gateway) -> openai.OpenAI:
    with gateway.client() as c:
        yield c


class Ledger:
    """Calls made through the main gateway, per route: successes (HTTP 200,
    completed) and failures by the status the client saw, so the metrics
    test can check the counters cover them."""

    def __init__(self) -> None:
        self.ok: dict[str, int] = {}
        self.failed: dict[str, dict[int, int]] = {}

    def success(self, route: str, n: int = 1) -> None:
        self.ok[route] = self.ok.get(route, 0) + n

    def failure(self, route: str, status: int) -> None:
        by_status = self.failed.setdefault(route, {})
        by_status[status] = by_status.get(status, 0) + 1


@pytest.fixture(scope="session")
def ledger() -> Ledger:
    return Ledger()


# ------------------------------------------------- one route per wire format
#
# A second mock, started with every provider's auth flag, so a request the
# gateway signs or authenticates wrongly for a format fails there; and a
# gateway with one route per provider format in front of it. The route
# aliases are the backend names below.

WRONG_PROVIDER_KEY = "not-the-mock-key"
MOCK_KEYS = {
    "openai": "mock-openai-key",
    "anthropic": "mock-anthropic-key",
    "gemini": "mock-gemini-key",
    "azure": "mock-azure-key",
    "aws_id": "AKIDPYTEST",
    "aws_secret": "pytest-secret-access-key",
}

# alias -> (provider type, upstream model). The alias is also the route name.
BACKENDS = {
    "openai": ("OpenAI", "mock-chat"),
    "anthropic": ("Anthropic", "mock-claude"),
    "gemini": ("Gemini", "mock-gemini"),
    "bedrock": ("Bedrock", "mock-bedrock"),
    "azure": ("AzureOpenAI", "mock-chat"),
}


# A route trying the Anthropic-format provider, then the Bedrock one.
FALLBACK_ROUTE = "fallback"


def formats_head() -> str:
    k = MOCK_KEYS
    return textwrap.dedent(
        f"""\
        apiVersion: tollgate.dev/v1alpha1
        kind: AIGateway
        metadata: {{name: formats}}
        spec:
          apiKeys:
          - secretRef: {{name: formats-keys, key: demo}}
            principal: {{user: demo, team: platform, app: pytest-formats}}
          limits: {{maxRequestBodyBytes: {MAX_BODY_BYTES}}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: formats-keys}}
        stringData:
          demo: {API_KEY}
          openai: {k["openai"]}
          anthropic: {k["anthropic"]}
          gemini: {k["gemini"]}
          azure: {k["azure"]}
          awsAccessKeyId: {k["aws_id"]}
          awsSecretAccessKey: {k["aws_secret"]}
          wrong: {WRONG_PROVIDER_KEY}
        """
    )


def formats_backend(alias: str, mock_url: str, *, bad_credentials: bool = False) -> str:
    """The ModelProvider `fmt-<alias>` and the AIRoute `<alias>` -> it; with
    `bad_credentials`, `fmt-<alias>-badcreds` and `<alias>-badcreds`, whose
    provider credentials the mock rejects."""
    provider_type, model = BACKENDS[alias]
    endpoint, extra = {
        "openai": (f"{mock_url}/v1", "credentials: {secretRef: {name: formats-keys, key: openai}}"),
        "anthropic": (f"{mock_url}/v1", "credentials: {secretRef: {name: formats-keys, key: anthropic}}"),
        "gemini": (f"{mock_url}/v1beta", "credentials: {secretRef: {name: formats-keys, key: gemini}}"),
        "bedrock": (
            mock_url,
            "bedrock: {region: us-east-1}\n"
            "credentials:\n"
            "  aws: {secretName: formats-keys, accessKeyIdKey: awsAccessKeyId, "
            "secretAccessKeyKey: awsSecretAccessKey}",
        ),
        "azure": (
            mock_url,
            "azure: {apiVersion: '2024-10-21', auth: ApiKey}\n"
            "credentials: {secretRef: {name: formats-keys, key: azure}}",
        ),
    }[alias]
    if bad_credentials:
        extra = re.sub(r"key: \w+\}", "key: wrong}", extra).replace(
            "secretAccessKeyKey: awsSecretAccessKey", "secretAccessKeyKey: wrong"
        )
        alias = f"{alias}-badcreds"
    extra = textwrap.indent(extra, "  ")
    return (
        "---\n"
        "apiVersion: tollgate.dev/v1alpha1\n"
        "kind: ModelProvider\n"
        f"metadata: {{name: fmt-{alias}}}\n"
        "spec:\n"
        f"  type: {provider_type}\n"
        f"  endpoint: {endpoint}\n"
        "  network: {allowLoopback: true}\n"
        f"{extra}\n"
        "  timeouts: {connect: 2s, request: 30s}\n"
        # The tests inject a provider error per request ([mock status=...])
        # on one shared provider: it must not be ejected for those.
        "  circuitBreaker: {consecutiveFailures: 1000, errorRatePercent: 100, minRequests: 32}\n"
        f"  models: [{{name: {model}}}]\n"
        "---\n"
        "apiVersion: tollgate.dev/v1alpha1\n"
        "kind: AIRoute\n"
        f"metadata: {{name: {alias}}}\n"
        "spec:\n"
        "  gatewayRef: {name: formats}\n"
        f"  models: [{alias}]\n"
        f"  backends: [{{providerRef: {{name: fmt-{alias}}}, model: {model}}}]\n"
    )


@dataclass
class FormatsGateway(Gateway):
    """The gateway with one route per provider format."""


@pytest.fixture(scope="session")
def auth_mock(workdir) -> Proc:
    """`tollgate mock` checking every provider format's credentials."""
    k = MOCK_KEYS
    proc = start(
        "auth-mock",
        [
            "mock", "--listen", "127.0.0.1:0", "--drain-timeout-secs", "2",
            "--openai-key", k["openai"],
            "--anthropic-key", k["anthropic"],
            "--gemini-key", k["gemini"],
            "--azure-key", k["azure"],
            "--bedrock-access-key-id", k["aws_id"],
            "--bedrock-secret-access-key", k["aws_secret"],
        ],
        workdir / "auth-mock",
    )
    assert set(proc.addrs) == {"data"}, proc.addrs
    yield proc
    code = proc.stop()
    assert code == 0, f"auth-mock exited with {code} after SIGTERM\n{proc.stderr_tail()}"


@pytest.fixture(scope="session")
def formats_gateway(auth_mock, workdir) -> FormatsGateway:
    mock_url = auth_mock.addrs["data"]
    gwdir = workdir / "gateway-formats"
    gwdir.mkdir(parents=True, exist_ok=True)
    config = formats_head() + "".join(
        formats_backend(a, mock_url, bad_credentials=bad) for bad in (False, True) for a in BACKENDS
    )
    # Anthropic first, Bedrock if that fails: an Anthropic client's
    # fallback across formats.
    config += textwrap.dedent(
        f"""\
        ---
        apiVersion: tollgate.dev/v1alpha1
        kind: AIRoute
        metadata: {{name: {FALLBACK_ROUTE}}}
        spec:
          gatewayRef: {{name: formats}}
          models: [{FALLBACK_ROUTE}]
          backends:
          - {{providerRef: {{name: fmt-anthropic}}, model: mock-claude, priority: 0}}
          - {{providerRef: {{name: fmt-bedrock}}, model: mock-bedrock, priority: 1}}
        """
    )
    config_path = gwdir / "tollgate.yaml"
    config_path.write_text(config)
    proc = start(
        "gateway-formats",
        [
            "gateway", "--config", str(config_path),
            "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            "--drain-timeout-secs", "10",
        ],
        gwdir,
    )
    assert set(proc.addrs) == {"data", "admin"}, proc.addrs
    gw = FormatsGateway(proc=proc, config_path=config_path)
    yield gw
    _stop_gateway(gw)


def pytest_configure(config):
    config.addinivalue_line("markers", "run_last: run after every other test (reads accumulated metrics)")


def pytest_collection_modifyitems(config, items):
    # Stable sort: tests marked run_last go to the end, order otherwise kept.
    items.sort(key=lambda item: item.get_closest_marker("run_last") is not None)

