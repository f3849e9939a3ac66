// The console: login, buckets with their usage, the object browser (uploads, downloads,
// share links, search) and, for admins, quotas, users and keys, and bots.
import * as api from "./api.js";
import { formatBytes, formatCount, formatDate, limitText, parseLimit } from "./format.js";
import { html, render, useCallback, useEffect, useMemo, useRef, useState } from "./html.js";
import { FOLDER_TITLES, icon, isPackage, packageFolder } from "./icons.js";
import { startUpload } from "./upload.js";

const BUCKETS_PER_PAGE = 20;
const OBJECTS_PER_PAGE = 100;
const SEARCH_PAGE = 50;
const SHARE_EXPIRIES = [
  [900, "15 minutes"], [3600, "1 hour"], [86400, "1 day"], [604800, "7 days"],
];

// -- small things ----------------------------------------------------------------------

function notify(text, kind = "info") {
  window.dispatchEvent(new CustomEvent("console:notify", { detail: { text, kind } }));
}

function errorText(error) {
  if (!error) return "";
  return error.message || String(error);
}

function useHash() {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const listener = () => setHash(location.hash);
    window.addEventListener("hashchange", listener);
    return () => window.removeEventListener("hashchange", listener);
  }, []);
  return hash;
}

function parseRoute(hash) {
  const parts = hash.replace(/^#\/?/, "").split("/");
  if (parts[0] === "b" && parts[1]) {
    return {
      view: "browse", bucket: decodeURIComponent(parts[1]),
      prefix: parts.slice(2).map(decodeURIComponent).join("/"),
    };
  }
  if (parts[0] === "admin") return { view: "admin", page: parts[1] || "quotas" };
  return { view: "buckets" };
}

export function browseHref(bucket, prefix = "") {
  return `#/b/${encodeURIComponent(bucket)}/${prefix.split("/").map(encodeURIComponent).join("/")}`;
}

/** A list that reloads when its inputs change: {data, error, loading, reload}. */
function useLoad(load, inputs) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setState((s) => ({ ...s, loading: true, error: null }));
    load().then(
      (data) => live && setState({ data, error: null, loading: false }),
      (error) => live && setState({ data: null, error, loading: false }));
    return () => { live = false; };
  }, [...inputs, tick]);
  return { ...state, reload: useCallback(() => setTick((t) => t + 1), []) };
}

function ErrorNote({ error }) {
  return error ? html`<p class="error" role="alert">${errorText(error)}</p>` : null;
}

/** A modal <dialog>: focus stays inside, Escape closes it. */
function Dialog({ title, onClose, children, id }) {
  const ref = useRef(null);
  useEffect(() => {
    const dialog = ref.current;
    if (dialog && !dialog.open) dialog.showModal();
    return () => dialog?.open && dialog.close();
  }, []);
  const titleId = `${id}-title`;
  return html`<dialog ref=${ref} id=${id} class="dialog" aria-labelledby=${titleId}
      onCancel=${(e) => { e.preventDefault(); onClose(); }}>
    <header class="dialog-head">
      <h2 id=${titleId}>${title}</h2>
      <button type="button" class="icon-button" aria-label="Close" onClick=${onClose}>
        ${icon("x")}</button>
    </header>
    ${children}
  </dialog>`;
}

function Confirm({ title, text, action = "Delete", onConfirm, onClose }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  async function go() {
    setBusy(true);
    try { await onConfirm(); onClose(); } catch (e) { setError(e); setBusy(false); }
  }
  return html`<${Dialog} id="confirm-dialog" title=${title} onClose=${onClose}>
    <p>${text}</p>
    <${ErrorNote} error=${error} />
    <div class="dialog-actions">
      <button type="button" onClick=${onClose}>Cancel</button>
      <button type="button" class="danger" disabled=${busy} onClick=${go}>${action}</button>
    </div>
  <//>`;
}

/** A usage bar: `used` against `max` (null: no limit). */
function Usage({ label, used, max, percent, format }) {
  const limited = max !== null && max !== undefined;
  const pct = limited ? (percent ?? (max ? (100 * used) / max : 100)) : null;
  const text = limited
    ? `${format(used)} of ${format(max)} (${pct.toFixed(pct < 10 ? 1 : 0)}%)`
    : `${format(used)} · no limit`;
  return html`<div class="usage" data-usage=${label.toLowerCase()}
      data-percent=${limited ? pct.toFixed(2) : ""}>
    <span class="usage-label">${label}</span>
    ${limited
      ? html`<meter min="0" max=${Math.max(max, 1)} value=${Math.min(used, Math.max(max, 1))}
          low=${0.75 * max} high=${0.9 * max} optimum="0" aria-label=${`${label}: ${text}`}
          title=${text}></meter>`
      : html`<span class="meter-none" aria-hidden="true"></span>`}
    <span class="usage-text">${text}</span>
  </div>`;
}

