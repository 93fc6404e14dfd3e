// Connections list: filter by provider, search by name, cursor pagination; per row the
// tightest enabled capacity window, the discovered limits and the last 24 hours.

import { get } from "./api.js";
import { h, replace, loading, errorBox, usageBar, fmtCompact, fmtNumber, fmtDuration, uid, flash } from "./dom.js";
import { providers, displayName } from "./providers.js";

const PAGE = 20;

/** The enabled connection-wide window closest to its limit, or null. */
export function tightest(windows) {
  let best = null;
  for (const w of windows || []) {
    if (w.scope && w.scope !== "connection") continue;
    for (const metric of ["requests", "tokens"]) {
      const m = w[metric];
      if (!m || !m.limit) continue;
      const ratio = m.used / m.limit;
      if (!best || ratio > best.ratio) best = { ratio, metric, used: m.used, limit: m.limit, period: w.period, resetInSecs: w.resetInSecs };
    }
  }
  return best;
}

const PERIOD_SHORT = { minute: "min", hour: "h", day: "day", week: "wk", month: "mo", lifetime: "total" };

export function discoveredSummary(dc) {
  const models = Object.entries((dc && dc.models) || {});
  if (!models.length) return null;
  const [model, info] = models[0];
  const parts = (info.capacity || []).slice(0, 2).map((l) => `${fmtCompact(l.limit)} ${l.metric === "requests" ? "req" : l.metric.replace("_", " ")}/${PERIOD_SHORT[l.period] || l.period}`);
  const more = models.length > 1 ? ` +${models.length - 1} more` : "";
  return `${model}: ${parts.join(" · ") || "no limits announced"}${more}`;
}

function utilCell(cell, cap) {
  const t = tightest(cap.windows);
  if (!t) {
    const perIp = (cap.windows || []).some((w) => w.scope === "source-ip");
    replace(cell, h("span", { class: "muted" }, perIp ? "Per source IP limits only" : "No limit set"));
    return;
  }
  const label = `${fmtNumber(t.used)} / ${fmtNumber(t.limit)} ${t.metric} ${t.period === "lifetime" ? "in total" : `per ${t.period}`}`;
  replace(
    cell,
    h(
      "div",
      { class: "util" },
      usageBar(t.used, t.limit, `Utilization: ${label}`),
      h("span", { class: "util-text" }, label),
      t.resetInSecs !== null && t.resetInSecs !== undefined ? h("span", { class: "muted small" }, `resets in ${fmtDuration(t.resetInSecs)}`) : null,
    ),
  );
}

function usageCell(cell, usage) {
  let req = 0;
  let err = 0;
  for (const b of usage.data || []) {
    req += b.requests || 0;
    for (const n of Object.values(b.errors || {})) err += n;
  }
  replace(
    cell,
    h("span", { class: "nums" }, h("span", {}, fmtCompact(req), " req"), " · ", h("span", { class: err ? "err-count" : "muted" }, fmtCompact(err), " err")),
  );
}

function emptyState() {
  return h(
    "div",
    { class: "empty" },
    h("h2", {}, "No connections yet"),
    h("p", {}, "A connection holds a provider's credentials and the capacity vmx enforces for it. Applications then call models as ", h("code", {}, "<connection>/<model>"), " with a gateway API key."),
    h("div", { class: "actions" },
      h("a", { href: "/console/quick-add", class: "btn btn-primary" }, "Quick add from API keys"),
      h("a", { href: "/console/connections/new", class: "btn" }, "Create a connection")),
    h("p", { class: "muted small" }, "Quick add takes one or more provider API keys, recognises each provider and checks each key before saving."),
  );
}

