"""Quick add: several keys at once, providers recognised by prefix, an unknown one asked for,
each key checked before saving, saving a failed one anyway, a result per key."""

import uuid

from conftest import CANARY, api_json, canary_key


def test_quick_add_a_batch_of_keys(console):
    page = console.goto("/console/quick-add")
    tag = uuid.uuid4().hex[:4]
    keys = [
        canary_key("sk-ant-", f"-{tag}a"),
        canary_key("gsk_", f"-{tag}b"),
        # Unknown form, and the stubs reject keys starting with "invalid".
        f"invalid-{CANARY}-{tag}c",
    ]
    page.get_by_label("API keys, one per line").fill("\n".join(keys) + "\n\n")
    page.get_by_label("Requests per minute").fill("30")
    page.get_by_role("button", name="Check keys").click()

    rows = page.locator("li.qa-row")
    rows.first.wait_for()
    assert rows.count() == 3
    assert rows.nth(0).get_by_label("Provider").input_value() == "anthropic"
    assert rows.nth(1).get_by_label("Provider").input_value() == "groq"
    assert rows.nth(2).get_by_label("Provider").input_value() == ""
    assert "Not recognised" in rows.nth(2).inner_text()
    names = [rows.nth(i).get_by_label("Name", exact=True).input_value() for i in range(3)]
    assert names[0].startswith("anthropic-") and names[1].startswith("groq-")
    # Each recognised key is checked with the provider; result and latency show.
    for i in range(2):
        rows.nth(i).locator(".qa-result .ok").wait_for()
        assert " ms" in rows.nth(i).locator(".qa-result").inner_text()
    # The unknown one: choose OpenAI; the stub rejects it; save it anyway.
    rows.nth(2).get_by_label("Provider").select_option("openai")
    rows.nth(2).locator(".qa-result .bad").wait_for()
    assert "credentials_rejected" in rows.nth(2).locator(".qa-result").inner_text()
    assert not rows.nth(2).get_by_label("Save anyway").is_checked()
    rows.nth(2).get_by_label("Name", exact=True).fill(f"quick-rejected-{tag}")
    rows.nth(2).get_by_label("Save anyway").check()
    # A name that cannot be used fails only that key.
    rows.nth(1).get_by_label("Name", exact=True).fill("bad/name")
    console.watch.allowed_status = {400}
    assert CANARY not in page.content()
    page.get_by_role("button", name="Save connections").click()
    summary = page.locator(".form-status .alert")
    summary.wait_for()
    assert "2 created, 1 failed" in summary.inner_text()
    assert "Created" in rows.nth(0).locator(".qa-outcome").inner_text()
    assert "Failed" in rows.nth(1).locator(".qa-outcome").inner_text()
    assert "Created" in rows.nth(2).locator(".qa-outcome").inner_text()
    console.shot("quick-add-results")
    # Fix the failed one and save again.
    rows.nth(1).get_by_label("Name", exact=True).fill(f"quick-groq-{tag}")
    page.get_by_role("button", name="Save connections").click()
    page.locator(".form-status .alert", has_text="1 created").wait_for()
    assert CANARY not in page.content()

    by_name = {}
    for n in [f"quick-groq-{tag}", f"quick-rejected-{tag}", names[0]]:
        _, listed, _ = api_json(console.server, "GET", f"/v1/connections?limit=100&q={n}")
        by_name.update({c["name"]: c for c in listed["data"]})
    assert by_name[f"quick-groq-{tag}"]["provider"] == "groq"
    assert by_name[f"quick-rejected-{tag}"]["provider"] == "openai"
    assert by_name[names[0]]["provider"] == "anthropic"
    cap = by_name[names[0]]["capacity"]
    assert cap == [{"period": "minute", "requests": 30, "tokens": 100000, "enabled": True}]
    console.settle()