function UsageBars({ quota }) {
  if (!quota) return html`<div class="usage muted">…</div>`;
  return html`<${Usage} label="Bytes" used=${quota.used_bytes} max=${quota.max_bytes}
      percent=${quota.percent_bytes} format=${formatBytes} />
    <${Usage} label="Objects" used=${quota.used_objects} max=${quota.max_objects}
      percent=${quota.percent_objects} format=${formatCount} />`;
}

function Pager({ label, page, pages, onPage }) {
  if (pages <= 1) return null;
  return html`<nav class="pager" aria-label=${label}>
    <button type="button" disabled=${page <= 0} onClick=${() => onPage(page - 1)}>Previous</button>
    <span>Page ${page + 1} of ${pages}</span>
    <button type="button" disabled=${page >= pages - 1} onClick=${() => onPage(page + 1)}>Next</button>
  </nav>`;
}

function SortHeader({ field, label, sort, setSort, className }) {
  const active = sort.field === field;
  const next = active && sort.dir === "asc" ? "desc" : "asc";
  return html`<th scope="col" class=${className}
      aria-sort=${active ? (sort.dir === "asc" ? "ascending" : "descending") : "none"}>
    <button type="button" class="sort" onClick=${() => setSort({ field, dir: next })}>
      ${label}<span aria-hidden="true">${active ? (sort.dir === "asc" ? " ▲" : " ▼") : ""}</span>
    </button></th>`;
}

function compare(a, b, field, dir) {
  const x = a[field], y = b[field];
  const order = typeof x === "number" ? x - y : String(x).localeCompare(String(y));
  return dir === "asc" ? order : -order;
}

// -- login -----------------------------------------------------------------------------

function Login({ onLogin }) {
  const [mode, setMode] = useState("password");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  async function submit(event) {
    event.preventDefault();
    const form = new FormData(event.target);
    const credentials = mode === "password"
      ? { username: form.get("username"), password: form.get("password") }
      : { access_key: form.get("access_key"), secret_key: form.get("secret_key") };
    setBusy(true);
    setError(null);
    try {
      await api.login(credentials);
      onLogin();
    } catch (e) {
      setError(e.status === 401 ? new Error("Wrong credentials.") : e);
      setBusy(false);
    }
  }
  return html`<main class="login">
    <form class="card" onSubmit=${submit} aria-labelledby="login-title">
      <h1 id="login-title">Gateway console</h1>
      <fieldset class="tabs">
        <legend class="sr-only">Sign in with</legend>
        <label><input type="radio" name="mode" value="password" checked=${mode === "password"}
          onChange=${() => setMode("password")} /> User and password</label>
        <label><input type="radio" name="mode" value="keys" checked=${mode === "keys"}
          onChange=${() => setMode("keys")} /> S3 key pair</label>
      </fieldset>
      ${mode === "password" ? html`
        <label for="login-username">User name</label>
        <input id="login-username" name="username" autocomplete="username" required />
        <label for="login-password">Password</label>
        <input id="login-password" name="password" type="password"
          autocomplete="current-password" required />` : html`
        <label for="login-access-key">Access key</label>
        <input id="login-access-key" name="access_key" autocomplete="username" required
          spellcheck="false" />
        <label for="login-secret-key">Secret key</label>
        <input id="login-secret-key" name="secret_key" type="password"
          autocomplete="current-password" required />`}
      <${ErrorNote} error=${error} />
      <button type="submit" class="primary" disabled=${busy}>Sign in</button>
    </form>
  </main>`;
}

// -- buckets ---------------------------------------------------------------------------