export async function render(ctx) {
  const q = ctx.query;
  const filter = { provider: q.get("provider") || "", q: q.get("q") || "", cursor: q.get("cursor") || "" };
  let timers = [];
  // Each load gets a number; answers for an older load (or after leaving) are dropped.
  let gen = 0;

  const search = h("input", { type: "search", id: uid("q"), name: "q", value: filter.q, placeholder: "Search by name", autocomplete: "off" });
  const provSel = h("select", { id: uid("prov"), name: "provider" }, h("option", { value: "" }, "All providers"));
  const results = h("div", { class: "results", "aria-live": "polite" });

  const toolbar = h(
    "form",
    { class: "toolbar", role: "search", "aria-label": "Filter connections" },
    h("div", { class: "field inline" }, h("label", { for: search.id, class: "visually-hidden" }, "Search by name"), search),
    h("div", { class: "field inline fixed" }, h("label", { for: provSel.id, class: "visually-hidden" }, "Provider"), provSel),
    h("button", { type: "submit", class: "btn" }, "Search"),
  );

  ctx.root.append(
    h(
      "section",
      { class: "page" },
      h("div", { class: "page-head" },
        h("div", {}, h("h1", {}, "AI connections"), h("p", { class: "lede" }, "Provider credentials, capacity and usage.")),
        h("div", { class: "actions" },
          h("a", { href: "/console/quick-add", class: "btn" }, "Quick add"),
          h("a", { href: "/console/connections/new", class: "btn btn-primary" }, "Create connection"))),
      flash.take(),
      toolbar,
      results,
    ),
  );

  let provList = [];
  providers().then((list) => {
    provList = list;
    for (const p of list) provSel.append(h("option", { value: p.id, selected: p.id === filter.provider }, p.displayName || p.id));
  }).catch(() => {});

  // The cursors of the pages before this one ride in history.state (for "Previous page").
  const cursors = () => (history.state && Array.isArray(history.state.cursors) ? history.state.cursors : []);
  const apply = (cursor = "", stack = []) => {
    filter.q = search.value.trim();
    filter.provider = provSel.value;
    filter.cursor = cursor;
    const p = new URLSearchParams();
    if (filter.provider) p.set("provider", filter.provider);
    if (filter.q) p.set("q", filter.q);
    if (filter.cursor) p.set("cursor", filter.cursor);
    const qs = p.toString();
    history.replaceState({ cursors: stack }, "", `/console/${qs ? `?${qs}` : ""}`);
    load();
  };
  toolbar.addEventListener("submit", (ev) => { ev.preventDefault(); apply(); });
  provSel.addEventListener("change", () => apply());
  let debounce = null;
  search.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => apply(), 300);
  });
  timers.push(() => clearTimeout(debounce));

  async function load() {
    gen += 1;
    const mine = gen;
    const current = () => mine === gen;
    replace(results, loading("Loading connections…"));
    let page;
    try {
      page = await get("/v1/connections", { query: { limit: PAGE, cursor: filter.cursor, provider: filter.provider, q: filter.q } });
    } catch (e) {
      if (current()) replace(results, errorBox(e, load));
      return;
    }
    if (!current()) return;
    const rows = page.data || [];
    if (!rows.length) {
      if (!filter.q && !filter.provider && !filter.cursor) replace(results, emptyState());
      else replace(results, h("div", { class: "empty" }, h("h2", {}, "No connections match"), h("p", {}, "Try another name or provider."), h("button", { type: "button", class: "btn", onclick: () => { search.value = ""; provSel.value = ""; apply(); } }, "Clear filters")));
      return;
    }
    const table = h(
      "table",
      { class: "table responsive" },
      h("caption", { class: "visually-hidden" }, "Connections"),
      h("thead", {}, h("tr", {},
        h("th", { scope: "col" }, "Name"),
        h("th", { scope: "col" }, "Provider"),
        h("th", { scope: "col" }, "Utilization"),
        h("th", { scope: "col" }, "Discovered limits"),
        h("th", { scope: "col" }, "Last 24 h"))),
    );
    const tbody = h("tbody");
    table.append(tbody);
    for (const c of rows) {
      const util = h("td", { "data-label": "Utilization" }, h("span", { class: "muted" }, "…"));
      const usage = h("td", { "data-label": "Last 24 h" }, h("span", { class: "muted" }, "…"));
      const disc = discoveredSummary(c.discoveredCapacity);
      tbody.append(h(
        "tr",
        { dataset: { id: c.id } },
        h("td", { "data-label": "Name" }, h("div", {},
          h("a", { href: `/console/connections/${encodeURIComponent(c.id)}`, class: "row-link" }, c.name),
          c.description ? h("div", { class: "muted small desc" }, c.description) : null)),
        h("td", { "data-label": "Provider" }, h("div", {}, h("span", { class: "badge" }, displayName(provList, c.provider)))),
        util,
        h("td", { "data-label": "Discovered limits" }, disc ? h("span", { class: "small" }, disc) : h("span", { class: "muted small" }, "None yet")),
        usage,
      ));
      get(`/v1/connections/${encodeURIComponent(c.id)}/capacity`).then((cap) => current() && utilCell(util, cap)).catch(() => current() && replace(util, h("span", { class: "muted" }, "unavailable")));
      get(`/v1/connections/${encodeURIComponent(c.id)}/usage`).then((u) => current() && usageCell(usage, u)).catch(() => current() && replace(usage, h("span", { class: "muted" }, "unavailable")));
    }
    const pager = h("nav", { class: "pager", "aria-label": "Pages" },
      filter.cursor && cursors().length > 1 ? h("button", { type: "button", class: "btn", onclick: () => apply("") }, "First page") : null,
      filter.cursor ? h("button", { type: "button", class: "btn", onclick: () => { const st = cursors(); apply(st[st.length - 1] || "", st.slice(0, -1)); } }, "Previous page") : null,
      page.nextCursor ? h("button", { type: "button", class: "btn", onclick: () => apply(page.nextCursor, [...cursors(), filter.cursor]) }, "Next page") : null);
    replace(results, table, pager.childElementCount ? pager : null);
  }

  load();
  return () => {
    gen += 1;
    for (const t of timers) t();
    timers = [];
  };
}
