// Tiny DOM helpers. Every string becomes a text node or an attribute value: nothing here
// ever parses HTML, so a name like `<img src=x onerror=...>` is shown as those characters.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.setAttribute("class", Array.isArray(v) ? v.filter(Boolean).join(" ") : v);
    else if (k === "text") el.textContent = String(v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "value" && "value" in el) el.value = v;
    else if (k === "checked" || k === "selected" || k === "disabled" || k === "hidden") {
      el[k] = Boolean(v);
      if (v) el.setAttribute(k, "");
    } else el.setAttribute(k, v === true ? "" : String(v));
  }
}

/** h("a", {href: "/x", class: "btn"}, "text", child...) */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** The same for SVG elements. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function replace(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

let idSeq = 0;
export function uid(prefix = "f") {
  idSeq += 1;
  return `${prefix}-${idSeq}`;
}

/** A labelled form field: {label, input, hint, path}; the error slot sits under the input. */
export function field(label, input, { hint, path, wide } = {}) {
  if (!input.id) input.id = uid("in");
  const errId = `${input.id}-err`;
  const hintId = hint ? `${input.id}-hint` : null;
  if (path) input.dataset.path = path;
  input.setAttribute("aria-describedby", [hintId, errId].filter(Boolean).join(" "));
  return h(
    "div",
    { class: ["field", wide && "field-wide"] },
    h("label", { for: input.id }, label),
    input,
    hint ? h("p", { class: "hint", id: hintId }, hint) : null,
    h("p", { class: "field-error", id: errId, hidden: true, dataset: { errorFor: input.id } }),
  );
}

/** Shows `message` under `input` (or clears it with null). */
export function setFieldError(input, message) {
  const slot = document.getElementById(`${input.id}-err`);
  if (!slot) return;
  slot.textContent = message || "";
  slot.hidden = !message;
  if (message) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
}

export function clearFieldErrors(root) {
  for (const el of root.querySelectorAll("[aria-invalid]")) setFieldError(el, null);
}

export function fmtNumber(n) {
  if (n === null || n === undefined) return "—";
  return new Intl.NumberFormat("en-US").format(n);
}

export function fmtCompact(n) {
  if (n === null || n === undefined) return "—";
  return new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 }).format(n);
}

export function fmtDate(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString("en-GB", {
    year: "numeric", month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit",
  });
}

export function fmtAgo(iso) {
  if (!iso) return "—";
  const secs = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (secs < 60) return "just now";
  if (secs < 3600) return `${Math.floor(secs / 60)} min ago`;
  if (secs < 86400) return `${Math.floor(secs / 3600)} h ago`;
  return `${Math.floor(secs / 86400)} d ago`;
}

export function fmtDuration(secs) {
  if (secs === null || secs === undefined) return "—";
  const s = Math.max(0, Math.round(secs));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

/** A status line for loading / error / empty states. */
export function loading(text = "Loading…") {
  return h("p", { class: "state state-loading", role: "status" }, h("span", { class: "spinner", "aria-hidden": "true" }), text);
}

export function errorBox(err, retry) {
  return h(
    "div",
    { class: "alert alert-error", role: "alert" },
    h("p", {}, h("strong", {}, "Something went wrong. "), err && err.message ? err.message : String(err)),
    retry ? h("button", { type: "button", class: "btn", onclick: retry }, "Try again") : null,
  );
}

/** A bar showing used/limit. */
export function usageBar(used, limit, label) {
  const pct = limit ? Math.min(100, (used / limit) * 100) : 0;
  const fill = h("span", { class: ["bar-fill", pct >= 90 ? "bar-hot" : pct >= 70 ? "bar-warm" : null] });
  fill.style.width = `${pct.toFixed(1)}%`;
  return h(
    "span",
    {
      class: "bar",
      role: "meter",
      "aria-valuemin": "0",
      "aria-valuemax": String(limit || 0),
      "aria-valuenow": String(used || 0),
      "aria-label": label || "Utilization",
    },
    fill,
  );
}

// One message carried to the next screen (e.g. "Deleted x" shown on the list).
let flashMessage = null;
export const flash = {
  set(msg) { flashMessage = msg; },
  take() {
    const m = flashMessage;
    flashMessage = null;
    return m ? h("div", { class: "alert alert-ok", role: "status" }, m) : null;
  },
};

/** A modal confirmation built on <dialog>: resolves true when confirmed. */
export function confirmDialog({ title, body, confirm, danger = true }) {
  return new Promise((resolve) => {
    const titleId = uid("dlg");
    const ok = h("button", { type: "button", class: ["btn", danger ? "btn-danger" : "btn-primary"] }, confirm);
    const cancel = h("button", { type: "button", class: "btn" }, "Cancel");
    const dlg = h("dialog", { class: "dialog", "aria-labelledby": titleId },
      h("h2", { id: titleId }, title),
      h("div", { class: "dialog-body" }, body),
      h("div", { class: "actions" }, cancel, ok));
    document.body.append(dlg);
    let result = false;
    ok.addEventListener("click", () => { result = true; dlg.close(); });
    cancel.addEventListener("click", () => dlg.close());
    dlg.addEventListener("close", () => {
      dlg.remove();
      resolve(result);
    });
    dlg.showModal();
    cancel.focus();
  });
}