function BucketList() {
  const buckets = useLoad(() => api.listBuckets(), []);
  const [page, setPage] = useState(0);
  const [sort, setSort] = useState({ field: "name", dir: "asc" });
  const [quotas, setQuotas] = useState({});
  const [error, setError] = useState(null);
  const [confirm, setConfirm] = useState(null);

  const sorted = useMemo(() => (buckets.data?.buckets || []).slice()
    .sort((a, b) => compare(a, b, sort.field, sort.dir)), [buckets.data, sort]);
  const pages = Math.max(1, Math.ceil(sorted.length / BUCKETS_PER_PAGE));
  const shown = sorted.slice(page * BUCKETS_PER_PAGE, (page + 1) * BUCKETS_PER_PAGE);

  useEffect(() => {
    let live = true;
    for (const bucket of shown) {
      api.bucketQuota(bucket.name).then(
        (quota) => live && setQuotas((q) => ({ ...q, [bucket.name]: quota })),
        () => {});
    }
    return () => { live = false; };
  }, [shown.map((b) => b.name).join("\n"), buckets.data]);

  async function create(event) {
    event.preventDefault();
    const input = event.target.elements.name;
    setError(null);
    try {
      await api.createBucket(input.value.trim());
      notify(`Bucket ${input.value.trim()} created`);
      input.value = "";
      buckets.reload();
    } catch (e) { setError(e); }
  }

  return html`<section aria-labelledby="buckets-title">
    <div class="section-head">
      <h1 id="buckets-title">Buckets</h1>
      <form class="inline-form" onSubmit=${create}>
        <label for="new-bucket" class="sr-only">New bucket name</label>
        <input id="new-bucket" name="name" placeholder="new-bucket or my-bot.gbai" required
          pattern="[a-z0-9][a-z0-9.\\-]{1,61}[a-z0-9]" spellcheck="false" />
        <button type="submit" class="primary">Create bucket</button>
      </form>
    </div>
    <${ErrorNote} error=${error || buckets.error} />
    ${buckets.loading && !buckets.data ? html`<p class="muted">Loading…</p>` : null}
    ${buckets.data && !sorted.length ? html`<p class="muted">No buckets yet.</p>` : null}
    ${sorted.length ? html`<table class="list buckets">
      <thead><tr>
        <${SortHeader} field="name" label="Name" sort=${sort} setSort=${setSort} />
        <th scope="col">Usage</th>
        <${SortHeader} field="created" label="Created" sort=${sort} setSort=${setSort}
          className="wide-only" />
        <th scope="col"><span class="sr-only">Actions</span></th>
      </tr></thead>
      <tbody>${shown.map((b) => html`<tr key=${b.name} data-bucket=${b.name}>
        <td class="name">
          <a href=${browseHref(b.name)} class="entry">
            ${icon(isPackage(b.name) ? "bot" : "bucket")}<span>${b.name}</span></a>
          ${isPackage(b.name) ? html`<span class="badge" title="A bot package">bot package</span>` : null}
        </td>
        <td class="usage-cell"><${UsageBars} quota=${quotas[b.name]} /></td>
        <td class="wide-only">${formatDate(b.created)}</td>
        <td class="actions">
          <button type="button" class="icon-button" aria-label=${`Delete bucket ${b.name}`}
            onClick=${() => setConfirm(b.name)}>${icon("trash")}</button>
        </td>
      </tr>`)}</tbody>
    </table>` : null}
    <${Pager} label="Bucket pages" page=${page} pages=${pages} onPage=${setPage} />
    ${confirm ? html`<${Confirm} title="Delete bucket"
      text=${`Delete the bucket ${confirm}? Only an empty bucket can be deleted.`}
      onConfirm=${async () => { await api.deleteBucket(confirm); buckets.reload(); }}
      onClose=${() => setConfirm(null)} />` : null}
  </section>`;
}

// -- objects ---------------------------------------------------------------------------

function Breadcrumbs({ bucket, prefix }) {
  const segments = prefix.split("/").filter(Boolean);
  return html`<nav class="breadcrumbs" aria-label="Breadcrumbs"><ol>
    <li><a href="#/">Buckets</a></li>
    <li><a href=${browseHref(bucket)} aria-current=${segments.length ? undefined : "page"}>
      ${bucket}</a></li>
    ${segments.map((name, i) => {
      const here = segments.slice(0, i + 1).join("/") + "/";
      return html`<li><a href=${browseHref(bucket, here)}
        aria-current=${i === segments.length - 1 ? "page" : undefined}>${name}</a></li>`;
    })}
  </ol></nav>`;
}

function ShareDialog({ bucket, objectKey, onClose }) {
  const [expires, setExpires] = useState(3600);
  const [link, setLink] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  async function make(event) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      setLink(await api.presign(bucket, objectKey, { operation: "GET", expiresIn: expires }));
    } catch (e) { setError(e); }
    setBusy(false);
  }
  async function copy() {
    try {
      await navigator.clipboard.writeText(link.url);
      notify("Link copied");
    } catch {
      document.getElementById("share-url")?.select();
    }
  }
  return html`<${Dialog} id="share-dialog" title=${`Share ${objectKey.split("/").pop()}`}
      onClose=${onClose}>
    <form onSubmit=${make} class="stack">
      <label for="share-expiry">Link expires after</label>
      <select id="share-expiry" value=${expires}
        onChange=${(e) => { setExpires(Number(e.target.value)); setLink(null); }}>
        ${SHARE_EXPIRIES.map(([s, text]) => html`<option value=${s}>${text}</option>`)}
      </select>
      <button type="submit" class="primary" disabled=${busy}>Create link</button>
    </form>
    <${ErrorNote} error=${error} />
    ${link ? html`<div class="stack">
      <label for="share-url">${`Anyone with this link can download the file until ${
        formatDate(link.expires_at)}`}</label>
      <input id="share-url" readonly value=${link.url} onFocus=${(e) => e.target.select()} />
      <button type="button" onClick=${copy}>Copy link</button>
    </div>` : null}
  <//>`;
}

