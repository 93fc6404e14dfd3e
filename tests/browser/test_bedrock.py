"""A Bedrock connection through the console: region list, role ARN, the external id with its
trust policy and CloudFormation command, performance and guardrail settings; validation at
the field; edit and delete."""

import json
import os
import uuid

from conftest import api_json

ROLE = "arn:aws:iam::123456789012:role/vmx-bedrock-console"


def test_bedrock_create_edit_and_delete(console):
    console.watch.allowed_status = {400}
    page = console.goto("/console/connections/new")
    name = f"browser-bedrock-{uuid.uuid4().hex[:6]}"
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Provider").select_option("aws-bedrock")
    page.get_by_label("Region").select_option("eu-west-1")
    external_id = page.get_by_label("External ID").input_value()
    assert external_id.startswith("vmx-") and len(external_id) == 36
    # The trust policy and the deploy command use the external id and the role's name.
    page.get_by_label("IAM role ARN").fill("not-an-arn")
    policy = json.loads(page.get_by_label("Trust policy").inner_text())
    assert policy["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"] == external_id
    assert policy["Statement"][0]["Action"] == "sts:AssumeRole"
    page.get_by_label("Latency (performanceConfig)").select_option("optimized")
    page.get_by_label("Guardrail identifier").fill("abc123guardrail")
    page.get_by_label("Guardrail version").fill("DRAFT")
    page.get_by_label("Model IDs, one per line").fill("anthropic.claude-3-haiku-20240307-v1:0")
    console.shot("connection-create-bedrock")

    # A malformed role ARN: the error is under the role ARN input.
    page.get_by_role("button", name="Create connection").click()
    arn = page.get_by_label("IAM role ARN")
    page.locator(".field", has=arn).locator(".field-error:not([hidden])").wait_for()
    assert arn.get_attribute("aria-invalid") == "true"
    arn.fill(ROLE)
    command = page.get_by_label("CloudFormation command").inner_text()
    assert "aws cloudformation deploy" in command and "--template-file infra/bedrock-iam-role.yaml" in command
    assert "RoleName=vmx-bedrock-console" in command and f"ExternalId={external_id}" in command
    assert "TrustedPrincipalArns=" in command
    page.get_by_role("button", name="Create connection").click()
    page.wait_for_url("**/console/connections/*?created=1")
    conn_id = page.url.split("/connections/")[1].split("?")[0]
    page.get_by_role("heading", name=name).wait_for()
    page.locator("#capacity-live table, #capacity-live p").first.wait_for()
    body = page.inner_text("body")
    assert external_id in body and "eu-west-1" in body and ROLE in body
    _, stored, _ = api_json(console.server, "GET", f"/v1/connections/{conn_id}")
    cfg = stored["config"]
    assert cfg["externalId"] == external_id and cfg["region"] == "eu-west-1"
    assert cfg["performanceConfig"] == {"latency": "optimized"}
    assert cfg["guardrailConfig"]["guardrailIdentifier"] == "abc123guardrail"
    assert cfg["guardrailConfig"]["trace"] == "enabled"
    console.shot("connection-details-bedrock")

    if os.environ.get("AWS_ENDPOINT_URL"):
        # STS is moto's, the runtime the Bedrock stub: the test call succeeds.
        page.get_by_role("button", name="Test connection").click()
        page.locator("#test-result").wait_for()
        assert "ms" in page.locator("#test-result").inner_text()

    # Edit: prefilled; dropping the guardrail and switching latency.
    page.get_by_role("link", name="Edit").click()
    page.wait_for_url(f"**/{conn_id}/edit")
    page.get_by_role("button", name="Save changes").wait_for()
    assert page.get_by_label("Region").input_value() == "eu-west-1"
    assert page.get_by_label("External ID").input_value() == external_id
    assert page.get_by_label("Guardrail identifier").input_value() == "abc123guardrail"
    page.get_by_label("Latency (performanceConfig)").select_option("standard")
    page.get_by_label("Guardrail identifier").fill("")
    page.get_by_label("Guardrail version").fill("")
    page.get_by_role("button", name="Save changes").click()
    page.wait_for_url(f"**/console/connections/{conn_id}")
    page.get_by_role("button", name="Test connection").wait_for()
    _, stored, _ = api_json(console.server, "GET", f"/v1/connections/{conn_id}")
    assert stored["config"]["performanceConfig"] == {"latency": "standard"}
    assert "guardrailConfig" not in stored["config"]
    assert stored["config"]["externalId"] == external_id

    page.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("heading", name=f"Delete {name}?").wait_for()
    page.get_by_role("button", name="Delete connection").click()
    page.wait_for_url("**/console/")
    assert api_json(console.server, "GET", f"/v1/connections/{conn_id}")[0] == 404
    console.settle()
