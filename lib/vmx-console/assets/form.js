// Create and edit a connection. The provider configuration is generated from the
// descriptors of GET /v1/providers, so a new provider needs no change here; the Bedrock
// family gets a region list, nested performance/guardrail settings and the trust-policy
// help. Server validation errors land next to the input that `error.field` names, and the
// form is never reset by an error. Edits are conditional (If-Match): a concurrent change
// is reported, never overwritten.

import * as api from "./api.js";
import { h, field, setFieldError, clearFieldErrors, loading, errorBox, replace, uid } from "./dom.js";
import { providers, isAws, AWS_REGIONS, PERIODS } from "./providers.js";

const MASK = "********";

/** The input whose data-path best matches an error's JSON path (`capacity[1].tokens`). */
export function inputForPath(root, path) {
  if (!path) return null;
  const all = [...root.querySelectorAll("[data-path]")].filter((el) => !el.disabled || el.dataset.path === path);
  const exact = all.find((el) => el.dataset.path === path);
  if (exact) return exact;
  // The longest input path that the error's path starts with (config.guardrailConfig.x → …).
  let best = null;
  for (const el of all) {
    const p = el.dataset.path;
    if ((path.startsWith(`${p}.`) || path.startsWith(`${p}[`)) && (!best || p.length > best.dataset.path.length)) best = el;
  }
  if (best) return best;
  // Or the first input under the error's path (config.performanceConfig → its latency).
  return all.find((el) => el.dataset.path.startsWith(`${path}.`) || el.dataset.path.startsWith(`${path}[`)) || null;
}

/** The message without its leading "<field>: " (the input it sits under says that). */
export function fieldMessage(err) {
  const m = String((err && err.message) || "");
  return err && err.field && m.startsWith(`${err.field}: `) ? m.slice(err.field.length + 2) : m;
}

/** Shows an ApiError next to its field (or in `status`); returns true when placed at a field. */
export function showError(root, status, err) {
  const el = err && err.field ? inputForPath(root, err.field) : null;
  if (el) {
    setFieldError(el, fieldMessage(err));
    el.focus();
    replace(status, h("div", { class: "alert alert-error", role: "alert" }, "The form needs a change: ", err.message));
    return true;
  }
  replace(status, errorBox(err));
  status.focus && status.focus();
  return false;
}

function randomExternalId() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return `vmx-${[...b].map((x) => x.toString(16).padStart(2, "0")).join("")}`;
}

function copyButton(getText, label = "Copy") {
  const btn = h("button", { type: "button", class: "btn btn-small" }, label);
  btn.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(getText());
      btn.textContent = "Copied";
    } catch {
      btn.textContent = "Select and copy";
    }
    setTimeout(() => { btn.textContent = label; }, 1500);
  });
  return btn;
}

function trustPolicy(principal, externalId) {
  return JSON.stringify({
    Version: "2012-10-17",
    Statement: [{
      Effect: "Allow",
      Principal: { AWS: principal },
      Action: "sts:AssumeRole",
      Condition: { StringEquals: { "sts:ExternalId": externalId } },
    }],
  }, null, 2);
}

function roleName(arn) {
  const m = /:role\/(?:.*\/)?([^/]+)$/.exec(arn || "");
  return m ? m[1] : "vmx-bedrock-access";
}

function cfnCommand(principal, externalId, arn) {
  const name = roleName(arn);
  return [
    "aws cloudformation deploy \\",
    "  --template-file infra/bedrock-iam-role.yaml \\",
    `  --stack-name ${name} \\`,
    "  --capabilities CAPABILITY_NAMED_IAM \\",
    "  --parameter-overrides \\",
    `    RoleName=${name} \\`,
    `    TrustedPrincipalArns=${principal} \\`,
    `    ExternalId=${externalId}`,
  ].join("\n");
}

function select(options, value, attrs = {}) {
  return h("select", attrs, options.map(([v, label]) => h("option", { value: v, selected: v === value }, label)));
}