async function download(bucket, key) {
  const name = key.split("/").pop();
  let href;
  let revoke = false;
  try {
    // A presigned GET streams straight to disk (same origin: `download` names the file).
    href = (await api.presign(bucket, key, { operation: "GET", expiresIn: 300 })).url;
  } catch (e) {
    if (e.status !== 409) throw e;
    // No S3 key to sign with: fetch it with the session instead.
    const response = await fetch(api.API + api.objectPath(bucket, key),
      { headers: api.authHeaders(), credentials: "omit" });
    if (!response.ok) throw api.errorOf(response.status, null);
    href = URL.createObjectURL(await response.blob());
    revoke = true;
  }
  const a = document.createElement("a");
  a.href = href;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  if (revoke) setTimeout(() => URL.revokeObjectURL(href), 60000);
}

function UploadList({ uploads, onCancel, onClear }) {
  if (!uploads.length) return null;
  return html`<section class="uploads" aria-labelledby="uploads-title">
    <div class="section-head">
      <h2 id="uploads-title">Uploads</h2>
      <button type="button" onClick=${onClear}>Clear finished</button>
    </div>
    <ul>${uploads.map((u) => {
      const pct = u.total ? Math.floor((100 * u.loaded) / u.total) : 100;
      return html`<li key=${u.id} class=${"upload " + u.state} data-key=${u.key}>
        <span class="upload-name">${u.key.split("/").pop()}
          ${u.multipart ? html`<span class="badge">multipart</span>` : null}</span>
        <progress max="100" value=${pct} aria-label=${`Upload of ${u.key}`}
          data-upload=${u.key}></progress>
        <span class="upload-state" aria-live="polite">${
          u.state === "running" ? `${pct}% of ${formatBytes(u.total)}`
            : u.state === "done" ? "Done" : u.state === "cancelled" ? "Cancelled"
              : `Failed: ${u.error}`}</span>
        ${u.state === "running" ? html`<button type="button" class="icon-button"
          aria-label=${`Cancel upload of ${u.key}`} onClick=${() => onCancel(u.id)}>
          ${icon("x")}</button>` : null}
      </li>`;
    })}</ul>
  </section>`;
}

let uploadSeq = 0;

