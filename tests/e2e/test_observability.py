"""Operations through the official OpenAI SDK: request ids round trip (`_request_id`,
`with_raw_response`, error bodies, the log line), and `GET /metrics` parsed with
prometheus_client's OpenMetrics parser after known traffic."""

import urllib.request
import uuid

import openai
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from conftest import ADMIN_TOKEN, PROVIDER_KEY


def client(gateway, **kw):
    return openai.OpenAI(base_url=gateway["base"], api_key=gateway["key"], max_retries=0, **kw)


def test_request_id_round_trips_through_the_sdk(gateway, server):
    c = client(gateway)
    mine = f"e2e-{uuid.uuid4().hex}"
    raw = c.chat.completions.with_raw_response.create(
        model="e2e-openai/stub-ok",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-request-id": mine},
    )
    assert raw.headers["x-request-id"] == mine
    assert raw.parse()._request_id == mine

    # Without one, vmx makes one; the SDK exposes it.
    made = c.chat.completions.create(model="e2e-openai/stub-ok", messages=[{"role": "user", "content": "hi"}])
    assert made._request_id and made._request_id.startswith("req_")

    # On an error, the SDK's exception carries it and so does the body.
    failed = f"e2e-{uuid.uuid4().hex}"
    with pytest.raises(openai.APIStatusError) as e:
        c.chat.completions.create(
            model="e2e-openai/stub-500",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-request-id": failed},
        )
    assert e.value.request_id == failed
    body = e.value.body if isinstance(e.value.body, dict) else {}
    assert body.get("request_id", body.get("error", {}).get("request_id")) == failed

    # Both ids are in the server's request and inference log lines; the inference line also
    # has the provider's own request id (the stub sends `x-request-id: stub-req-1`).
    log = server.log()
    for rid in (mine, failed):
        lines = [l for l in log.splitlines() if rid in l]
        assert any('"request"' in l or " request" in l for l in lines), lines
        inference = [l for l in lines if "inference" in l]
        assert inference and all("stub-req-1" in l for l in inference), lines


def _samples(base):
    req = urllib.request.Request(base + "/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["content-type"].startswith("application/openmetrics-text")
        text = r.read().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def _sum(samples, name, **labels):
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_count_the_requests_sent_by_class(gateway, server):
    name = f"e2e-metrics-{uuid.uuid4().hex[:8]}"
    status, conn = server.admin("POST", "/v1/connections", {
        "name": name, "provider": "openai", "config": {"apiKey": PROVIDER_KEY},
        "capacity": [{"period": "lifetime", "requests": 4}],
    })
    assert status == 201, conn
    c = client(gateway)
    msg = [{"role": "user", "content": "hi"}]
    for _ in range(2):
        c.chat.completions.create(model=f"{name}/stub-ok", messages=msg)
    with pytest.raises(openai.InternalServerError):
        c.chat.completions.create(model=f"{name}/stub-500", messages=msg)
    with pytest.raises(openai.RateLimitError):
        c.chat.completions.create(model=f"{name}/stub-429", messages=msg)
    # The provider's failures were refunded: two more fit, the third does not.
    for _ in range(2):
        c.chat.completions.create(model=f"{name}/stub-ok", messages=msg)
    with pytest.raises(openai.RateLimitError):
        c.chat.completions.create(model=f"{name}/stub-ok", messages=msg)

    s = _samples(server.base)
    cid = conn["id"]
    # prometheus_client reports counters by their sample name (`vmx_requests_total`).
    assert _sum(s, "vmx_requests_total", connection=cid) == 7
    assert _sum(s, "vmx_requests_total", connection=cid, model="stub-ok", provider="openai") == 5
    assert _sum(s, "vmx_errors_total", connection=cid, error_class="upstream") == 1
    assert _sum(s, "vmx_errors_total", connection=cid, error_class="rate_limited") == 1
    assert _sum(s, "vmx_errors_total", connection=cid, error_class="capacity_exceeded") == 1
    assert _sum(s, "vmx_throttled_total", connection=cid, limit_kind="provider") == 1
    assert _sum(s, "vmx_throttled_total", connection=cid, limit_kind="requests_lifetime") == 1
    assert _sum(s, "vmx_latency_ms_count", connection=cid) == 7
    assert _sum(s, "vmx_utilization_percent", connection=cid) == 100.0
