// Gateway API keys: list, create (connections it may use, expiry; the secret is shown once
// with a Copy button and forgotten when dismissed), revoke. A key's connections come back as
// ids (resolved when the key was created); the list shows their names, and the key's own
// limits (its `capacity`, set through the API, applied per connection).

import * as api from "./api.js";
import { h, field, replace, loading, errorBox, fmtDate, fmtAgo, fmtCompact, confirmDialog, clearFieldErrors, uid } from "./dom.js";
import { showError } from "./form.js";

const PERIOD_SHORT = { minute: "min", hour: "h", day: "day", week: "wk", month: "mo", lifetime: "total" };

// The key's own enabled limits, e.g. "60 req/min · 100K tok/min"; empty: none.
function ownLimits(k) {
  const parts = [];
  for (const e of (k.capacity || []).filter((e) => e.enabled !== false)) {
    const per = PERIOD_SHORT[e.period] || e.period;
    if (e.requests) parts.push(`${fmtCompact(e.requests)} req/${per}`);
    if (e.tokens) parts.push(`${fmtCompact(e.tokens)} tok/${per}`);
  }
  return parts.join(" · ");
}

function keyStatus(k) {
  if (k.revokedAt) return h("span", { class: "badge badge-muted" }, "Revoked");
  if (k.expiresAt && new Date(k.expiresAt) < new Date()) return h("span", { class: "badge badge-muted" }, "Expired");
  return h("span", { class: "badge badge-ok" }, "Active");
}