function Browser({ bucket, prefix }) {
  const [tokens, setTokens] = useState([null]); // continuation token of each page seen
  const [page, setPage] = useState(0);
  const [sort, setSort] = useState({ field: "name", dir: "asc" });
  const [query, setQuery] = useState("");
  const [searchPages, setSearchPages] = useState(null);
  const [uploads, setUploads] = useState([]);
  const [dialog, setDialog] = useState(null);
  const [error, setError] = useState(null);
  const [dragging, setDragging] = useState(false);
  const [extraFolders, setExtraFolders] = useState([]);
  const handles = useRef({});

  useEffect(() => {
    setTokens([null]); setPage(0); setQuery(""); setSearchPages(null); setError(null);
  }, [bucket, prefix]);

  const listing = useLoad(() => api.listObjects(bucket, {
    prefix, token: tokens[page], maxKeys: OBJECTS_PER_PAGE,
  }), [bucket, prefix, page, tokens[page]]);

  useEffect(() => {
    const next = listing.data?.continuation_token;
    if (next && tokens.length === page + 1) setTokens((t) => [...t, next]);
  }, [listing.data]);

  const entries = useMemo(() => {
    if (searchPages) {
      return searchPages.items.map((o) => ({
        kind: "file", key: o.key, name: o.key.slice(prefix.length), size: o.size,
        modified: o.last_modified,
      }));
    }
    const data = listing.data;
    if (!data) return [];
    const folders = new Set(data.common_prefixes || []);
    if (page === 0) {
      // Folders made here that hold nothing yet: direct children of this one only.
      for (const f of extraFolders) {
        const rest = f.startsWith(prefix) ? f.slice(prefix.length) : "";
        if (rest && rest.indexOf("/") === rest.length - 1) folders.add(f);
      }
    }
    const dirs = [...folders].map((p) => ({
      kind: "folder", key: p, name: p.slice(prefix.length).replace(/\/$/, ""), size: -1,
      modified: "",
    }));
    const files = data.objects.filter((o) => o.key !== prefix).map((o) => ({
      kind: "file", key: o.key, name: o.key.slice(prefix.length), size: o.size,
      modified: o.last_modified,
    }));
    const order = (a, b) => compare(a, b, sort.field, sort.dir);
    return [...dirs.sort(order), ...files.sort(order)];
  }, [listing.data, searchPages, sort, extraFolders, prefix, page]);

  function upload(files) {
    for (const file of files) {
      const id = ++uploadSeq;
      const key = prefix + file.name;
      const update = (changes) =>
        setUploads((list) => list.map((u) => (u.id === id ? { ...u, ...changes } : u)));
      const handle = startUpload(bucket, key, file, (loaded, total) => update({ loaded, total }));
      handles.current[id] = handle;
      setUploads((list) => [...list, {
        id, key, total: file.size, loaded: 0, state: "running", multipart: handle.multipart,
      }]);
      handle.done.then(
        () => { update({ state: "done", loaded: file.size }); listing.reload(); },
        (e) => update(e.cancelled ? { state: "cancelled" } : { state: "failed", error: errorText(e) }),
      ).finally(() => { delete handles.current[id]; });
    }
  }

  async function search(event) {
    event.preventDefault();
    if (!query.trim()) { setSearchPages(null); return; }
    setError(null);
    try {
      const found = await api.searchObjects(bucket, { prefix, text: query.trim(), first: SEARCH_PAGE });
      setSearchPages({ items: found.items, pageInfo: found.pageInfo });
    } catch (e) { setError(e); }
  }

  async function moreResults() {
    try {
      const found = await api.searchObjects(bucket, {
        prefix, text: query.trim(), first: SEARCH_PAGE, after: searchPages.pageInfo.endCursor,
      });
      setSearchPages((s) => ({ items: [...s.items, ...found.items], pageInfo: found.pageInfo }));
    } catch (e) { setError(e); }
  }

  function newFolder(event) {
    event.preventDefault();
    const input = event.target.elements.folder;
    const name = input.value.trim().replace(/^\/+|\/+$/g, "");
    if (!name) return;
    const folder = prefix + name + "/";
    setExtraFolders((f) => [...f, folder]);
    input.value = "";
    location.hash = browseHref(bucket, folder);
  }

  const drop = {
    onDragOver: (e) => { e.preventDefault(); setDragging(true); },
    onDragLeave: () => setDragging(false),
    onDrop: (e) => {
      e.preventDefault();
      setDragging(false);
      if (e.dataTransfer?.files?.length) upload([...e.dataTransfer.files]);
    },
  };
  const pkg = packageFolder(bucket, prefix);
  const truncated = listing.data?.is_truncated;

  return html`<section aria-labelledby="browser-title" class="browser">
    <${Breadcrumbs} bucket=${bucket} prefix=${prefix} />
    <div class="section-head">
      <h1 id="browser-title">
        ${icon(pkg ? pkg.slice(1) : prefix ? "folder" : isPackage(bucket) ? "bot" : "bucket")}
        ${prefix ? prefix.split("/").filter(Boolean).pop() : bucket}
        ${pkg ? html`<span class="badge">${FOLDER_TITLES[pkg]}</span>` : null}
        ${!prefix && isPackage(bucket) ? html`<span class="badge">bot package</span>` : null}
      </h1>
    </div>
    <div class="toolbar">
      <label class="button primary file-button">
        ${icon("upload")}<span>Upload files</span>
        <input type="file" multiple class="sr-only" aria-label="Upload files"
          onChange=${(e) => { upload([...e.target.files]); e.target.value = ""; }} />
      </label>
      <form class="inline-form" onSubmit=${newFolder}>
        <label for="new-folder" class="sr-only">New folder name</label>
        <input id="new-folder" name="folder" placeholder="New folder" spellcheck="false" />
        <button type="submit">Create folder</button>
      </form>
      <form class="inline-form" role="search" onSubmit=${search}>
        <label for="object-search" class="sr-only">Search keys in this folder</label>
        <input id="object-search" type="search" placeholder="Search names" value=${query}
          onInput=${(e) => { setQuery(e.target.value); if (!e.target.value) setSearchPages(null); }} />
        <button type="submit" aria-label="Search">${icon("search")}</button>
      </form>
    </div>
    <div class=${"dropzone" + (dragging ? " dragging" : "")} ...${drop}
      aria-label="Drop files here to upload them to this folder">
      <p class="muted drop-hint">Drop files here to upload them to this folder.</p>
    </div>
    <${UploadList} uploads=${uploads}
      onCancel=${(id) => handles.current[id]?.cancel()}
      onClear=${() => setUploads((list) => list.filter((u) => u.state === "running"))} />
    <${ErrorNote} error=${error || listing.error} />
    ${searchPages ? html`<p class="muted" role="status">${searchPages.items.length} result(s)
      for “${query}”. <button type="button" class="link"
      onClick=${() => { setSearchPages(null); setQuery(""); }}>Clear search</button></p>` : null}
    <table class="list objects" aria-label="Objects">
      <thead><tr>
        <${SortHeader} field="name" label="Name" sort=${sort} setSort=${setSort} />
        <${SortHeader} field="size" label="Size" sort=${sort} setSort=${setSort} className="num" />
        <${SortHeader} field="modified" label="Modified" sort=${sort} setSort=${setSort}
          className="wide-only" />
        <th scope="col"><span class="sr-only">Actions</span></th>
      </tr></thead>
      <tbody>
        ${prefix && !searchPages ? html`<tr><td colspan="4">
          <a class="entry" href=${browseHref(bucket, prefix.split("/").slice(0, -2).join("/") + (prefix.split("/").length > 2 ? "/" : ""))}>
            ${icon("up")}<span>Parent folder</span></a></td></tr>` : null}
        ${entries.map((e) => e.kind === "folder" ? html`<tr key=${e.key} data-folder=${e.key}>
          <td class="name" colspan="3"><a class="entry" href=${browseHref(bucket, e.key)}>
            ${icon(packageFolder(bucket, e.key)?.slice(1) || "folder")}<span>${e.name}/</span></a>
            ${packageFolder(bucket, e.key) ? html`<span class="badge">
              ${FOLDER_TITLES[packageFolder(bucket, e.key)]}</span>` : null}</td>
          <td></td>
        </tr>` : html`<tr key=${e.key} data-key=${e.key}>
          <td class="name"><span class="entry">${icon("file")}<span>${e.name}</span></span></td>
          <td class="num">${formatBytes(e.size)}</td>
          <td class="wide-only">${formatDate(e.modified)}</td>
          <td class="actions">
            <button type="button" class="icon-button" aria-label=${`Download ${e.name}`}
              onClick=${() => download(bucket, e.key).catch(setError)}>${icon("download")}</button>
            <button type="button" class="icon-button" aria-label=${`Share ${e.name}`}
              onClick=${() => setDialog({ type: "share", key: e.key })}>${icon("share")}</button>
            <button type="button" class="icon-button danger" aria-label=${`Delete ${e.name}`}
              onClick=${() => setDialog({ type: "delete", key: e.key })}>${icon("trash")}</button>
          </td>
        </tr>`)}
      </tbody>
    </table>
    ${!listing.loading && !entries.length && !prefix ? html`<p class="muted">This bucket is empty.</p>` : null}
    ${searchPages?.pageInfo?.hasNextPage ? html`<button type="button" onClick=${moreResults}>
      More results</button>` : null}
    ${!searchPages && (page > 0 || truncated) ? html`<nav class="pager" aria-label="Object pages">
      <button type="button" disabled=${page === 0} onClick=${() => setPage(page - 1)}>Previous</button>
      <span>Page ${page + 1}</span>
      <button type="button" disabled=${!truncated} onClick=${() => setPage(page + 1)}>Next</button>
    </nav>` : null}
    ${dialog?.type === "share" ? html`<${ShareDialog} bucket=${bucket} objectKey=${dialog.key}
      onClose=${() => setDialog(null)} />` : null}
    ${dialog?.type === "delete" ? html`<${Confirm} title="Delete object"
      text=${`Delete ${dialog.key}? This cannot be undone.`}
      onConfirm=${async () => { await api.deleteObject(bucket, dialog.key); notify(`Deleted ${dialog.key}`); listing.reload(); }}
      onClose=${() => setDialog(null)} />` : null}
  </section>`;
}

