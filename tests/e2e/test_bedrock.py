"""Bedrock through vmx: aws-bedrock (Converse) with the OpenAI SDK, aws-bedrock-invoke with
the Anthropic SDK (Messages passthrough) and the OpenAI SDK. STS is moto's; the Bedrock
runtime is the event-stream stub."""

import json
import os
import urllib.request

import anthropic
import openai
import pytest

pytestmark = pytest.mark.skipif(
    not os.environ.get("AWS_ENDPOINT_URL"), reason="needs moto for STS: run scripts/test.sh"
)

ROLE = "arn:aws:iam::123456789012:role/vmx-bedrock-e2e"


def _recorded(bedrock_stub):
    with urllib.request.urlopen(bedrock_stub["requests"], timeout=10) as r:
        return json.loads(r.read().decode())


@pytest.fixture(scope="module")
def bedrock(server, gateway):
    for name, provider in [("e2e-converse", "aws-bedrock"), ("e2e-invoke", "aws-bedrock-invoke")]:
        status, body = server.admin("POST", "/v1/connections", {
            "name": name, "provider": provider,
            "config": {"region": "us-east-1", "iamRoleArn": ROLE,
                       "performanceConfig": {"latency": "optimized"},
                       "guardrailConfig": {"guardrailIdentifier": "abc123", "guardrailVersion": "1"}},
        })
        assert status == 201, body
        assert body["config"]["externalId"].startswith("vmx-")
    return gateway


def test_converse_through_the_openai_sdk(bedrock, bedrock_stub):
    c = openai.OpenAI(base_url=bedrock["base"], api_key=bedrock["key"])
    r = c.chat.completions.create(
        model="e2e-converse/anthropic.claude-3-haiku-20240307-v1:0",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}],
        max_tokens=64,
    )
    assert r.choices[0].message.content
    assert r.usage.total_tokens > 0
    sent = [x for x in _recorded(bedrock_stub) if x.get("operation") == "converse"][-1]
    assert sent["body"]["performanceConfig"] == {"latency": "optimized"}
    assert sent["body"]["guardrailConfig"]["guardrailIdentifier"] == "abc123"
    stream = c.chat.completions.create(
        model="e2e-converse/anthropic.claude-3-haiku-20240307-v1:0",
        messages=[{"role": "user", "content": "Say hello"}],
        stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert chunks[-1].usage.total_tokens > 0


def test_invoke_passthrough_keeps_anthropic_fields(bedrock, bedrock_stub):
    c = anthropic.Anthropic(base_url=bedrock["base"][: -len("/v1")], api_key=bedrock["key"])
    system = [{"type": "text", "text": "Long cached context. " * 30, "cache_control": {"type": "ephemeral"}}]
    thinking = {"type": "enabled", "budget_tokens": 1024}
    msg = c.messages.create(
        model="e2e-invoke/anthropic.claude-sonnet-4-5-20250929-v1:0",
        max_tokens=2048, system=system, thinking=thinking,
        messages=[{"role": "user", "content": "Say hello"}],
    )
    assert msg.type == "message" and msg.usage.output_tokens > 0
    sent = [x for x in _recorded(bedrock_stub) if x.get("operation") == "invoke"][-1]
    assert sent["body"]["system"] == system, "cache_control reached Bedrock unchanged"
    assert sent["body"]["thinking"] == thinking
    assert sent["body"]["anthropic_version"] == "bedrock-2023-05-31"
    assert "model" not in sent["body"]
    with c.messages.stream(
        model="e2e-invoke/anthropic.claude-sonnet-4-5-20250929-v1:0",
        max_tokens=256, system=system, messages=[{"role": "user", "content": "Say hello"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.usage.output_tokens > 0
    sent = [x for x in _recorded(bedrock_stub) if x.get("operation") == "invoke-with-response-stream"][-1]
    assert sent["body"]["system"] == system


def test_invoke_also_serves_chat_completions(bedrock):
    c = openai.OpenAI(base_url=bedrock["base"], api_key=bedrock["key"])
    r = c.chat.completions.create(
        model="e2e-invoke/anthropic.claude-sonnet-4-5-20250929-v1:0",
        messages=[{"role": "user", "content": "Say hello"}], max_tokens=64)
    assert r.choices[0].message.content and r.usage.total_tokens > 0


def test_test_connection_assumes_the_role(bedrock, server):
    status, listed = server.admin("GET", "/v1/connections?limit=100")
    cid = next(c["id"] for c in listed["data"] if c["name"] == "e2e-converse")
    status, body = server.admin("POST", f"/v1/connections/{cid}/test",
                                {"model": "anthropic.claude-3-haiku-20240307-v1:0"})
    assert status == 200 and body["ok"] is True, body
