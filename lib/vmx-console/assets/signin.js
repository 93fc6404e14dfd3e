// Sign-in. Local mode: the admin token starts a server-side session (the token goes only
// into this POST body: never a URL, localStorage or the page after sign-in). AWS mode: the
// Cognito hosted UI, and /console/callback finishing the PKCE code flow.

import * as api from "./api.js";
import { h, field, setFieldError, errorBox, loading } from "./dom.js";

function safeNext(next) {
  // Only paths inside the console: never an open redirect.
  return next && (next === "/console" || next.startsWith("/console/")) ? next : "/console/";
}

export async function render(ctx) {
  const next = safeNext(ctx.query.get("next"));
  if (ctx.callback) {
    ctx.root.append(loading("Finishing sign-in…"));
    try {
      const to = await api.cognitoCallback();
      ctx.navigate(safeNext(to), { replace: true });
    } catch (e) {
      ctx.root.replaceChildren(h("section", { class: "page narrow" }, errorBox(e), h("p", {}, h("a", { href: "/console/sign-in" }, "Sign in again"))));
    }
    return;
  }
  if (api.state.config.mode === "iam") {
    ctx.root.append(h("section", { class: "page narrow signin" },
      h("h1", {}, "Sign-in not configured"),
      h("p", {}, "This vmx accepts only IAM-signed API calls: its stack has no Cognito user pool for the console. Deploy it with the console's sign-in settings (see docs/deploy.md).")));
    return;
  }
  if (api.state.config.mode === "cognito") {
    ctx.root.append(
      h(
        "section",
        { class: "page narrow signin" },
        h("h1", {}, "Sign in to ", api.state.config.name),
        h("p", {}, "You sign in with your organisation's Amazon Cognito account."),
        h("button", { type: "button", class: "btn btn-primary", onclick: () => api.cognitoSignIn(next) }, "Continue to sign-in"),
      ),
    );
    return;
  }
  if (api.state.signedIn) {
    ctx.navigate(next, { replace: true });
    return;
  }
  const token = h("input", { type: "password", name: "token", autocomplete: "current-password", required: true, spellcheck: "false" });
  const status = h("div", { class: "form-status", "aria-live": "polite" });
  const submit = h("button", { type: "submit", class: "btn btn-primary" }, "Sign in");
  const form = h(
    "form",
    { class: "card stack", novalidate: true },
    field("Admin token", token, {
      hint: "The VMX_ADMIN_TOKEN of this server (locally it is also in .vmx-data/admin.token).",
      path: "token",
    }),
    status,
    h("div", { class: "actions" }, submit),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    setFieldError(token, null);
    status.replaceChildren();
    if (!token.value.trim()) {
      setFieldError(token, "Enter the admin token.");
      token.focus();
      return;
    }
    submit.disabled = true;
    try {
      await api.signIn(token.value.trim());
      token.value = "";
      ctx.navigate(next, { replace: true });
    } catch (e) {
      submit.disabled = false;
      if (e.status === 401) setFieldError(token, "That token was not accepted. Check it and try again.");
      else status.replaceChildren(errorBox(e));
      token.focus();
    }
  });
  ctx.root.append(
    h(
      "section",
      { class: "page narrow signin" },
      h("h1", {}, "Sign in"),
      h("p", { class: "lede" }, "Manage the AI connections of ", h("strong", {}, api.state.config.name || "this vmx"), "."),
      form,
    ),
  );
  token.focus();
}