// -- admin -----------------------------------------------------------------------------

function QuotaRow({ quota, onSaved }) {
  const fields = [
    ["max_bytes", "Bytes", true], ["max_objects", "Objects", false],
    ["max_object_size", "Largest object", true],
  ];
  const initial = Object.fromEntries(fields.map(([name, , bytes]) =>
    [name, limitText(quota[name], quota.overrides.includes(name), { bytes })]));
  const [editing, setEditing] = useState(false);
  const [values, setValues] = useState(initial);
  const [error, setError] = useState(null);
  async function save(event) {
    event.preventDefault();
    setError(null);
    try {
      const changes = {};
      for (const [name, , bytes] of fields) {
        if (values[name] !== initial[name]) changes[name] = parseLimit(values[name], { bytes });
      }
      if (Object.keys(changes).length) await api.setQuota(quota.bucket, changes);
      notify(`Quota of ${quota.bucket} saved`);
      setEditing(false);
      onSaved();
    } catch (e) { setError(e); }
  }
  return html`<tr data-bucket=${quota.bucket}>
    <td class="name">${icon(isPackage(quota.bucket) ? "bot" : "bucket")} ${quota.bucket}
      <div class="muted small">${quota.owner}</div></td>
    <td class="usage-cell"><${UsageBars} quota=${quota} /></td>
    <td>${editing ? html`<form class="quota-form" onSubmit=${save}
        aria-label=${`Quota of ${quota.bucket}`}>
      ${fields.map(([name, label]) => html`<label>${label}
        <input name=${name} value=${values[name]} spellcheck="false"
          onInput=${(e) => setValues({ ...values, [name]: e.target.value })} /></label>`)}
      <${ErrorNote} error=${error} />
      <div class="row">
        <button type="submit" class="primary">Save</button>
        <button type="button" onClick=${() => { setEditing(false); setValues(initial); }}>Cancel</button>
      </div>
    </form>` : html`<dl class="limits">
      ${fields.map(([name, label, bytes]) => html`<div><dt>${label}</dt><dd>
        ${quota[name] === null ? "unlimited" : bytes ? formatBytes(quota[name]) : formatCount(quota[name])}
        ${quota.overrides.includes(name) ? "" : html` <span class="muted small">(default)</span>`}
      </dd></div>`)}</dl>
      <button type="button" aria-label=${`Edit quota of ${quota.bucket}`}
        onClick=${() => setEditing(true)}>Edit</button>`}</td>
  </tr>`;
}

