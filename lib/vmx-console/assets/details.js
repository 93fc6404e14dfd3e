// Connection details: configuration (secrets masked), live capacity windows, discovered
// limits per model and their history of changes, usage charts for 24 h / 7 d / 30 d, Test
// connection, Delete.

import * as api from "./api.js";
import {
  h, replace, loading, errorBox, usageBar, fmtNumber, fmtCompact, fmtDate, fmtAgo, fmtDuration, confirmDialog, flash,
} from "./dom.js";
import { chart } from "./charts.js";
import { providers, displayName } from "./providers.js";

const REFRESH_MS = 5000;
const ERROR_CLASSES = ["rate_limited", "capacity_exceeded", "auth", "bad_request", "upstream", "timeout", "network", "other"];
const RANGES = {
  "24h": { label: "24 hours", granularity: "hour", hours: 24 },
  "7d": { label: "7 days", granularity: "hour", hours: 24 * 7 },
  "30d": { label: "30 days", granularity: "day", hours: 24 * 30 },
};

function section(title, ...children) {
  const id = `sec-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return h("section", { class: "card", "aria-labelledby": id }, h("h2", { id }, title), ...children);
}

const LABELS = {
  apiKey: "API key", region: "Region", iamRoleArn: "IAM role ARN", externalId: "External ID",
  performanceConfig: "Performance", guardrailConfig: "Guardrail",
  latency: "latency", guardrailIdentifier: "identifier", guardrailVersion: "version", trace: "trace",
};

function configList(conn, desc) {
  const items = [];
  const add = (k, v) => items.push(h("dt", {}, LABELS[k] || k), h("dd", {}, v));
  const cfg = conn.config || {};
  // In the descriptor's order, then anything else the server returned.
  const order = ((desc && desc.configFields) || []).map((f) => f.name).filter((k) => k in cfg);
  for (const k of Object.keys(cfg)) if (!order.includes(k) && k !== "type") order.push(k);
  for (const k of order) {
    const v = cfg[k];
    if (v && typeof v === "object") {
      add(k, h("span", { class: "sub-values" }, Object.entries(v).map(([a, b]) => h("span", {}, h("span", { class: "muted" }, `${LABELS[a] || a} `), h("code", { class: "wrap" }, String(b))))));
    } else {
      add(k, h("code", { class: "wrap" }, String(v)));
    }
  }
  if (!items.length) return h("p", { class: "muted" }, "No configuration.");
  return h("dl", { class: "kv" }, items);
}

function capacityConfig(conn) {
  const cap = conn.capacity || [];
  if (!cap.length) return h("p", { class: "muted" }, "No capacity limits: every request is admitted. ", h("a", { href: `/console/connections/${encodeURIComponent(conn.id)}/edit` }, "Add limits"));
  return h("ul", { class: "plain" }, cap.map((c) => h("li", { class: c.enabled === false ? "muted" : null },
    [c.requests ? `${fmtNumber(c.requests)} requests` : null, c.tokens ? `${fmtNumber(c.tokens)} tokens` : null].filter(Boolean).join(" and "),
    c.period === "lifetime" ? " in total (lifetime)" : ` per ${c.period}`,
    c.dimension === "source-ip" ? " per source IP" : "",
    c.enabled === false ? " (disabled)" : "")));
}

function metricCell(m) {
  if (!m) return h("span", { class: "muted" }, "—");
  if (m.limit === null || m.limit === undefined) return h("span", {}, `${fmtNumber(m.used)} used`, h("span", { class: "muted" }, " · no limit"));
  return h("div", { class: "util" },
    usageBar(m.used, m.limit, `${fmtNumber(m.used)} of ${fmtNumber(m.limit)} used`),
    h("span", { class: "util-text" }, `${fmtNumber(m.used)} / ${fmtNumber(m.limit)}`),
    h("span", { class: "muted small" }, `${fmtNumber(m.remaining)} remaining`));
}

// The limited metrics of a pool's window, one line each: `pick(metric, name)` makes the line.
function poolLines(p, pick) {
  const lines = [["requests", p.requests], ["tokens", p.tokens]]
    .filter(([, m]) => m && m.max !== null && m.max !== undefined)
    .map(([name, m]) => h("div", { class: "pool-line" }, pick(m, name)));
  // One child per cell: the responsive table lays a cell's children out as grid items.
  return lines.length ? h("div", { class: "pool-lines" }, lines) : h("span", { class: "muted" }, "—");
}

// How each prioritization pool uses one connection-wide window (GET .../capacity `pools`).
function poolBlock(w) {
  const title = w.period === "lifetime" ? "Prioritization pools, lifetime" : `Prioritization pools, per ${w.period}`;
  return h("div", { class: "pool-block" },
    h("h3", {}, title),
    h("p", { class: "muted small" }, "Used / max: the pool's use and its maximum reservation. Min: held back for it while it is active. Allocation: what it has used plus what it may still add now."),
    h("table", { class: "table responsive compact pool-table", "data-period": w.period },
      h("caption", { class: "visually-hidden" }, `${title}: use per pool`),
      h("thead", {}, h("tr", {}, ["Pool", "Used / max", "Min", "Active", "Allocation"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, w.pools.map((p) => h("tr", { "data-pool": p.name },
        h("th", { scope: "row", "data-label": "Pool" }, h("span", {}, p.name,
          h("span", { class: "muted small" }, p.rank === null || p.rank === undefined ? " · ranked last" : ` · rank ${p.rank}`))),
        h("td", { "data-label": "Used / max" }, poolLines(p, (m, name) => h("div", { class: "util" },
          usageBar(m.used, m.max, `${p.name}: ${fmtNumber(m.used)} of ${fmtNumber(m.max)} ${name} used`),
          h("span", { class: "util-text" }, `${fmtNumber(m.used)} / ${fmtNumber(m.max)} ${name}`)))),
        h("td", { "data-label": "Min" }, poolLines(p, (m, name) => `${fmtNumber(m.min)} ${name}`)),
        h("td", { "data-label": "Active" }, h("span", {}, p.active
          ? h("span", { class: "badge badge-ok" }, "active")
          : h("span", { class: "badge badge-muted" }, "idle"))),
        h("td", { "data-label": "Allocation" }, poolLines(p, (m, name) => [
          `${fmtNumber(m.allocation)} ${name}`,
          h("span", { class: "muted small" }, ` · ${fmtNumber(m.remaining)} more`)])))))));
}

function liveCapacity(cap, fetchedAt) {
  const windows = cap.windows || [];
  if (!windows.length) return h("p", { class: "muted" }, "No enabled capacity window.");
  const countdowns = [];
  const rows = [];
  const ipBlocks = [];
  const poolBlocks = [];
  for (const w of windows) {
    const reset = h("span", { class: "countdown" }, w.resetInSecs === null || w.resetInSecs === undefined ? "never" : fmtDuration(w.resetInSecs));
    if (w.resetInSecs !== null && w.resetInSecs !== undefined) countdowns.push([reset, w.resetInSecs]);
    if (w.scope === "source-ip") {
      const lim = w.limits || {};
      ipBlocks.push(h("div", { class: "ip-block" },
        h("h3", {}, w.period === "lifetime" ? "Per source IP, lifetime" : `Per source IP, per ${w.period}`),
        h("p", { class: "muted small" },
          `Limit per address: ${[lim.requests ? `${fmtNumber(lim.requests)} requests` : null, lim.tokens ? `${fmtNumber(lim.tokens)} tokens` : null].filter(Boolean).join(", ")} · ${fmtNumber(w.sourceIpCount || 0)} ${w.sourceIpCount === 1 ? "address" : "addresses"} this window · `, w.resetInSecs === null || w.resetInSecs === undefined ? "never resets" : ["resets in ", reset]),
        (w.topSourceIps || []).length
          ? h("table", { class: "table responsive compact" },
            h("caption", { class: "visually-hidden" }, `Top source addresses, per ${w.period}`),
            h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Address"), h("th", { scope: "col" }, "Requests"), h("th", { scope: "col" }, "Tokens"))),
            h("tbody", {}, w.topSourceIps.map((ip) => h("tr", {},
              h("td", { "data-label": "Address" }, h("code", {}, ip.ip)),
              h("td", { "data-label": "Requests" }, metricCell(ip.requests)),
              h("td", { "data-label": "Tokens" }, metricCell(ip.tokens))))))
          : h("p", { class: "muted small" }, "No traffic in this window yet.")));
      continue;
    }
    rows.push(h("tr", {},
      h("th", { scope: "row", "data-label": "Window" }, w.period === "lifetime" ? "Lifetime" : `Per ${w.period}`),
      h("td", { "data-label": "Requests" }, metricCell(w.requests)),
      h("td", { "data-label": "Tokens" }, metricCell(w.tokens)),
      h("td", { "data-label": "Resets in" }, reset)));
    if ((w.pools || []).length) poolBlocks.push(poolBlock(w));
  }
  const el = h("div", {},
    rows.length
      ? h("table", { class: "table responsive", id: "live-capacity" },
        h("caption", { class: "visually-hidden" }, "Live capacity windows"),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Window"), h("th", { scope: "col" }, "Requests"), h("th", { scope: "col" }, "Tokens"), h("th", { scope: "col" }, "Resets in"))),
        h("tbody", {}, rows))
      : null,
    poolBlocks,
    ipBlocks);
  el.tick = () => {
    const elapsed = (Date.now() - fetchedAt) / 1000;
    for (const [node, secs] of countdowns) node.textContent = fmtDuration(Math.max(0, secs - elapsed));
  };
  return el;
}

function discovered(conn) {
  const models = Object.entries((conn.discoveredCapacity && conn.discoveredCapacity.models) || {});
  if (!models.length) {
    return h("p", { class: "muted", id: "discovered-empty" }, "Nothing discovered yet. vmx records the rate limits a provider announces in its response headers (for example x-ratelimit-limit-requests) on the first requests through this connection, or when you test it.");
  }
  return h("table", { class: "table responsive", id: "discovered" },
    h("caption", { class: "visually-hidden" }, "Discovered capacity per model"),
    h("thead", {}, h("tr", {}, ["Model", "Limit", "Remaining", "Resets", "Last updated"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, models.flatMap(([model, info]) => {
      const limits = info.capacity || [];
      const changed = () => h("span", { class: "changed" }, fmtAgo(info.updatedAt), h("span", { class: "muted small" }, ` (${fmtDate(info.updatedAt)})`));
      if (!limits.length) {
        return [h("tr", {}, h("td", { "data-label": "Model" }, h("code", {}, model)), h("td", { "data-label": "Limit", colspan: "3" }, info.errorMessage || "No limits announced"), h("td", { "data-label": "Last updated" }, changed()))];
      }
      return limits.map((l) => h("tr", {},
        h("td", { "data-label": "Model" }, h("code", {}, model)),
        h("td", { "data-label": "Limit" }, `${fmtNumber(l.limit)} ${l.metric.replace(/_/g, " ")} per ${l.period}`),
        h("td", { "data-label": "Remaining" }, l.remaining === undefined || l.remaining === null ? "—" : fmtNumber(l.remaining)),
        h("td", { "data-label": "Resets" }, l.reset || "—"),
        h("td", { "data-label": "Last updated" }, changed())));
    })));
}

const HISTORY_ROWS = 20;
const fmtLimit = (v) => (v === null || v === undefined ? "none" : fmtNumber(v));

/** The newest discovered-limit changes: when, model, metric, old -> new. */
function history(page) {
  const rows = (page && page.data) || [];
  if (!rows.length) {
    return h("p", { class: "muted", id: "history-empty" }, "No change recorded yet. Every time a limit appears, changes or disappears, it is listed here (kept 90 days).");
  }
  return h("table", { class: "table responsive", id: "discovered-history" },
    h("caption", { class: "visually-hidden" }, "Discovered capacity changes, newest first"),
    h("thead", {}, h("tr", {}, ["When", "Model", "Metric", "Change", "Seen in"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.map((c) => h("tr", {},
      h("td", { "data-label": "When" }, h("time", { datetime: c.at, title: fmtDate(c.at) }, fmtAgo(c.at))),
      h("td", { "data-label": "Model" }, h("code", {}, c.model)),
      h("td", { "data-label": "Metric" }, `${c.metric.replace(/_/g, " ")} per ${c.period}`),
      h("td", { "data-label": "Change" }, `${fmtLimit(c.old)} → ${fmtLimit(c.new)}`),
      h("td", { "data-label": "Seen in" }, c.source === "refresh" ? "limit refresh" : "response headers")))));
}

/** Sums buckets of every model per time slot over [from, to). */
function slots(usage, rangeKey) {
  const r = RANGES[rangeKey];
  const step = r.granularity === "hour" ? 3600e3 : 86400e3;
  const to = new Date(usage.to).getTime();
  const start = Math.floor((new Date(usage.from).getTime()) / step) * step;
  const n = Math.max(1, Math.ceil((to - start) / step));
  const times = [];
  const agg = [];
  for (let i = 0; i < n; i++) {
    times.push(new Date(start + i * step));
    agg.push({ requests: 0, errors: {}, promptTokens: 0, completionTokens: 0, cachedTokens: 0, latencyMsSum: 0, ttftMsSum: 0, ttftCount: 0 });
  }
  for (const b of usage.data || []) {
    const i = Math.floor((new Date(b.start).getTime() - start) / step);
    if (i < 0 || i >= n) continue;
    const a = agg[i];
    a.requests += b.requests || 0;
    a.promptTokens += b.promptTokens || 0;
    a.completionTokens += b.completionTokens || 0;
    a.cachedTokens += b.cachedTokens || 0;
    a.latencyMsSum += b.latencyMsSum || 0;
    a.ttftMsSum += b.ttftMsSum || 0;
    a.ttftCount += b.ttftCount || 0;
    for (const [k, v] of Object.entries(b.errors || {})) a.errors[k] = (a.errors[k] || 0) + v;
  }
  return { times, agg, granularity: r.granularity };
}

function usageView(usage, rangeKey) {
  const { times, agg, granularity } = slots(usage, rangeKey);
  const fmtX = granularity === "hour"
    ? (d) => (rangeKey === "24h" ? d.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" }) : d.toLocaleDateString("en-GB", { day: "2-digit", month: "short" }))
    : (d) => d.toLocaleDateString("en-GB", { day: "2-digit", month: "short" });
  const sum = (f) => agg.reduce((a, x) => a + f(x), 0);
  const req = sum((x) => x.requests);
  const errTotal = sum((x) => Object.values(x.errors).reduce((a, b) => a + b, 0));
  const prompt = sum((x) => x.promptTokens);
  const completion = sum((x) => x.completionTokens);
  const cached = sum((x) => x.cachedTokens);
  const latSum = sum((x) => x.latencyMsSum);
  const ttftSum = sum((x) => x.ttftMsSum);
  const ttftN = sum((x) => x.ttftCount);
  const maxLat = Math.max(0, ...(usage.data || []).map((b) => b.latencyMsMax || 0));
  const maxTtft = Math.max(0, ...(usage.data || []).map((b) => b.ttftMsMax || 0));

  const stat = (label, value, sub) => h("div", { class: "stat" }, h("span", { class: "stat-label" }, label), h("span", { class: "stat-value" }, value), sub ? h("span", { class: "muted small" }, sub) : null);
  const stats = h("div", { class: "stats", id: "usage-stats" },
    stat("Requests", fmtNumber(req)),
    stat("Errors", fmtNumber(errTotal), req ? `${((errTotal / req) * 100).toFixed(1)}% of requests` : null),
    stat("Tokens", fmtCompact(prompt + completion), `${fmtCompact(prompt)} prompt · ${fmtCompact(completion)} completion · ${fmtCompact(cached)} cached`),
    stat("Avg latency", req ? `${Math.round(latSum / req)} ms` : "—", req ? `max ${fmtNumber(maxLat)} ms` : null),
    stat("Avg time to first token", ttftN ? `${Math.round(ttftSum / ttftN)} ms` : "—", ttftN ? `max ${fmtNumber(maxTtft)} ms · ${fmtNumber(ttftN)} streamed` : "streaming requests only"));

  if (!req) {
    return h("div", {}, stats, h("p", { class: "muted", id: "usage-empty" }, `No requests in the last ${RANGES[rangeKey].label}. Traffic shows here once applications call a model of this connection.`));
  }
  const classes = ERROR_CLASSES.filter((c) => agg.some((x) => x.errors[c])).concat(
    [...new Set(agg.flatMap((x) => Object.keys(x.errors)))].filter((c) => !ERROR_CLASSES.includes(c)),
  );
  const errSeries = classes.map((c, i) => ({ name: c.replace(/_/g, " "), values: agg.map((x) => x.errors[c] || 0), color: 3 + i }));
  return h("div", {}, stats, h("div", { class: "charts" },
    chart({
      title: "Requests",
      times,
      fmtX,
      series: [{ name: "Requests", values: agg.map((x) => x.requests), color: 0 }],
      summary: `${req} requests in total.`,
    }),
    chart({
      title: "Tokens",
      times,
      fmtX,
      series: [
        { name: "Prompt", values: agg.map((x) => Math.max(0, x.promptTokens - x.cachedTokens)), color: 0 },
        { name: "Cached prompt", values: agg.map((x) => Math.min(x.cachedTokens, x.promptTokens) || x.cachedTokens), color: 2 },
        { name: "Completion", values: agg.map((x) => x.completionTokens), color: 1 },
      ],
      totals: [fmtCompact(prompt - Math.min(cached, prompt)), fmtCompact(cached), fmtCompact(completion)],
      summary: `${prompt} prompt tokens (${cached} of them cached) and ${completion} completion tokens.`,
    }),
    errSeries.length
      ? chart({ title: "Errors by class", times, fmtX, series: errSeries, totals: errSeries.map((se) => fmtNumber(se.values.reduce((a, b) => a + b, 0))), summary: `${errTotal} errors.` })
      : h("figure", { class: "chart" }, h("figcaption", {}, "Errors by class"), h("p", { class: "muted chart-empty" }, "No errors in this period.")),
    chart({
      title: "Latency and time to first token (average, ms)",
      kind: "line",
      times,
      fmtX,
      fmtY: (v) => `${fmtCompact(v)}`,
      series: [
        { name: "Latency", values: agg.map((x) => (x.requests ? x.latencyMsSum / x.requests : null)), color: 0 },
        { name: "Time to first token", values: agg.map((x) => (x.ttftCount ? x.ttftMsSum / x.ttftCount : null)), color: 1 },
      ],
      summary: `Average latency ${req ? Math.round(latSum / req) : 0} ms.`,
    })));
}

function testResult(r) {
  if (r.ok) {
    return h("div", { class: "alert alert-ok", role: "status", id: "test-result" },
      h("strong", {}, "Connection works. "),
      `The provider answered in ${fmtNumber(r.latencyMs)} ms`, r.model ? ` (model ${r.model})` : "", ".");
  }
  const e = r.error || {};
  return h("div", { class: "alert alert-error", role: "status", id: "test-result" },
    h("strong", {}, "Test failed: "), h("code", { class: "outcome" }, e.class || "error"),
    ` after ${fmtNumber(r.latencyMs)} ms. `, e.message || "");
}

export async function render(ctx) {
  const id = ctx.params[0];
  const path = `/v1/connections/${encodeURIComponent(id)}`;
  const page = h("section", { class: "page" });
  ctx.root.append(page);
  page.append(loading("Loading the connection…"));
  let conn;
  let list = [];
  try {
    [conn, list] = await Promise.all([api.get(path), providers().catch(() => [])]);
  } catch (e) {
    if (e.status === 404) {
      replace(page, h("div", { class: "empty" }, h("h1", {}, "Connection not found"), h("p", {}, "It may have been deleted."), h("a", { href: "/console/", class: "btn btn-primary" }, "Back to connections")));
      return;
    }
    replace(page, errorBox(e, () => ctx.navigate(location.pathname, { replace: true })));
    return;
  }
  ctx.setTitle(conn.name);

  const testOut = h("div", { "aria-live": "polite", class: "test-out" });
  const testBtn = h("button", { type: "button", class: "btn", id: "test-connection" }, "Test connection");
  const delBtn = h("button", { type: "button", class: "btn btn-danger-quiet" }, "Delete");
  const capBox = h("div", { id: "capacity-live" }, loading("Loading capacity…"));
  const discBox = h("div", {}, discovered(conn));
  const historyBox = h("div", { id: "history" }, loading("Loading the history…"));
  const usageBox = h("div", { id: "usage" }, loading("Loading usage…"));
  const configBox = h("div", {}, configList(conn, list.find((p) => p.id === conn.provider)));
  const capConfBox = h("div", {}, capacityConfig(conn));
  const models = conn.allowedModels && conn.allowedModels.length
    ? h("ul", { class: "chips" }, conn.allowedModels.map((m) => h("li", {}, h("code", {}, m))))
    : h("p", { class: "muted" }, "Every model of the provider.");

  let rangeKey = "24h";
  const rangeBtns = Object.entries(RANGES).map(([k, r]) => {
    const b = h("button", { type: "button", class: "seg", "aria-pressed": String(k === rangeKey), dataset: { range: k } }, r.label);
    b.addEventListener("click", () => {
      rangeKey = k;
      for (const x of rangeBtns) x.setAttribute("aria-pressed", String(x.dataset.range === k));
      loadUsage();
    });
    return b;
  });

  replace(
    page,
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "/console/" }, "Connections"), " / ", h("span", { "aria-current": "page" }, conn.name)),
    ctx.query.get("created") ? h("div", { class: "alert alert-ok", role: "status" }, "Connection created. Test it, then give an application an API key for it.") : null,
    h("div", { class: "page-head" },
      h("div", {},
        h("h1", { class: "conn-name" }, conn.name),
        h("p", { class: "lede" }, h("span", { class: "badge" }, displayName(list, conn.provider)), conn.description ? ` ${conn.description}` : "")),
      h("div", { class: "actions" },
        testBtn,
        h("a", { href: `/console/connections/${encodeURIComponent(conn.id)}/edit`, class: "btn btn-primary" }, "Edit"),
        delBtn)),
    testOut,
    h("div", { class: "grid-3" },
      section("Configuration", configBox),
      section("Capacity configuration", capConfBox),
      section("Allowed models", models,
        h("p", { class: "muted small" }, "Call as ", h("code", { class: "wrap" }, `${conn.name}/<model>`), ". Version ", String(conn.version), ", updated ", fmtDate(conn.updatedAt), "."))),
    section("Capacity now", h("p", { class: "muted small" }, "Live; refreshed every few seconds."), capBox),
    section("Discovered capacity", h("p", { class: "muted small" }, "Limits the provider announced for each model, with when each was last updated."), discBox),
    section("Discovered capacity history", h("p", { class: "muted small" }, `The ${HISTORY_ROWS} newest changes of those limits.`), historyBox),
    section("Usage", h("div", { class: "segmented", role: "group", "aria-label": "Period" }, rangeBtns), usageBox),
  );

  let capView = null;
  let stopped = false;
  async function loadCapacity() {
    try {
      const cap = await api.get(`${path}/capacity`, { query: { top: 5 } });
      if (stopped) return;
      capView = liveCapacity(cap, Date.now());
      replace(capBox, capView);
    } catch (e) {
      if (!stopped) replace(capBox, errorBox(e));
    }
  }
  async function loadConn() {
    try {
      const c = await api.get(path, {});
      if (stopped) return;
      conn = c;
      replace(discBox, discovered(conn));
    } catch {
      /* the next refresh tries again */
    }
  }
  async function loadHistory() {
    try {
      const page = await api.get(`${path}/discovered-capacity/history`, { query: { limit: HISTORY_ROWS } });
      if (!stopped) replace(historyBox, history(page));
    } catch (e) {
      if (!stopped) replace(historyBox, errorBox(e, loadHistory));
    }
  }
  async function loadUsage() {
    const r = RANGES[rangeKey];
    const to = new Date();
    const from = new Date(to.getTime() - r.hours * 3600e3);
    try {
      const u = await api.get(`${path}/usage`, { query: { granularity: r.granularity, from: from.toISOString().replace(/\.\d+Z$/, "Z"), to: to.toISOString().replace(/\.\d+Z$/, "Z") } });
      if (!stopped) replace(usageBox, usageView(u, rangeKey));
    } catch (e) {
      if (!stopped) replace(usageBox, errorBox(e, loadUsage));
    }
  }
  loadCapacity();
  loadUsage();
  loadHistory();
  const refresh = setInterval(() => {
    loadCapacity();
    loadConn();
  }, REFRESH_MS);
  const historyRefresh = setInterval(loadHistory, REFRESH_MS * 6);
  const tick = setInterval(() => capView && capView.tick && capView.tick(), 1000);
  const usageRefresh = setInterval(loadUsage, REFRESH_MS * 6);

  testBtn.addEventListener("click", async () => {
    testBtn.disabled = true;
    replace(testOut, h("p", { class: "state", role: "status" }, h("span", { class: "spinner", "aria-hidden": "true" }), "Testing with the provider's cheapest call…"));
    try {
      const r = await api.request("POST", `${path}/test`, { body: {} });
      replace(testOut, testResult(r.data));
      loadConn();
      loadHistory();
    } catch (e) {
      replace(testOut, errorBox(e));
    } finally {
      testBtn.disabled = false;
      testBtn.focus();
    }
  });

  delBtn.addEventListener("click", async () => {
    const yes = await confirmDialog({
      title: `Delete ${conn.name}?`,
      body: [h("p", {}, "Applications calling ", h("strong", {}, `${conn.name}/…`), " will get 404 from now on. Its usage statistics are kept."), h("p", {}, "This cannot be undone.")],
      confirm: "Delete connection",
    });
    if (!yes) {
      delBtn.focus();
      return;
    }
    try {
      await api.request("DELETE", path);
      flash.set(`Deleted ${conn.name}.`);
      ctx.navigate("/console/");
    } catch (e) {
      replace(testOut, errorBox(e));
    }
  });

  return () => {
    stopped = true;
    clearInterval(refresh);
    clearInterval(tick);
    clearInterval(usageRefresh);
    clearInterval(historyRefresh);
  };
}
