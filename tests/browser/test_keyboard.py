"""The console with the keyboard alone: Tab reaches every control in order with a visible
focus ring, Enter follows links and presses buttons."""

import uuid

from conftest import api_json, canary_key


def _tab_to(page, predicate_js, limit=80):
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(predicate_js):
            return
    raise AssertionError(f"Tab never reached: {predicate_js}")


def _focus_ring_visible(page):
    return page.evaluate("""() => {
        const s = getComputedStyle(document.activeElement);
        return s.boxShadow !== 'none' || (s.outlineStyle !== 'none' && s.outlineWidth !== '0px');
    }""")


def test_open_edit_and_save_a_connection_with_the_keyboard(console):
    name = f"keyboard-{uuid.uuid4().hex[:6]}"
    status, conn, _ = api_json(console.server, "POST", "/v1/connections", {
        "name": name, "provider": "groq", "config": {"apiKey": canary_key("gsk_")}})
    assert status == 201
    page = console.goto(f"/console/?q={name}")
    page.locator("table tbody tr", has_text=name).wait_for()
    console.settle()
    # The skip link comes first and moves focus to the main content.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    assert _focus_ring_visible(page)
    _tab_to(page, f"document.activeElement.textContent === {name!r}")
    assert _focus_ring_visible(page)
    page.keyboard.press("Enter")
    page.get_by_role("heading", name=name).wait_for()
    console.settle()
    _tab_to(page, "document.activeElement.textContent === 'Edit'")
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Save changes").wait_for()
    _tab_to(page, "document.activeElement.id && document.activeElement.closest('.field')?.querySelector('label')?.textContent === 'Description'")
    page.keyboard.type("typed with the keyboard")
    _tab_to(page, "document.activeElement.textContent === 'Add limit'")
    page.keyboard.press("Enter")
    # The new row's period select has focus; fill its requests.
    assert page.evaluate("document.activeElement.tagName") == "SELECT"
    page.keyboard.press("Tab")
    page.keyboard.type("42")
    _tab_to(page, "document.activeElement.textContent === 'Save changes'")
    assert _focus_ring_visible(page)
    page.keyboard.press("Enter")
    page.get_by_text("typed with the keyboard").wait_for()
    _, stored, _ = api_json(console.server, "GET", f"/v1/connections/{conn['id']}")
    assert stored["description"] == "typed with the keyboard"
    assert stored["capacity"] == [{"period": "minute", "requests": 42, "enabled": True}]
    console.settle()