/** Builds the configuration inputs for one descriptor. Returns {el, read()}. */
function configSection(desc, { existing, typed, edit }) {
  const fields = desc.configFields || [];
  const aws = isAws(desc);
  const wrap = h("div", { class: "grid" });
  const readers = [];
  const cur = (name) => (name in typed ? typed[name] : existing ? existing[name] : undefined);

  let regionEl = null;
  let arnEl = null;
  let extEl = null;

  for (const f of fields) {
    const path = `config.${f.name}`;
    const label = f.name.replace(/([A-Z])/g, " $1").replace(/^./, (c) => c.toUpperCase()).replace("Iam Role Arn", "IAM role ARN").replace("Api Key", "API key").replace("External Id", "External ID");
    const hint = f.description + (f.required ? "" : " Optional.");
    if (f.secret) {
      const input = h("input", { type: "password", autocomplete: "off", spellcheck: "false", required: f.required && !edit });
      const keep = edit && existing && existing[f.name];
      if (!keep) {
        if (typeof typed[f.name] === "string") input.value = typed[f.name];
        wrap.append(field(label, input, { hint, path, wide: true }));
        readers.push((out) => {
          typed[f.name] = input.value;
          if (input.value !== "") out[f.name] = input.value;
        });
        continue;
      }
      // Edit: the stored secret stays unless the person chooses to replace it (rotation).
      const masked = h("input", { type: "text", value: MASK, readonly: true, class: "masked" });
      const replaceBtn = h("button", { type: "button", class: "btn btn-small" }, "Replace");
      const keepBtn = h("button", { type: "button", class: "btn btn-small", hidden: true }, "Keep the current one");
      let replacing = false;
      const box = field(label, masked, { hint: `${hint} Stored encrypted; it is never shown. Replace it to rotate the credential.`, path, wide: true });
      box.append(h("div", { class: "inline-actions" }, replaceBtn, keepBtn));
      replaceBtn.addEventListener("click", () => {
        replacing = true;
        masked.type = "password";
        masked.readOnly = false;
        masked.value = "";
        masked.classList.remove("masked");
        replaceBtn.hidden = true;
        keepBtn.hidden = false;
        box.querySelector("label").textContent = `New ${label}`;
        masked.focus();
      });
      keepBtn.addEventListener("click", () => {
        replacing = false;
        masked.type = "text";
        masked.value = MASK;
        masked.readOnly = true;
        masked.classList.add("masked");
        replaceBtn.hidden = false;
        keepBtn.hidden = true;
        box.querySelector("label").textContent = label;
        setFieldError(masked, null);
        replaceBtn.focus();
      });
      wrap.append(box);
      readers.push((out) => {
        if (replacing && masked.value !== "") out[f.name] = masked.value;
      });
      continue;
    }
    if (f.name === "performanceConfig") {
      const v = cur(f.name);
      const sel = select([["", "Provider default"], ["standard", "Standard"], ["optimized", "Optimized"]], (v && v.latency) || "");
      wrap.append(field("Latency (performanceConfig)", sel, { hint: "Applied to every call of this connection. Optimized latency is available for some models only.", path: `${path}.latency` }));
      readers.push((out) => {
        typed[f.name] = sel.value ? { latency: sel.value } : null;
        if (sel.value) out[f.name] = { latency: sel.value };
        else if (edit) out[f.name] = null;
      });
      continue;
    }
    if (f.name === "guardrailConfig") {
      const v = cur(f.name) || {};
      const gid = h("input", { type: "text", value: v.guardrailIdentifier || "", autocomplete: "off" });
      const gver = h("input", { type: "text", value: v.guardrailVersion || "", autocomplete: "off" });
      const trace = select([["enabled", "Enabled"], ["disabled", "Disabled"], ["enabled_full", "Enabled (full)"]], v.trace || "enabled");
      wrap.append(h(
        "fieldset",
        { class: "subgroup field-wide" },
        h("legend", {}, "Guardrail (guardrailConfig, optional)"),
        h("div", { class: "grid" },
          field("Guardrail identifier", gid, { hint: "The guardrail's ID or full ARN. Leave empty for no guardrail.", path: `${path}.guardrailIdentifier` }),
          field("Guardrail version", gver, { hint: "A version number or DRAFT.", path: `${path}.guardrailVersion` }),
          field("Trace", trace, { path: `${path}.trace` })),
      ));
      readers.push((out) => {
        const val = { guardrailIdentifier: gid.value.trim(), guardrailVersion: gver.value.trim(), trace: trace.value };
        typed[f.name] = val;
        if (val.guardrailIdentifier || val.guardrailVersion) out[f.name] = val;
        else if (edit) out[f.name] = null;
      });
      continue;
    }
    if (f.type === "object") {
      const v = cur(f.name);
      const ta = h("textarea", { rows: "3", spellcheck: "false", class: "mono" });
      ta.value = v ? (typeof v === "string" ? v : JSON.stringify(v, null, 2)) : "";
      wrap.append(field(`${label} (JSON)`, ta, { hint, path, wide: true }));
      readers.push((out, errs) => {
        typed[f.name] = ta.value;
        const t = ta.value.trim();
        if (!t) {
          if (edit) out[f.name] = null;
          return;
        }
        try {
          out[f.name] = JSON.parse(t);
        } catch {
          errs.push([ta, "Must be valid JSON."]);
        }
      });
      continue;
    }
    let input;
    const v = cur(f.name);
    if (f.name === "region" && aws) {
      const regions = AWS_REGIONS.includes(v) || !v ? AWS_REGIONS : [v, ...AWS_REGIONS];
      input = select([["", "Choose a region"], ...regions.map((r) => [r, r])], v || "");
      regionEl = input;
    } else {
      input = h("input", { type: "text", value: v === undefined || v === null ? "" : String(v), autocomplete: "off", spellcheck: "false", required: f.required });
      if (f.name === "iamRoleArn") {
        input.placeholder = "arn:aws:iam::123456789012:role/vmx-bedrock-access";
        arnEl = input;
      }
      if (f.name === "externalId") {
        extEl = input;
        if (!edit && !input.value) input.value = randomExternalId();
      }
    }
    wrap.append(field(label, input, { hint, path, wide: f.name === "iamRoleArn" || f.name === "externalId" }));
    readers.push((out) => {
      const val = input.value.trim();
      typed[f.name] = input.value;
      if (val !== "") out[f.name] = val;
      else if (edit && !f.required) out[f.name] = null;
    });
  }

  if (aws) {
    const principal = api.state.config.bedrockPrincipalArn || "<vmx-lambda-role-arn>";
    const policyPre = h("pre", { class: "code", tabindex: "0", role: "region", "aria-label": "Trust policy" });
    const cmdPre = h("pre", { class: "code", tabindex: "0", role: "region", "aria-label": "CloudFormation command" });
    const update = () => {
      const ext = (extEl && extEl.value.trim()) || "<external-id>";
      policyPre.textContent = trustPolicy(principal, ext);
      cmdPre.textContent = cfnCommand(principal, ext, arnEl && arnEl.value.trim());
    };
    update();
    for (const el of [extEl, arnEl, regionEl]) if (el) el.addEventListener("input", update);
    wrap.append(h(
      "details",
      { class: "help field-wide", open: !edit },
      h("summary", {}, "Set up the IAM role vmx assumes"),
      h("p", {}, "The role's trust policy must allow vmx to assume it with this external ID:"),
      h("div", { class: "code-block" }, policyPre, copyButton(() => policyPre.textContent, "Copy policy")),
      h("p", {}, "Or create the role with the template in this repository (RoleName comes from the role ARN above):"),
      h("div", { class: "code-block" }, cmdPre, copyButton(() => cmdPre.textContent, "Copy command")),
      api.state.config.bedrockPrincipalArn ? null : h("p", { class: "muted small" }, "Replace <vmx-lambda-role-arn> with the BedrockTrustedPrincipalArns output of the vmx stack."),
    ));
  }

  return {
    el: wrap,
    read(errs) {
      const out = {};
      for (const r of readers) r(out, errs);
      return out;
    },
  };
}

