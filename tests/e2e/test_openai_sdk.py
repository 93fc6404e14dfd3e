"""The official OpenAI Python SDK against vmx: only base_url and api_key change."""

import time

import openai
import pytest

from conftest import PROVIDER_KEY

PROVIDERS = ["openai", "anthropic", "gemini", "groq", "perplexity"]


def client(gateway, **kw):
    return openai.OpenAI(base_url=gateway["base"], api_key=gateway["key"], **kw)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_chat_completion(gateway, provider):
    r = client(gateway).chat.completions.create(
        model=f"e2e-{provider}/stub-ok",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}],
        max_tokens=50,
    )
    assert "Say hello" in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0
    assert r.model == f"e2e-{provider}/stub-ok"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_streaming_with_usage(gateway, provider):
    stream = client(gateway).chat.completions.create(
        model=f"e2e-{provider}/stub-ok",
        messages=[{"role": "user", "content": "Say hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert "Say hello" in text
    assert usage is not None and usage.total_tokens > 0


def test_streaming_without_usage_sends_none(gateway):
    stream = client(gateway).chat.completions.create(
        model="e2e-openai/stub-ok", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = list(stream)
    assert chunks and all(c.usage is None for c in chunks)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_tool_calls_round_trip(gateway, provider):
    c = client(gateway)
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = c.chat.completions.create(model=f"e2e-{provider}/stub-tools", messages=messages, tools=tools)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert "Paris" in call.function.arguments
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"})
    second = c.chat.completions.create(model=f"e2e-{provider}/stub-tools", messages=messages, tools=tools)
    assert "Sunny, 21 C" in second.choices[0].message.content


def test_models_list(gateway, server):
    status, body = server.admin("PATCH", "/v1/connections/" + _conn_id(server, "e2e-groq"),
                                {"allowedModels": ["llama-3.1-8b-instant"]})
    assert status == 200, body
    ids = [m.id for m in client(gateway).models.list()]
    assert "e2e-groq/llama-3.1-8b-instant" in ids


def _conn_id(server, name):
    status, body = server.admin("GET", "/v1/connections?limit=100")
    assert status == 200
    return next(c["id"] for c in body["data"] if c["name"] == name)


def test_sdk_exceptions_match_statuses(gateway):
    c = client(gateway, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="no-such-connection/x", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="no-slash", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["param"] == "model"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gateway["base"], api_key="vmx_sk_wrong", max_retries=0).chat.completions.create(
            model="e2e-openai/stub-ok", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model="e2e-openai/stub-429", messages=[{"role": "user", "content": "hi"}])
    assert e.value.response.headers["retry-after"] == "7"


def test_capacity_429_is_a_rate_limit_error_with_retry_after(gateway, server):
    # Both requests must fall in one calendar minute (the window of the limit).
    _minute_with_room(10)
    status, conn = server.admin("POST", "/v1/connections", {
        "name": "e2e-tight", "provider": "openai", "config": {"apiKey": PROVIDER_KEY},
        "capacity": [{"period": "minute", "requests": 1}]})
    assert status == 201, conn
    c = client(gateway, max_retries=0)
    ok = c.chat.completions.with_raw_response.create(
        model="e2e-tight/stub-ok", messages=[{"role": "user", "content": "hi"}])
    assert ok.headers["x-ratelimit-limit-requests"] == "1"
    assert ok.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model="e2e-tight/stub-ok", messages=[{"role": "user", "content": "hi"}])
    assert 1 <= int(e.value.response.headers["retry-after"]) <= 60
    err = e.value.body
    assert err["code"] == "capacity_exceeded"
    assert err["message"] == "connection 'e2e-tight' reached its limit of 1 requests per minute"
    assert err["limit"] == {"period": "minute", "metric": "requests", "limit": 1, "scope": "connection"}


def _second_call_rate_limited(gateway, server, api_key, connection, requests_per_minute):
    """Creates `connection` (openai, that many requests a minute), calls it twice with
    `api_key`: the first call passes, the second raises RateLimitError (returned)."""
    status, conn = server.admin("POST", "/v1/connections", {
        "name": connection, "provider": "openai", "config": {"apiKey": PROVIDER_KEY},
        "capacity": [{"period": "minute", "requests": requests_per_minute}]})
    assert status == 201, conn
    c = openai.OpenAI(base_url=gateway["base"], api_key=api_key, max_retries=0)
    c.chat.completions.create(model=f"{connection}/stub-ok", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model=f"{connection}/stub-ok", messages=[{"role": "user", "content": "hi"}])
    return e.value


def test_a_pool_over_its_allocation_is_a_rate_limit_error_naming_the_pool(gateway, server):
    _minute_with_room(10)
    status, key = server.admin("POST", "/v1/api-keys", {"name": "e2e-batch"})
    assert status == 201, key
    status, body = server.admin("PUT", "/v1/prioritization", {"pools": [
        {"name": "batch", "rank": 1, "apiKeys": [key["id"]], "minReservation": 0, "maxReservation": 50}]})
    assert status == 200, body
    try:
        e = _second_call_rate_limited(gateway, server, key["key"], "e2e-pools", requests_per_minute=2)
        assert "prioritization pool 'batch' is allocated 1 requests" in str(e)
        assert e.body["limit"]["pool"] == "batch"
        assert e.body["limit"]["poolAllocation"] == 1
    finally:
        server.admin("PUT", "/v1/prioritization", {"pools": []})


def test_a_key_over_its_own_capacity_is_a_rate_limit_error_naming_the_key(gateway, server):
    _minute_with_room(10)
    status, key = server.admin("POST", "/v1/api-keys", {
        "name": "e2e-key-capacity", "capacity": [{"period": "minute", "requests": 1}]})
    assert status == 201, key
    assert key["capacity"] == [{"period": "minute", "requests": 1, "enabled": True}]
    e = _second_call_rate_limited(gateway, server, key["key"], "e2e-key-cap", requests_per_minute=100)
    assert 1 <= int(e.response.headers["retry-after"]) <= 60
    assert e.body["limit"] == {"period": "minute", "metric": "requests", "limit": 1,
                               "scope": "apiKey", "apiKeyId": key["id"]}
    assert f"API key '{key['id']}' reached its own limit" in str(e)


def test_rejected_provider_credentials_are_not_retried(gateway, stubs):
    stubs.clear("openai")
    c = client(gateway)  # default max_retries=2
    with pytest.raises(openai.APIStatusError) as e:
        c.chat.completions.create(model="e2e-openai/stub-echo-key", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 502
    assert e.value.body["code"] == "provider_credentials_rejected"
    assert PROVIDER_KEY not in str(e.value.body) and "CANARY" not in e.value.response.text
    assert len(stubs.requests("openai")) == 1, "x-should-retry: false stops the SDK retrying"


def test_broken_stream_raises_instead_of_hanging(gateway):
    stream = client(gateway, max_retries=0).chat.completions.create(
        model="e2e-anthropic/stub-cut", messages=[{"role": "user", "content": "hi"}], stream=True)
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


def test_usage_and_discovered_limits_are_visible(gateway, server):
    client(gateway).chat.completions.create(
        model="e2e-groq/llama-3.1-8b-instant", messages=[{"role": "user", "content": "hi"}])
    cid = _conn_id(server, "e2e-groq")
    # The local server accounts off the response path: poll briefly.
    usage = _eventually(lambda: server.admin("GET", f"/v1/connections/{cid}/usage")[1],
                        lambda u: sum(b["requests"] for b in u["data"]) >= 1)
    assert usage["granularity"] == "hour"
    conn = _eventually(lambda: server.admin("GET", f"/v1/connections/{cid}")[1],
                       lambda c: "llama-3.1-8b-instant" in c["discoveredCapacity"]["models"])
    limits = conn["discoveredCapacity"]["models"]["llama-3.1-8b-instant"]["capacity"]
    assert {l["metric"]: l["period"] for l in limits} == {"requests": "day", "tokens": "minute"}


def _minute_with_room(seconds):
    """Returns once at least `seconds` of the current UTC minute are left (waits at most that
    long): a minute window that rolls over between two requests would reset the count."""
    while 60 - time.time() % 60 < seconds:
        time.sleep(0.1)


def _eventually(fetch, ok, timeout=10.0):
    deadline = time.time() + timeout
    while True:
        value = fetch()
        if ok(value) or time.time() > deadline:
            assert ok(value), value
            return value
        time.sleep(0.05)


def test_the_provider_key_never_reaches_a_log_or_response(gateway, server):
    # Runs last in this module (pytest keeps file order): everything above went through.
    for model in ["stub-ok", "stub-echo-key", "stub-401", "stub-500"]:
        try:
            client(gateway, max_retries=0).chat.completions.create(
                model=f"e2e-openai/{model}", messages=[{"role": "user", "content": "hi"}])
        except openai.APIError:
            pass
    status, listed = server.admin("GET", "/v1/connections?limit=100")
    assert PROVIDER_KEY not in str(listed)
    log = server.log()
    assert "request" in log, "the log was captured"
    assert PROVIDER_KEY not in log and "CANARY" not in log
