"""End-to-end harness: the real `vmx` binary on 127.0.0.1 in front of `vmx-stub` (stub
providers speaking each provider's wire format), driven by the official SDKs.

Both binaries are built by scripts/test.sh before pytest runs; VMX_BIN_DIR points at them.
Every process started here is stopped here, by PID.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

ADMIN_TOKEN = "e2e-admin-token-5b8c1f-0123456789abcdef"
PROVIDER_KEY = "sk-CANARY-e2e-provider-3f9a7c"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bin(name):
    path = os.path.join(os.environ.get("VMX_BIN_DIR", "target/debug"), name)
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: run scripts/test.sh, which builds it")
    return path


class Server:
    def __init__(self, base, log_path):
        self.base = base
        self.log_path = log_path

    def admin(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                text = resp.read().decode()
                return resp.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read().decode() or "null")

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()


class Stubs:
    def __init__(self, urls):
        self.urls = urls

    def requests(self, provider):
        with urllib.request.urlopen(f"{self.urls['control']}/requests/{provider}", timeout=10) as r:
            return json.loads(r.read().decode())

    def clear(self, provider):
        req = urllib.request.Request(f"{self.urls['control']}/requests/{provider}", method="DELETE")
        urllib.request.urlopen(req, timeout=10).close()


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def stubs():
    proc = subprocess.Popen([_bin("vmx-stub")], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        yield Stubs(json.loads(line))
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def bedrock_stub():
    """The Bedrock runtime stub; STS comes from moto (scripts/test.sh sets AWS_ENDPOINT_URL)."""
    proc = subprocess.Popen([_bin("vmx-bedrock-stub")], stdout=subprocess.PIPE, text=True)
    try:
        yield json.loads(proc.stdout.readline())
    finally:
        _stop(proc)


@contextlib.contextmanager
def start_vmx(stubs, bedrock_stub, extra_env=None):
    """Runs `vmx` on a free loopback port in front of the stubs; yields a Server. Also used
    by tests/browser."""
    tmp = tempfile.mkdtemp(prefix="vmx-e2e-")
    port = _free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "VMX_LISTEN": f"127.0.0.1:{port}",
        "VMX_DATA_DIR": os.path.join(tmp, "data"),
        "VMX_ADMIN_TOKEN": ADMIN_TOKEN,
        "VMX_LOG": "debug",
        "VMX_PROVIDER_TIMEOUT_SECS": "3",
        "VMX_PROVIDER_STREAM_IDLE_SECS": "3",
        "VMX_OPENAI_BASE_URL": stubs.urls["openai"],
        "VMX_ANTHROPIC_BASE_URL": stubs.urls["anthropic"],
        "VMX_GEMINI_BASE_URL": stubs.urls["gemini"],
        "VMX_GROQ_BASE_URL": stubs.urls["groq"],
        "VMX_PERPLEXITY_BASE_URL": stubs.urls["perplexity"],
        # Bedrock: the runtime stub, and STS from moto when the test script started it.
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": bedrock_stub["bedrock"],
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    if os.environ.get("AWS_ENDPOINT_URL"):
        env["AWS_ENDPOINT_URL_STS"] = os.environ["AWS_ENDPOINT_URL"]
    env.update(extra_env or {})
    log_path = os.path.join(tmp, "vmx.log")
    log = open(log_path, "w")
    proc = subprocess.Popen([_bin("vmx")], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    pytest.fail("vmx did not start:\n" + open(log_path).read())
                time.sleep(0.05)
        yield Server(base, log_path)
    finally:
        _stop(proc)
        log.close()


@pytest.fixture(scope="session")
def server(stubs, bedrock_stub):
    with start_vmx(stubs, bedrock_stub) as s:
        yield s


@pytest.fixture(scope="session")
def gateway(server):
    """Connections for every API-key provider and a gateway API key."""
    for provider in ["openai", "anthropic", "gemini", "groq", "perplexity"]:
        status, body = server.admin("POST", "/v1/connections", {
            "name": f"e2e-{provider}",
            "provider": provider,
            "config": {"apiKey": PROVIDER_KEY},
            "capacity": [{"period": "minute", "requests": 1000, "tokens": 10_000_000}],
        })
        assert status == 201, body
    status, key = server.admin("POST", "/v1/api-keys", {"name": "e2e"})
    assert status == 201, key
    return {"base": server.base + "/v1", "key": key["key"]}
