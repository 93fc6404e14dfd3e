// Quick add: paste one or more provider API keys (one per line). Each key's provider is
// recognised from its form, a name is proposed, the key is checked with the provider's
// cheapest call (POST /v1/connections/check) before anything is saved, and the batch's
// result is shown per key. Keys live only in this module's memory and leave the page once
// saved; the page shows a short masked form of each.

import * as api from "./api.js";
import { h, field, replace, setFieldError, clearFieldErrors, fmtNumber, uid } from "./dom.js";
import { providers, detectProvider, isAws } from "./providers.js";
import { fieldMessage } from "./form.js";

function mask(key) {
  return key.length <= 10 ? "••••" : `${key.slice(0, 5)}…${key.slice(-4)}`;
}

function proposeName(provider, key, taken) {
  const base = `${provider || "key"}-${key.slice(-4).toLowerCase().replace(/[^a-z0-9]/g, "x")}`;
  let name = base;
  for (let i = 2; taken.has(name); i++) name = `${base}-${i}`;
  taken.add(name);
  return name;
}

export async function render(ctx) {
  const list = (await providers()).filter((p) => !isAws(p) && (p.configFields || []).some((f) => f.secret));
  const page = h("section", { class: "page" });
  ctx.root.append(page);

  const keysIn = h("textarea", { rows: "5", spellcheck: "false", autocomplete: "off", class: "mono secret-text", placeholder: "sk-ant-…\ngsk_…" });
  const useCap = h("input", { type: "checkbox", checked: true, id: uid("cap") });
  const capReq = h("input", { type: "text", inputmode: "numeric", value: "60" });
  const capTok = h("input", { type: "text", inputmode: "numeric", value: "100000" });
  const status = h("div", { class: "form-status", "aria-live": "polite" });

  const step1 = h(
    "form",
    { class: "stack", novalidate: true },
    h("div", { class: "card stack" },
      field("API keys, one per line", keysIn, {
        wide: true,
        path: "keys",
        hint: "Recognised by their form: sk-ant- Anthropic, gsk_ Groq, pplx- Perplexity, AIza Gemini, other sk- OpenAI. You choose the provider of any other key.",
      })),
    h("fieldset", { class: "card" },
      h("legend", {}, "Default capacity"),
      h("label", { class: "check", for: useCap.id }, useCap, " Apply a per-minute limit to each new connection"),
      h("div", { class: "grid" }, field("Requests per minute", capReq, { path: "capacity[0].requests" }), field("Tokens per minute", capTok, { path: "capacity[0].tokens" })),
      h("p", { class: "hint" }, "You can change it later on each connection. Without a limit vmx admits every request.")),
    status,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "btn btn-primary" }, "Check keys"), h("a", { href: "/console/", class: "btn" }, "Cancel")),
  );
  const stage = h("div", {}, step1);

  replace(page,
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "/console/" }, "Connections"), " / ", h("span", { "aria-current": "page" }, "Quick add")),
    h("h1", {}, "Quick add"),
    h("p", { class: "lede" }, "Turn provider API keys into connections. Each key is checked with the provider before it is saved. Bedrock uses an IAM role: ", h("a", { href: "/console/connections/new?provider=aws-bedrock" }, "create a Bedrock connection"), "."),
    stage);
  keysIn.focus();

  let rows = [];
  const capacity = () => {
    if (!useCap.checked) return [];
    const e = { period: "minute", enabled: true };
    if (/^\d+$/.test(capReq.value.trim())) e.requests = Number(capReq.value.trim());
    if (/^\d+$/.test(capTok.value.trim())) e.tokens = Number(capTok.value.trim());
    return e.requests || e.tokens ? [e] : [];
  };

  async function check(row) {
    if (!row.provider.value) {
      replace(row.result, h("span", { class: "muted" }, "Choose the provider to check this key."));
      return;
    }
    replace(row.result, h("span", { class: "state-inline" }, h("span", { class: "spinner", "aria-hidden": "true" }), "Checking…"));
    try {
      const r = await api.request("POST", "/v1/connections/check", { body: { provider: row.provider.value, config: { apiKey: row.key } } });
      const o = r.data;
      row.ok = Boolean(o.ok);
      if (o.ok) replace(row.result, h("span", { class: "ok" }, "✓ Works"), h("span", { class: "muted small" }, ` ${fmtNumber(o.latencyMs)} ms`));
      else replace(row.result, h("span", { class: "bad" }, `✗ ${(o.error && o.error.class) || "failed"}`), h("span", { class: "muted small" }, ` ${fmtNumber(o.latencyMs)} ms`), o.error && o.error.message ? h("div", { class: "small" }, o.error.message) : null);
      row.include.checked = row.ok;
      row.includeLabel.lastChild.textContent = row.ok ? " Save" : " Save anyway";
    } catch (e) {
      row.ok = false;
      replace(row.result, h("span", { class: "bad" }, "✗ "), e.message);
    }
  }

  step1.addEventListener("submit", (ev) => {
    ev.preventDefault();
    clearFieldErrors(step1);
    const keys = [...new Set(keysIn.value.split(/\r?\n/).map((k) => k.trim()).filter(Boolean))];
    if (!keys.length) {
      setFieldError(keysIn, "Paste at least one API key.");
      keysIn.focus();
      return;
    }
    if (/\s/.test(keys.join(""))) {
      setFieldError(keysIn, "Put one key per line, without spaces.");
      keysIn.focus();
      return;
    }
    keysIn.value = "";
    const taken = new Set();
    rows = keys.map((key, i) => {
      const detected = detectProvider(key);
      const known = list.some((p) => p.id === detected) ? detected : "";
      const provider = h("select", { id: uid("qp") }, h("option", { value: "" }, "Choose…"), list.map((p) => h("option", { value: p.id, selected: p.id === known }, p.displayName || p.id)));
      const name = h("input", { type: "text", id: uid("qn"), value: proposeName(known, key, taken), autocomplete: "off" });
      const include = h("input", { type: "checkbox", checked: true });
      const includeLabel = h("label", { class: "check" }, include, " Save");
      const result = h("div", { class: "qa-result", "aria-live": "polite" });
      const outcome = h("div", { class: "qa-outcome", "aria-live": "polite" });
      const row = { key, provider, name, include, includeLabel, result, outcome, ok: false };
      row.el = h("li", { class: "qa-row card" },
        h("div", { class: "qa-key" }, h("span", { class: "label" }, `Key ${i + 1}`), h("code", {}, mask(key)), known ? null : h("span", { class: "warn small" }, " Not recognised: choose its provider.")),
        h("div", { class: "grid" },
          field("Provider", provider, { path: "provider" }),
          field("Name", name, { path: "name" })),
        result,
        h("div", { class: "qa-foot" }, includeLabel, outcome));
      provider.addEventListener("change", () => {
        const n = name.value;
        if (/^(key|openai|anthropic|gemini|groq|perplexity)-/.test(n)) name.value = n.replace(/^[a-z]+-/, `${provider.value || "key"}-`);
        check(row);
      });
      return row;
    });
    const saveBtn = h("button", { type: "button", class: "btn btn-primary" }, "Save connections");
    const summary = h("div", { class: "form-status", "aria-live": "polite", tabindex: "-1" });
    const restart = h("button", { type: "button", class: "btn" }, "Start over");
    replace(stage,
      h("h2", { class: "section-title" }, rows.length === 1 ? "1 key" : `${rows.length} keys`),
      h("ol", { class: "qa-list plain" }, rows.map((r) => r.el)),
      summary,
      h("div", { class: "actions" }, saveBtn, restart));
    restart.addEventListener("click", () => {
      rows = [];
      replace(stage, step1);
      keysIn.focus();
    });
    rows[0].provider.focus();
    for (const r of rows) check(r);

    saveBtn.addEventListener("click", async () => {
      saveBtn.disabled = true;
      let created = 0;
      let failed = 0;
      for (const r of rows) {
        if (r.done) continue;
        clearFieldErrors(r.el);
        if (!r.include.checked) {
          replace(r.outcome, h("span", { class: "muted" }, "Skipped"));
          continue;
        }
        if (!r.provider.value) {
          setFieldError(r.provider, "Choose the provider.");
          replace(r.outcome, h("span", { class: "bad" }, "Failed: no provider chosen"));
          failed++;
          continue;
        }
        try {
          const res = await api.request("POST", "/v1/connections", {
            body: { name: r.name.value.trim(), provider: r.provider.value, config: { apiKey: r.key }, capacity: capacity() },
          });
          r.done = true;
          r.key = "";
          created++;
          r.provider.disabled = true;
          r.name.disabled = true;
          r.include.disabled = true;
          replace(r.outcome, h("span", { class: "ok" }, "Created "), h("a", { href: `/console/connections/${encodeURIComponent(res.data.id)}` }, res.data.name));
        } catch (e) {
          failed++;
          const target = e.field === "name" ? r.name : e.field === "provider" ? r.provider : null;
          if (target) setFieldError(target, fieldMessage(e));
          replace(r.outcome, h("span", { class: "bad" }, "Failed: "), target ? `${e.field}: ${fieldMessage(e)}` : e.message);
        }
      }
      saveBtn.disabled = rows.every((r) => r.done);
      replace(summary, h("div", { class: ["alert", failed ? "alert-warn" : "alert-ok"], role: "status" },
        `${created} created${failed ? `, ${failed} failed` : ""}.`,
        failed ? " Fix the failed ones and save again. " : " ",
        created ? h("a", { href: "/console/" }, "See all connections") : null));
      summary.focus();
    });
  });

  return () => {
    for (const r of rows) r.key = "";
    rows = [];
  };
}