/** The capacity editor: add and remove rows. */
function capacityEditor(initial) {
  const rowsEl = h("div", { class: "cap-rows" });
  const empty = h("p", { class: "muted small" }, "No limits: vmx admits every request. Add a limit to cap requests or tokens per period.");
  const rows = [];

  const renumber = () => {
    rows.forEach((r, i) => {
      r.title.textContent = `Limit ${i + 1}`;
      for (const [k, el] of Object.entries(r.inputs)) el.dataset.path = `capacity[${i}]${k === "row" ? "" : `.${k}`}`;
      r.remove.setAttribute("aria-label", `Remove limit ${i + 1}`);
    });
    empty.hidden = rows.length > 0;
  };

  const addRow = (entry = { period: "minute", enabled: true }, focus = false) => {
    const period = select(PERIODS.map((p) => [p, p]), entry.period || "minute");
    const requests = h("input", { type: "text", inputmode: "numeric", value: entry.requests ?? "", autocomplete: "off", placeholder: "—" });
    const tokens = h("input", { type: "text", inputmode: "numeric", value: entry.tokens ?? "", autocomplete: "off", placeholder: "—" });
    const enabled = h("input", { type: "checkbox", checked: entry.enabled !== false });
    const perIp = h("input", { type: "checkbox", checked: entry.dimension === "source-ip" });
    const remove = h("button", { type: "button", class: "btn btn-small btn-danger-quiet" }, "Remove");
    const title = h("legend", {}, "Limit");
    const row = h(
      "fieldset",
      { class: "cap-row" },
      title,
      field("Period", period),
      field("Requests", requests),
      field("Tokens", tokens),
      h("div", { class: "checks" },
        h("label", { class: "check" }, enabled, " Enabled"),
        h("label", { class: "check" }, perIp, " Per source IP")),
      h("div", { class: "cap-remove" }, remove),
    );
    const r = { row, title, remove, inputs: { row: period, period, requests, tokens, enabled, dimension: perIp } };
    // The row-level path (capacity[1]) points at the period select, the row's first input.
    delete r.inputs.row;
    r.inputs.period = period;
    rows.push(r);
    rowsEl.append(row);
    remove.addEventListener("click", () => {
      const i = rows.indexOf(r);
      rows.splice(i, 1);
      row.remove();
      renumber();
      const next = rows[i] || rows[i - 1];
      (next ? next.remove : addBtn).focus();
    });
    renumber();
    if (focus) period.focus();
  };

  const addBtn = h("button", { type: "button", class: "btn btn-small" }, "Add limit");
  addBtn.addEventListener("click", () => addRow(undefined, true));
  for (const e of initial || []) addRow(e);
  renumber();

  return {
    el: h("div", {}, empty, rowsEl, h("div", { class: "inline-actions" }, addBtn)),
    read(errs) {
      return rows.map((r) => {
        const e = { period: r.inputs.period.value, enabled: r.inputs.enabled.checked };
        for (const k of ["requests", "tokens"]) {
          const v = r.inputs[k].value.trim();
          if (v === "") continue;
          if (/^\d+$/.test(v)) e[k] = Number(v);
          else errs.push([r.inputs[k], "Must be a whole number."]);
        }
        if (r.inputs.dimension.checked) e.dimension = "source-ip";
        return e;
      });
    },
  };
}

