// The console's only way to reach the server. Local mode: the session cookie (HttpOnly, set
// by POST /console/session) plus the CSRF token kept in this module's memory. AWS mode: the
// Cognito tokens from the PKCE code flow, kept in sessionStorage, sent as a bearer token.
// Every failure becomes an ApiError {status, code, message, field}.

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field || null;
  }
}

export const state = {
  config: { mode: "local", name: "vmx", apiBase: "" },
  csrfToken: null,
  signedIn: false,
};

const TOKENS_KEY = "vmx.cognito.tokens";
const PKCE_KEY = "vmx.cognito.pkce";

async function parseError(resp) {
  let body = null;
  try {
    body = await resp.json();
  } catch {
    body = null;
  }
  const e = (body && body.error) || {};
  const fallback = resp.status === 401
    ? "Your session has ended. Sign in again."
    : `The server answered ${resp.status}.`;
  return new ApiError(resp.status, e.code || `http_${resp.status}`, e.message || fallback, e.field);
}

/** Reads /console/config.json and, locally, the session (csrf token). */
export async function init() {
  const resp = await fetch("/console/config.json", { credentials: "same-origin" });
  if (resp.ok) state.config = await resp.json();
  if (state.config.mode === "cognito") {
    state.signedIn = Boolean(cognitoToken());
    return;
  }
  if (state.config.mode === "iam") {
    state.signedIn = false;
    return;
  }
  // The sign-in page is the one page served without a session: asking would only log a 401.
  if (location.pathname.startsWith("/console/sign-in")) {
    state.signedIn = false;
    return;
  }
  const s = await fetch("/console/session", { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (s.ok) {
    const body = await s.json();
    state.csrfToken = body.csrfToken;
    state.signedIn = true;
    if (body.name) state.config.name = body.name;
  } else {
    state.signedIn = false;
  }
}

function cognitoToken() {
  try {
    const t = JSON.parse(sessionStorage.getItem(TOKENS_KEY) || "null");
    if (t && t.expiresAt > Date.now()) return t.idToken || t.accessToken;
  } catch {
    /* unreadable: treated as signed out */
  }
  return null;
}

function signInUrl() {
  const next = location.pathname + location.search;
  return `/console/sign-in?next=${encodeURIComponent(next)}`;
}

/**
 * request("GET", "/v1/connections", {body, headers, query}) → {status, data, headers}.
 * A 401 sends the person to the sign-in page (keeping where they were).
 */
export async function request(method, path, { body, headers = {}, query, signal } = {}) {
  let url = state.config.apiBase + path;
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
    const qs = q.toString();
    if (qs) url += (url.includes("?") ? "&" : "?") + qs;
  }
  const h = { Accept: "application/json", ...headers };
  if (body !== undefined) h["Content-Type"] = "application/json";
  if (state.config.mode === "cognito") {
    const t = cognitoToken();
    if (t) h.Authorization = `Bearer ${t}`;
  } else if (!["GET", "HEAD", "OPTIONS"].includes(method) && state.csrfToken) {
    h["X-CSRF-Token"] = state.csrfToken;
  }
  let resp;
  try {
    resp = await fetch(url, {
      method,
      headers: h,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (e) {
    if (e && e.name === "AbortError") throw e;
    throw new ApiError(0, "network", "The server could not be reached. Check that vmx is running.");
  }
  if (resp.status === 401 && !path.startsWith("/console/session")) {
    state.signedIn = false;
    location.assign(signInUrl());
    throw new ApiError(401, "unauthorized", "Your session has ended. Sign in again.");
  }
  if (!resp.ok) throw await parseError(resp);
  const text = resp.status === 204 ? "" : await resp.text();
  return { status: resp.status, data: text ? JSON.parse(text) : null, headers: resp.headers };
}

export const get = (path, opts) => request("GET", path, opts).then((r) => r.data);

// ---- local sign-in -------------------------------------------------------------------

export async function signIn(token) {
  const resp = await fetch("/console/session", {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ token }),
  });
  if (!resp.ok) throw await parseError(resp);
  const body = await resp.json();
  state.csrfToken = body.csrfToken;
  state.signedIn = true;
}

export async function signOut() {
  if (state.config.mode === "cognito") {
    sessionStorage.removeItem(TOKENS_KEY);
    const c = state.config.cognito;
    const back = new URL("/console/sign-in", location.origin).toString();
    location.assign(`${c.domain}/logout?client_id=${encodeURIComponent(c.clientId)}&logout_uri=${encodeURIComponent(back)}`);
    return;
  }
  await fetch("/console/session", {
    method: "DELETE",
    credentials: "same-origin",
    headers: { "X-CSRF-Token": state.csrfToken || "" },
  });
  state.csrfToken = null;
  state.signedIn = false;
}

// ---- Cognito: OAuth code flow with PKCE ------------------------------------------------

function b64url(bytes) {
  let str = "";
  for (const b of new Uint8Array(bytes)) str += String.fromCharCode(b);
  return btoa(str).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export async function cognitoSignIn(next) {
  const c = state.config.cognito;
  const verifier = b64url(crypto.getRandomValues(new Uint8Array(32)));
  const st = b64url(crypto.getRandomValues(new Uint8Array(16)));
  const challenge = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  sessionStorage.setItem(PKCE_KEY, JSON.stringify({ verifier, state: st, next }));
  const q = new URLSearchParams({
    response_type: "code",
    client_id: c.clientId,
    redirect_uri: c.redirectUri,
    scope: (c.scopes || ["openid", "email"]).join(" "),
    state: st,
    code_challenge: challenge,
    code_challenge_method: "S256",
  });
  location.assign(`${c.domain}/oauth2/authorize?${q}`);
}

/** On /console/callback: trades the code for tokens; returns where to go next. */
export async function cognitoCallback() {
  const params = new URLSearchParams(location.search);
  const saved = JSON.parse(sessionStorage.getItem(PKCE_KEY) || "null");
  sessionStorage.removeItem(PKCE_KEY);
  if (params.get("error")) throw new ApiError(401, params.get("error"), params.get("error_description") || "Sign-in was refused.");
  if (!saved || saved.state !== params.get("state")) throw new ApiError(400, "bad_state", "The sign-in response did not match this browser's request. Sign in again.");
  const c = state.config.cognito;
  const resp = await fetch(`${c.domain}/oauth2/token`, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      client_id: c.clientId,
      code: params.get("code") || "",
      redirect_uri: c.redirectUri,
      code_verifier: saved.verifier,
    }),
  });
  if (!resp.ok) throw new ApiError(resp.status, "token_exchange", "Cognito did not accept the sign-in code. Sign in again.");
  const t = await resp.json();
  sessionStorage.setItem(TOKENS_KEY, JSON.stringify({
    idToken: t.id_token,
    accessToken: t.access_token,
    expiresAt: Date.now() + (t.expires_in || 3600) * 1000,
  }));
  state.signedIn = true;
  return saved.next || "/console/";
}
