// The JSON API client. The login session's bearer token lives in sessionStorage (this tab
// only, gone when it closes); no secret ever goes into a URL.

const TOKEN_KEY = "gateway.console.token";
export const API = "/api/v1";

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
}

export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  set(token) { sessionStorage.setItem(TOKEN_KEY, token); },
  clear() { sessionStorage.removeItem(TOKEN_KEY); },
};

/** Path segments, each URI-encoded: an object key keeps its slashes. */
export function keyPath(key) {
  return key.split("/").map(encodeURIComponent).join("/");
}

export function bucketPath(bucket) {
  return `/storage/buckets/${encodeURIComponent(bucket)}`;
}

export function objectPath(bucket, key) {
  return `${bucketPath(bucket)}/objects/${keyPath(key)}`;
}

export function authHeaders() {
  const token = session.token;
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** The error an answer carries, in either of the API's two shapes. */
export function errorOf(status, body) {
  if (body && typeof body.error === "object" && body.error) {
    return new ApiError(status, body.error.code, body.error.message, body.error.details);
  }
  if (body && typeof body.error === "string") {
    return new ApiError(status, body.error, body.message, body);
  }
  return new ApiError(status, "HTTP_" + status, `The server answered ${status}`);
}

function onUnauthorized() {
  session.clear();
  window.dispatchEvent(new CustomEvent("console:logged-out"));
}

/**
 * A JSON API call. `query`: an object of parameters (undefined values are left out);
 * `body`: sent as JSON. Answers in the envelope give their `data` unless `whole`.
 */
export async function call(method, path, { query, body, whole = false } = {}) {
  let url = API + path;
  if (query) {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(query)) {
      if (value !== undefined && value !== null && value !== "") params.set(name, value);
    }
    const text = params.toString();
    if (text) url += "?" + text;
  }
  const headers = { Accept: "application/json", ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store", credentials: "omit",
  });
  let data = null;
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) data = await response.json();
  if (!response.ok) {
    if (response.status === 401 && !path.startsWith("/auth/login")) onUnauthorized();
    throw errorOf(response.status, data);
  }
  if (!whole && data && typeof data === "object" && data.success === true && "data" in data) {
    return data.data;
  }
  return data;
}

export async function login(credentials) {
  const data = await call("POST", "/auth/login", { body: credentials });
  session.set(data.token);
  return data;
}

export async function logout() {
  try {
    await call("POST", "/auth/logout");
  } finally {
    session.clear();
  }
}

export const me = () => call("GET", "/auth/me");

// -- storage ---------------------------------------------------------------------------

export const listBuckets = () => call("GET", "/storage/buckets");
export const createBucket = (name) => call("POST", "/storage/buckets", { body: { name } });
export const deleteBucket = (name) => call("DELETE", bucketPath(name));
export const bucketQuota = (name) =>
  call("GET", `/admin/buckets/${encodeURIComponent(name)}/quota`);

export function listObjects(bucket, { prefix = "", token, maxKeys = 100 } = {}) {
  return call("GET", `${bucketPath(bucket)}/objects`, {
    query: { prefix, delimiter: "/", max_keys: maxKeys, continuation_token: token },
  });
}

/** Keys containing `text` below `prefix`, by the search API (keyset pages). */
export function searchObjects(bucket, { prefix = "", text, after, first = 50, orderBy }) {
  const operands = [];
  if (prefix) operands.push({ fieldPath: "key", predicate: "starts_with", value: prefix });
  if (text) operands.push({ fieldPath: "key", predicate: "like", value: text });
  const where = operands.length === 1 ? operands[0]
    : operands.length ? { predicate: "and", operands } : undefined;
  const cursor = after ? { first, after } : { first };
  return call("GET", `${bucketPath(bucket)}/search`, {
    query: {
      where: where && JSON.stringify(where),
      order_by: orderBy && JSON.stringify(orderBy),
      cursor: JSON.stringify(cursor),
    },
  });
}

export const deleteObject = (bucket, key) => call("DELETE", objectPath(bucket, key));

export function presign(bucket, key, { operation = "GET", expiresIn = 3600 } = {}) {
  return call("POST", `${objectPath(bucket, key)}/presign`,
    { body: { operation, expires_in: expiresIn } });
}

// -- admin -----------------------------------------------------------------------------

export const listQuotas = (offset = 0, limit = 100) =>
  call("GET", "/admin/quotas", { query: { offset, limit } });
export const setQuota = (bucket, limits) =>
  call("PUT", `/admin/buckets/${encodeURIComponent(bucket)}/quota`, { body: limits });
export const listUsers = () => call("GET", "/admin/users");
export const createUser = (user) => call("POST", "/admin/users", { body: user });
export const updateUser = (name, changes) =>
  call("PATCH", `/admin/users/${encodeURIComponent(name)}`, { body: changes });
export const listKeys = (name) => call("GET", `/admin/users/${encodeURIComponent(name)}/keys`);
export const createKey = (name) =>
  call("POST", `/admin/users/${encodeURIComponent(name)}/keys`, { body: {} });
export const updateKey = (accessKey, enabled) =>
  call("PATCH", `/admin/keys/${encodeURIComponent(accessKey)}`, { body: { enabled } });
export const adminBots = (offset = 0, limit = 50) =>
  call("GET", "/bot/admin", { query: { offset, limit, sort: "name" }, whole: true });