export async function render(ctx) {
  const edit = ctx.edit;
  const id = edit ? ctx.params[0] : null;
  const page = h("section", { class: "page narrowish" });
  ctx.root.append(page);
  page.append(loading(edit ? "Loading the connection…" : "Loading providers…"));

  let list;
  let conn = null;
  let version = null;
  try {
    list = await providers();
    if (edit) {
      const r = await api.request("GET", `/v1/connections/${encodeURIComponent(id)}`);
      conn = r.data;
      version = conn.version;
    }
  } catch (e) {
    replace(page, errorBox(e, () => ctx.navigate(location.pathname + location.search, { replace: true })));
    return;
  }
  if (edit) ctx.setTitle(`Edit ${conn.name}`);

  const typed = {};
  const name = h("input", { type: "text", value: conn ? conn.name : "", required: true, autocomplete: "off", maxlength: "128" });
  const description = h("textarea", { rows: "2", maxlength: "1024" });
  description.value = (conn && conn.description) || "";
  const provider = edit
    ? null
    : h("select", { required: true }, h("option", { value: "" }, "Choose a provider"), list.map((p) => h("option", { value: p.id }, p.displayName || p.id)));
  const preset = ctx.query.get("provider");
  if (provider && preset) provider.value = preset;

  const configHolder = h("div");
  let config = null;
  const drawConfig = () => {
    if (config) config.read([]);
    const pid = edit ? conn.provider : provider.value;
    const desc = list.find((p) => p.id === pid);
    if (!desc) {
      config = null;
      replace(configHolder, h("p", { class: "muted" }, "Choose a provider to see its settings."));
      return;
    }
    config = configSection(desc, { existing: conn && conn.config, typed, edit });
    replace(configHolder, config.el);
  };
  drawConfig();
  if (provider) provider.addEventListener("change", drawConfig);

  const capacity = capacityEditor(conn ? conn.capacity : [{ period: "minute", requests: 60, tokens: 100000, enabled: true }]);
  const models = h("textarea", { rows: "3", spellcheck: "false", class: "mono", placeholder: "gpt-4o-mini" });
  models.value = ((conn && conn.allowedModels) || []).join("\n");

  const status = h("div", { class: "form-status", tabindex: "-1", "aria-live": "polite" });
  const save = h("button", { type: "submit", class: "btn btn-primary" }, edit ? "Save changes" : "Create connection");
  const cancelHref = edit ? `/console/connections/${encodeURIComponent(id)}` : "/console/";

  const provName = edit ? (list.find((p) => p.id === conn.provider) || {}).displayName || conn.provider : null;
  const form = h(
    "form",
    { class: "stack", novalidate: true },
    h("fieldset", { class: "card" },
      h("legend", {}, "Connection"),
      h("div", { class: "grid" },
        field("Name", name, { path: "name", hint: "Unique; applications call models as <name>/<model>. No “/”." }),
        edit
          ? h("div", { class: "field" }, h("span", { class: "label" }, "Provider"), h("p", { class: "static" }, provName), h("p", { class: "hint" }, "Fixed after creation."))
          : field("Provider", provider, { path: "provider" }),
        field("Description", description, { path: "description", wide: true, hint: "Optional." }))),
    h("fieldset", { class: "card" }, h("legend", {}, "Provider configuration"), configHolder),
    h("fieldset", { class: "card" }, h("legend", {}, "Capacity"), capacity.el),
    h("fieldset", { class: "card" },
      h("legend", {}, "Allowed models"),
      field("Model IDs, one per line", models, { path: "allowedModels", hint: "Empty allows every model of the provider. The first one is used by Test connection.", wide: true })),
    status,
    h("div", { class: "actions sticky-actions" }, save, h("a", { href: cancelHref, class: "btn" }, "Cancel")),
  );

  replace(
    page,
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "/console/" }, "Connections"), edit ? [" / ", h("a", { href: cancelHref }, conn.name)] : null),
    h("h1", {}, edit ? `Edit ${conn.name}` : "Create connection"),
    edit ? null : h("p", { class: "lede" }, "Have API keys at hand? ", h("a", { href: "/console/quick-add" }, "Quick add"), " recognises the provider and checks each key."),
    form,
  );
  (edit ? name : provider || name).focus();

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearFieldErrors(form);
    replace(status);
    const errs = [];
    const body = {
      name: name.value.trim(),
      description: description.value.trim() || (edit ? null : undefined),
      capacity: capacity.read(errs),
      allowedModels: models.value.split(/[\n,]/).map((m) => m.trim()).filter(Boolean),
    };
    if (!body.allowedModels.length) body.allowedModels = edit ? null : undefined;
    if (!edit) {
      body.provider = provider.value;
      if (!body.provider) errs.push([provider, "Choose a provider."]);
    }
    if (config) {
      const c = config.read(errs);
      if (!edit || Object.keys(c).length) body.config = c;
    }
    if (!body.name) errs.push([name, "Enter a name."]);
    if (errs.length) {
      for (const [el, msg] of errs) setFieldError(el, msg);
      errs[0][0].focus();
      replace(status, h("div", { class: "alert alert-error", role: "alert" }, `Check ${errs.length === 1 ? "the highlighted field" : `the ${errs.length} highlighted fields`}.`));
      return;
    }
    save.disabled = true;
    save.textContent = "Saving…";
    try {
      const r = edit
        ? await api.request("PATCH", `/v1/connections/${encodeURIComponent(id)}`, { body, headers: { "If-Match": `"${version}"` } })
        : await api.request("POST", "/v1/connections", { body });
      // The key typed into the form leaves the page with the form.
      for (const el of form.querySelectorAll("input[type=password]")) el.value = "";
      ctx.navigate(`/console/connections/${encodeURIComponent(r.data.id)}${edit ? "" : "?created=1"}`);
    } catch (e) {
      save.disabled = false;
      save.textContent = edit ? "Save changes" : "Create connection";
      if (e.status === 409 && edit) {
        replace(status, h(
          "div",
          { class: "alert alert-warn", role: "alert" },
          h("p", {}, h("strong", {}, "This connection changed since you opened it. "), "Someone (or a script) saved a newer version. Your changes were not saved. Reload to see the current version, then make your changes again."),
          h("button", { type: "button", class: "btn", onclick: () => ctx.navigate(location.pathname, { replace: true }) }, "Reload"),
        ));
        status.focus();
        return;
      }
      if (e.status === 409) {
        const n = inputForPath(form, e.field || "name");
        if (n) {
          setFieldError(n, fieldMessage(e));
          n.focus();
          return;
        }
      }
      showError(form, status, e);
    }
  });
}
