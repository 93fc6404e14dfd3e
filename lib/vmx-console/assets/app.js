// Entry point: reads the configuration and the session, draws the header, and routes
// location.pathname to one screen module. Navigation inside the app uses history.pushState;
// every screen is reachable by its URL too (the server answers each with this shell).

import * as api from "./api.js";
import { h, replace, errorBox } from "./dom.js";

const routes = [
  { re: /^\/console\/?$/, load: () => import("./list.js"), title: "Connections", nav: "connections" },
  { re: /^\/console\/connections\/new\/?$/, load: () => import("./form.js"), title: "Create connection", nav: "connections" },
  { re: /^\/console\/quick-add\/?$/, load: () => import("./quickadd.js"), title: "Quick add", nav: "connections" },
  { re: /^\/console\/connections\/([^/]+)\/edit\/?$/, load: () => import("./form.js"), title: "Edit connection", nav: "connections", edit: true },
  { re: /^\/console\/connections\/([^/]+)\/?$/, load: () => import("./details.js"), title: "Connection", nav: "connections" },
  { re: /^\/console\/api-keys\/?$/, load: () => import("./apikeys.js"), title: "API keys", nav: "api-keys" },
  { re: /^\/console\/sign-in\/?$/, load: () => import("./signin.js"), title: "Sign in", public: true },
  { re: /^\/console\/callback\/?$/, load: () => import("./signin.js"), title: "Signing in", public: true, callback: true },
];

let cleanup = null;
const main = () => document.getElementById("main");

export function navigate(url, { replace: rep = false } = {}) {
  if (rep) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  render();
}

function header(route) {
  const bar = document.getElementById("topbar");
  const link = (href, label, key) =>
    h("a", { href, class: "nav-link", "aria-current": route && route.nav === key ? "page" : null }, label);
  const signedIn = api.state.signedIn && !(route && route.public);
  replace(
    bar,
    h(
      "div",
      { class: "topbar-inner" },
      h("a", { class: "brand", href: "/console/" }, h("span", { class: "brand-mark", "aria-hidden": "true" }), "vmx"),
      h("span", { class: "instance", title: "The vmx you are signed in to" }, api.state.config.name || "local"),
      signedIn
        ? h(
          "nav",
          { class: "nav", "aria-label": "Main" },
          link("/console/", "Connections", "connections"),
          link("/console/api-keys", "API keys", "api-keys"),
        )
        : null,
      signedIn
        ? h("button", { type: "button", class: "btn btn-quiet signout", onclick: onSignOut }, "Sign out")
        : null,
    ),
  );
}

async function onSignOut() {
  await api.signOut();
  if (api.state.config.mode !== "cognito") navigate("/console/sign-in", { replace: true });
}

function notFound() {
  return h(
    "section",
    { class: "page narrow" },
    h("h1", {}, "Page not found"),
    h("p", {}, "There is no console page at this address."),
    h("p", {}, h("a", { href: "/console/", class: "btn btn-primary" }, "Go to connections")),
  );
}

export async function render() {
  if (cleanup) {
    try {
      cleanup();
    } catch {
      /* a screen's cleanup never blocks navigation */
    }
    cleanup = null;
  }
  const path = location.pathname;
  let route = null;
  let match = null;
  for (const r of routes) {
    match = path.match(r.re);
    if (match) {
      route = r;
      break;
    }
  }
  header(route);
  const root = main();
  if (!route) {
    document.title = "Not found · vmx";
    replace(root, notFound());
    return;
  }
  if (!route.public && !api.state.signedIn) {
    if (api.state.config.mode === "cognito" && api.state.config.cognito) {
      api.cognitoSignIn(path + location.search);
      return;
    }
    navigate(`/console/sign-in?next=${encodeURIComponent(path + location.search)}`, { replace: true });
    return;
  }
  document.title = `${route.title} · vmx`;
  try {
    const mod = await route.load();
    const ctx = {
      root,
      params: match.slice(1).map(decodeURIComponent),
      query: new URLSearchParams(location.search),
      edit: Boolean(route.edit),
      callback: Boolean(route.callback),
      navigate,
      setTitle: (t) => { document.title = `${t} · vmx`; },
      rerenderHeader: () => header(route),
    };
    replace(root);
    const c = await mod.render(ctx);
    if (typeof c === "function") cleanup = c;
  } catch (e) {
    replace(root, h("section", { class: "page" }, errorBox(e, () => render())));
  }
}

// Same-origin console links become pushState navigations (modifier keys keep their meaning).
document.addEventListener("click", (ev) => {
  if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  const a = ev.target.closest && ev.target.closest("a[href]");
  if (!a || a.target || a.hasAttribute("download")) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith("/console") || url.pathname.startsWith("/console/assets")) return;
  if (url.hash && url.pathname === location.pathname && url.search === location.search) return;
  ev.preventDefault();
  navigate(url.pathname + url.search);
  main().focus({ preventScroll: true });
  window.scrollTo(0, 0);
});

window.addEventListener("popstate", () => render());

(async () => {
  try {
    await api.init();
  } catch (e) {
    replace(main(), h("section", { class: "page" }, errorBox(e, () => location.reload())));
    return;
  }
  render();
})();
