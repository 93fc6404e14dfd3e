"""The official Anthropic Python SDK against vmx's /v1/messages (passthrough)."""

import anthropic
import pytest

from conftest import PROVIDER_KEY


def client(gateway, **kw):
    # The Anthropic SDK appends /v1/messages to base_url and sends x-api-key.
    return anthropic.Anthropic(base_url=gateway["base"][: -len("/v1")], api_key=gateway["key"], **kw)


CACHED_SYSTEM = [{"type": "text", "text": "You are terse. " * 50, "cache_control": {"type": "ephemeral"}}]
THINKING = {"type": "enabled", "budget_tokens": 1024}


def test_message_passes_anthropic_fields_through(gateway, stubs):
    stubs.clear("anthropic")
    msg = client(gateway).messages.create(
        model="e2e-anthropic/stub-ok",
        max_tokens=2048,
        system=CACHED_SYSTEM,
        thinking=THINKING,
        messages=[{"role": "user", "content": "Say hello"}],
    )
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.model == "e2e-anthropic/stub-ok"
    text = "".join(b.text for b in msg.content if b.type == "text")
    assert "Say hello" in text
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    sent = stubs.requests("anthropic")[-1]
    assert sent["path"] == "/v1/messages"
    assert sent["body"]["system"] == CACHED_SYSTEM, "cache_control reached the provider unchanged"
    assert sent["body"]["thinking"] == THINKING
    assert sent["body"]["model"] == "stub-ok"
    assert sent["headers"]["x-api-key"] == PROVIDER_KEY
    assert sent["headers"]["anthropic-version"] == "2023-06-01"


def test_stream_events_pass_through(gateway, stubs):
    stubs.clear("anthropic")
    with client(gateway).messages.stream(
        model="e2e-anthropic/stub-ok",
        max_tokens=256,
        system=CACHED_SYSTEM,
        messages=[{"role": "user", "content": "Say hello"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "Say hello" in text
    assert final.usage.output_tokens > 0
    assert final.stop_reason == "end_turn"
    assert stubs.requests("anthropic")[-1]["body"]["system"] == CACHED_SYSTEM


def test_tool_use_round_trip(gateway):
    c = client(gateway)
    tools = [{"name": "get_weather", "description": "Weather in a city",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    msgs = [{"role": "user", "content": "Weather in Paris?"}]
    first = c.messages.create(model="e2e-anthropic/stub-tools", max_tokens=256, tools=tools, messages=msgs)
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.input["city"] == "Paris"
    msgs.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]})
    msgs.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21 C"}]})
    second = c.messages.create(model="e2e-anthropic/stub-tools", max_tokens=256, tools=tools, messages=msgs)
    assert "Sunny, 21 C" in "".join(b.text for b in second.content if b.type == "text")


def test_errors_raise_the_sdk_classes(gateway):
    c = client(gateway, max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as e:
        c.messages.create(model="e2e-openai/gpt-4o", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert "anthropic" in e.value.message and "aws-bedrock-invoke" in e.value.message
    with pytest.raises(anthropic.NotFoundError):
        c.messages.create(model="nope/x", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gateway["base"][:-3], api_key="vmx_sk_bad", max_retries=0).messages.create(
            model="e2e-anthropic/stub-ok", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.RateLimitError):
        c.messages.create(model="e2e-anthropic/stub-429", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.APIStatusError) as e:
        c.messages.create(model="e2e-anthropic/stub-echo-key", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert PROVIDER_KEY not in e.value.response.text


def test_broken_stream_raises(gateway):
    with pytest.raises(anthropic.APIError):
        with client(gateway, max_retries=0).messages.stream(
            model="e2e-anthropic/stub-cut", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            for _ in stream:
                pass