function Quotas() {
  const [offset, setOffset] = useState(0);
  const limit = 50;
  const quotas = useLoad(() => api.listQuotas(offset, limit), [offset]);
  const data = quotas.data;
  return html`<section aria-labelledby="quotas-title">
    <h1 id="quotas-title">Quotas</h1>
    <${ErrorNote} error=${quotas.error} />
    ${data ? html`<table class="list quotas">
      <thead><tr><th scope="col">Bucket</th><th scope="col">Usage</th>
        <th scope="col">Limits</th></tr></thead>
      <tbody>${data.buckets.map((q) => html`<${QuotaRow} key=${q.bucket + JSON.stringify(q)}
        quota=${q} onSaved=${quotas.reload} />`)}</tbody>
    </table>
    <${Pager} label="Quota pages" page=${Math.floor(offset / limit)}
      pages=${Math.ceil(data.total / limit)} onPage=${(p) => setOffset(p * limit)} />` : null}
  </section>`;
}

function UserKeys({ user }) {
  const keys = useLoad(() => api.listKeys(user), [user]);
  const [secret, setSecret] = useState(null);
  const [error, setError] = useState(null);
  async function create() {
    try { setSecret(await api.createKey(user)); keys.reload(); } catch (e) { setError(e); }
  }
  async function toggle(key) {
    try { await api.updateKey(key.access_key, !key.enabled); keys.reload(); } catch (e) { setError(e); }
  }
  return html`<div class="keys">
    <${ErrorNote} error=${error || keys.error} />
    ${keys.data ? html`<ul>${keys.data.map((k) => html`<li key=${k.access_key}>
      <code>${k.access_key}</code> ${k.enabled ? "enabled" : html`<span class="badge warn">disabled</span>`}
      <button type="button" onClick=${() => toggle(k)}>${k.enabled ? "Disable" : "Enable"}</button>
    </li>`)}${!keys.data.length ? html`<li class="muted">No S3 keys.</li>` : null}</ul>` : null}
    <button type="button" onClick=${create}>New S3 key</button>
    ${secret ? html`<div class="secret" role="status">
      <p>Store the secret now: it is not shown again.</p>
      <label>Access key <input readonly value=${secret.access_key} /></label>
      <label>Secret key <input readonly value=${secret.secret_key} /></label>
      <button type="button" onClick=${() => setSecret(null)}>Done</button>
    </div>` : null}
  </div>`;
}

function Users({ me }) {
  const users = useLoad(() => api.listUsers(), []);
  const [open, setOpen] = useState(null);
  const [error, setError] = useState(null);
  async function create(event) {
    event.preventDefault();
    const form = event.target;
    const body = { name: form.elements.name.value.trim(), role: form.elements.role.value };
    if (form.elements.password.value) body.password = form.elements.password.value;
    setError(null);
    try {
      await api.createUser(body);
      notify(`User ${body.name} created`);
      form.reset();
      users.reload();
    } catch (e) { setError(e); }
  }
  async function change(name, changes) {
    setError(null);
    try { await api.updateUser(name, changes); users.reload(); } catch (e) { setError(e); }
  }
  return html`<section aria-labelledby="users-title">
    <h1 id="users-title">Users and keys</h1>
    <form class="inline-form wrap" onSubmit=${create} aria-label="New user">
      <label>Name <input name="name" required spellcheck="false" /></label>
      <label>Role <select name="role"><option value="member">member</option>
        <option value="admin">admin</option></select></label>
      <label>Password <input name="password" type="password" autocomplete="new-password"
        minlength="8" /></label>
      <button type="submit" class="primary">Create user</button>
    </form>
    <${ErrorNote} error=${error || users.error} />
    ${users.data ? html`<table class="list users">
      <thead><tr><th scope="col">User</th><th scope="col">Role</th>
        <th scope="col" class="wide-only">Created</th><th scope="col">Actions</th></tr></thead>
      <tbody>${users.data.map((u) => html`<tr key=${u.name} data-user=${u.name}>
        <td class="name">${u.name}${u.display_name ? html` <span class="muted">(${u.display_name})</span>` : null}
          ${u.disabled ? html` <span class="badge warn">disabled</span>` : null}
          ${open === u.name ? html`<${UserKeys} user=${u.name} />` : null}</td>
        <td>${u.role}</td>
        <td class="wide-only">${formatDate(u.created_at)}</td>
        <td class="actions wrap">
          <button type="button" aria-expanded=${open === u.name}
            onClick=${() => setOpen(open === u.name ? null : u.name)}>S3 keys</button>
          ${u.name !== me.username ? html`<button type="button"
            onClick=${() => change(u.name, { disabled: !u.disabled })}>
            ${u.disabled ? "Enable" : "Disable"}</button>` : null}
        </td>
      </tr>`)}</tbody>
    </table>` : null}
  </section>`;
}