export async function render(ctx) {
  const page = h("section", { class: "page" });
  ctx.root.append(page);

  const name = h("input", { type: "text", autocomplete: "off", maxlength: "128" });
  const expires = h("input", { type: "date" });
  const connBox = h("div", { class: "conn-picks" }, loading("Loading connections…"));
  const status = h("div", { class: "form-status", tabindex: "-1", "aria-live": "polite" });
  const secretBox = h("div", { "aria-live": "polite" });
  const listBox = h("div", {}, loading("Loading API keys…"));
  const createBtn = h("button", { type: "submit", class: "btn btn-primary" }, "Create API key");
  const connPaths = h("div", { "data-path": "connections", tabindex: "-1", id: uid("conns") });

  const form = h("form", { class: "card stack", novalidate: true, "aria-labelledby": "new-key-h" },
    h("h2", { id: "new-key-h" }, "Create an API key"),
    h("div", { class: "grid" },
      field("Name", name, { path: "name", hint: "Who or what uses it, e.g. billing-service." }),
      field("Expires on (optional)", expires, { path: "expiresAt", hint: "Empty: never expires. Expires at 00:00 UTC that day." })),
    h("fieldset", { class: "subgroup" },
      h("legend", {}, "Connections it may use"),
      h("p", { class: "hint" }, "None checked: every connection, including future ones."),
      connPaths, connBox,
      h("p", { class: "field-error", id: `${connPaths.id}-err`, hidden: true })),
    status,
    h("div", { class: "actions" }, createBtn));

  replace(page,
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "API keys"), h("p", { class: "lede" }, "Applications use these keys to call models through vmx (OpenAI and Anthropic SDKs)."))),
    secretBox,
    form,
    h("section", { class: "card", "aria-labelledby": "keys-h" }, h("h2", { id: "keys-h" }, "Keys"), listBox));

  // Connection names by id, for the keys' scopes (filled from the picker's list, then per id).
  const names = new Map();
  const ID_FORM = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

  // Connections to pick from (the first 100, by name).
  let checks = [];
  const connsLoaded = api.get("/v1/connections", { query: { limit: 100 } }).then((r) => {
    const conns = r.data || [];
    for (const c of conns) names.set(c.id, c.name);
    if (!conns.length) {
      replace(connBox, h("p", { class: "muted small" }, "No connections yet; the key will work with every connection you add."));
      return;
    }
    checks = conns.map((c) => ({ c, box: h("input", { type: "checkbox", value: c.id }) }));
    replace(connBox, h("ul", { class: "plain picks" }, checks.map(({ c, box }) => h("li", {}, h("label", { class: "check" }, box, " ", c.name)))));
  }).catch((e) => replace(connBox, errorBox(e)));

  // The names of the ids in `keys`' scopes that the first page did not hold; an entry not of
  // the form of an id is a name (keys stored before scopes held ids).
  async function lookUpNames(keys) {
    await connsLoaded;
    const missing = new Set();
    for (const k of keys) for (const c of k.connections || []) if (ID_FORM.test(c) && !names.has(c)) missing.add(c);
    await Promise.all([...missing].map(async (id) => {
      try {
        const r = await api.get(`/v1/connections/${encodeURIComponent(id)}`);
        names.set(id, r.name);
      } catch {
        names.set(id, `deleted connection ${id.slice(0, 8)}…`);
      }
    }));
  }

  const scopeText = (k) => k.connections.map((c) => names.get(c) || c).join(", ");

  async function loadKeys() {
    try {
      const all = [];
      let cursor = "";
      for (let i = 0; i < 10; i++) {
        const r = await api.get("/v1/api-keys", { query: { limit: 100, cursor } });
        all.push(...(r.data || []));
        if (!r.nextCursor) break;
        cursor = r.nextCursor;
      }
      await lookUpNames(all);
      if (!all.length) {
        replace(listBox, h("div", { class: "empty small-empty" }, h("p", {}, "No API keys yet. Create one above, then call vmx with it:"), h("pre", { class: "code", tabindex: "0" }, 'OpenAI(base_url="<vmx>/v1", api_key="vmx_sk_…")')));
        return;
      }
      replace(listBox, h("table", { class: "table responsive", id: "api-keys" },
        h("caption", { class: "visually-hidden" }, "API keys"),
        h("thead", {}, h("tr", {}, ["Name", "Key", "Connections", "Own limits", "Created", "Expires", "Last used", "Status", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, all.map((k) => {
          const revoke = k.revokedAt ? null : h("button", { type: "button", class: "btn btn-small btn-danger-quiet" }, "Revoke");
          if (revoke) {
            revoke.setAttribute("aria-label", `Revoke ${k.name || k.prefix}`);
            revoke.addEventListener("click", async () => {
              const yes = await confirmDialog({
                title: `Revoke ${k.name || k.prefix}?`,
                body: h("p", {}, "Applications using this key get 401 from now on. This cannot be undone."),
                confirm: "Revoke key",
              });
              if (!yes) {
                revoke.focus();
                return;
              }
              try {
                await api.request("DELETE", `/v1/api-keys/${encodeURIComponent(k.id)}`);
                await loadKeys();
              } catch (e) {
                replace(status, errorBox(e));
              }
            });
          }
          return h("tr", { dataset: { id: k.id } },
            h("td", { "data-label": "Name" }, k.name || h("span", { class: "muted" }, "unnamed")),
            h("td", { "data-label": "Key" }, h("code", {}, `${k.prefix}…`)),
            h("td", { "data-label": "Connections" }, k.connections && k.connections.length ? scopeText(k) : h("span", { class: "muted" }, "All")),
            h("td", { "data-label": "Own limits", title: "Applied per connection the key uses (PATCH /v1/api-keys/{id})" }, ownLimits(k) || h("span", { class: "muted" }, "None")),
            h("td", { "data-label": "Created" }, fmtDate(k.createdAt)),
            h("td", { "data-label": "Expires" }, k.expiresAt ? fmtDate(k.expiresAt) : "Never"),
            h("td", { "data-label": "Last used" }, k.lastUsedAt ? fmtAgo(k.lastUsedAt) : "Never"),
            h("td", { "data-label": "Status" }, keyStatus(k)),
            h("td", { "data-label": "Actions" }, revoke));
        }))));
    } catch (e) {
      replace(listBox, errorBox(e, loadKeys));
    }
  }
  loadKeys();

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearFieldErrors(form);
    replace(status);
    const body = {};
    if (name.value.trim()) body.name = name.value.trim();
    const picked = checks.filter((x) => x.box.checked).map((x) => x.c.id);
    if (picked.length) body.connections = picked;
    if (expires.value) body.expiresAt = `${expires.value}T00:00:00Z`;
    createBtn.disabled = true;
    try {
      const r = await api.request("POST", "/v1/api-keys", { body });
      let secret = r.data.key;
      const out = h("input", { type: "text", readonly: true, value: secret, class: "mono secret-out", id: uid("secret") });
      const copy = h("button", { type: "button", class: "btn" }, "Copy");
      copy.addEventListener("click", async () => {
        try {
          await navigator.clipboard.writeText(secret);
          copy.textContent = "Copied";
        } catch {
          out.select();
          copy.textContent = "Press Ctrl+C";
        }
      });
      const done = h("button", { type: "button", class: "btn btn-primary" }, "Done, I stored it");
      done.addEventListener("click", () => {
        secret = "";
        replace(secretBox);
        name.focus();
      });
      replace(secretBox, h("div", { class: "alert alert-ok secret-panel", role: "alert" },
        h("h2", {}, `API key ${r.data.name || ""} created`),
        h("p", {}, h("strong", {}, "Copy it now: it is shown only this once."), " vmx stores only its hash."),
        h("div", { class: "copy-row" }, h("label", { for: out.id, class: "visually-hidden" }, "New API key"), out, copy),
        h("div", { class: "actions" }, done)));
      form.reset();
      copy.focus();
      loadKeys();
    } catch (e) {
      showError(form, status, e);
    } finally {
      createBtn.disabled = false;
    }
  });

  return () => replace(secretBox);
}