function Bots() {
  const [offset, setOffset] = useState(0);
  const limit = 50;
  const bots = useLoad(() => api.adminBots(offset, limit), [offset]);
  const items = bots.data?.data || [];
  const total = bots.data?.pagination?.total ?? items.length;
  return html`<section aria-labelledby="bots-title">
    <h1 id="bots-title">Bots</h1>
    <${ErrorNote} error=${bots.error} />
    ${bots.data && !items.length ? html`<p class="muted">No bots yet.</p>` : null}
    ${items.length ? html`<table class="list bots">
      <thead><tr><th scope="col">Bot</th><th scope="col">Webhook</th>
        <th scope="col">Errors</th><th scope="col">Last error</th></tr></thead>
      <tbody>${items.map((b) => html`<tr key=${b.id} data-bot=${b.name}>
        <td class="name">${icon("bot")} ${b.name}
          <div class="muted small">${b.description || ""}</div></td>
        <td class="break">${b.url || html`<span class="muted">none</span>`}</td>
        <td><span class=${"badge " + (b.error_count ? "warn" : "ok")}
          title=${b.error_count ? "Deliveries are failing" : "Healthy"}>
          ${b.error_count ? `${b.error_count} failing` : "healthy"}</span></td>
        <td>${b.last_error_date ? html`${formatDate(b.last_error_date)}
          <div class="muted small break">${b.last_error_message}</div>` : "—"}</td>
      </tr>`)}</tbody>
    </table>` : null}
    <${Pager} label="Bot pages" page=${Math.floor(offset / limit)}
      pages=${Math.ceil(total / limit)} onPage=${(p) => setOffset(p * limit)} />
  </section>`;
}

// -- the frame -------------------------------------------------------------------------

function Notices() {
  const [notice, setNotice] = useState(null);
  useEffect(() => {
    let timer;
    const listener = (event) => {
      setNotice(event.detail);
      clearTimeout(timer);
      timer = setTimeout(() => setNotice(null), 4000);
    };
    window.addEventListener("console:notify", listener);
    return () => window.removeEventListener("console:notify", listener);
  }, []);
  return html`<div class="notice" role="status" aria-live="polite">${notice?.text || ""}</div>`;
}

function App() {
  const hash = useHash();
  const [me, setMe] = useState(null);
  const [checking, setChecking] = useState(Boolean(api.session.token));
  const refresh = useCallback(() => {
    if (!api.session.token) { setMe(null); setChecking(false); return; }
    api.me().then((who) => { setMe(who); setChecking(false); },
      () => { setMe(null); setChecking(false); });
  }, []);
  useEffect(() => {
    refresh();
    const out = () => setMe(null);
    window.addEventListener("console:logged-out", out);
    return () => window.removeEventListener("console:logged-out", out);
  }, []);

  if (checking) return html`<p class="muted center">Loading…</p>`;
  if (!me) return html`<${Login} onLogin=${refresh} />`;

  const route = parseRoute(hash);
  const admin = me.role === "admin" && me.permissions.includes("admin");
  const nav = [["#/", "Buckets", route.view !== "admin"]];
  if (admin) {
    nav.push(["#/admin/quotas", "Quotas", route.view === "admin" && route.page === "quotas"],
      ["#/admin/users", "Users", route.view === "admin" && route.page === "users"],
      ["#/admin/bots", "Bots", route.view === "admin" && route.page === "bots"]);
  }
  let body;
  if (route.view === "browse") body = html`<${Browser} bucket=${route.bucket} prefix=${route.prefix} />`;
  else if (route.view === "admin" && admin) {
    body = route.page === "users" ? html`<${Users} me=${me} />`
      : route.page === "bots" ? html`<${Bots} />` : html`<${Quotas} />`;
  } else body = html`<${BucketList} />`;

  return html`<div class="frame">
    <header class="top">
      <a href="#/" class="brand">${icon("bucket")}<span>Gateway</span></a>
      <nav aria-label="Main"><ul>${nav.map(([href, label, current]) => html`<li>
        <a href=${href} aria-current=${current ? "page" : undefined}>${label}</a></li>`)}</ul></nav>
      <div class="who">
        <span aria-label="Signed in as">${me.username}${admin ? " (admin)" : ""}</span>
        <button type="button" onClick=${() => api.logout().finally(() => setMe(null))}>Sign out</button>
      </div>
    </header>
    <main id="main">${body}</main>
    <${Notices} />
  </div>`;
}

render(html`<${App} />`, document.getElementById("app"));
