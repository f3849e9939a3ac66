// The "web app" side of tests/test_browser.py: everything a browser uploader does with
// presigned URLs and POST policies handed out by its backend. Playwright calls window.app.*.
"use strict";

const BLOCK = 65536;

function log(message, cls) {
  const line = document.createElement("div");
  line.textContent = message;
  if (cls) line.className = cls;
  document.getElementById("log").appendChild(line);
  console.log(message);
}

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function sha256(data) {
  const buffer = data instanceof Blob ? await data.arrayBuffer() : data;
  return hex(await crypto.subtle.digest("SHA-256", buffer));
}

// Deterministic bytes, reproduced by tests/test_browser.py:deterministic_bytes: a 64 KiB block
// from a 31-bit LCG, XORed with the block number.
function deterministicBytes(size, seed) {
  const block = new Uint8Array(BLOCK);
  let x = seed;
  for (let i = 0; i < BLOCK; i++) {
    x = (Math.imul(x, 1103515245) + 12345) & 0x7fffffff;
    block[i] = (x >>> 16) & 0xff;
  }
  const out = new Uint8Array(size);
  for (let offset = 0, n = 0; offset < size; offset += BLOCK, n++) {
    const length = Math.min(BLOCK, size - offset);
    const k = n & 0xff;
    for (let j = 0; j < length; j++) out[offset + j] = block[j] ^ k;
  }
  return out;
}

function describeError(error) {
  return `${error.name}: ${error.message}`;
}

// PUT a generated Blob to a presigned URL (a non-simple request: the browser preflights it).
async function putBlob(url, contentType, size, seed) {
  const bytes = deterministicBytes(size, seed);
  const blob = new Blob([bytes], { type: contentType });
  const digest = await sha256(bytes.buffer);
  log(`PUT ${size} bytes (sha256 ${digest.slice(0, 16)}…) as ${contentType}`);
  try {
    const response = await fetch(url, {
      method: "PUT", body: blob, headers: { "Content-Type": contentType },
      signal: AbortSignal.timeout(30000),
    });
    const body = await response.text();
    const result = {
      status: response.status, ok: response.ok, etag: response.headers.get("ETag"),
      requestId: response.headers.get("x-amz-request-id"), sha256: digest, size,
      body: body.slice(0, 2000),
    };
    log(`PUT -> ${response.status} ETag ${result.etag}`, response.ok ? "ok" : "fail");
    return result;
  } catch (error) {
    log(`PUT failed: ${describeError(error)}`, "fail");
    return { error: describeError(error), sha256: digest, size };
  }
}

// A multipart/form-data form like an uploader page renders it from a backend's presigned POST:
// the policy fields first, the file input last (S3 ignores fields after the file).
function buildForm(id, title, action, fields) {
  const form = document.createElement("form");
  form.id = id;
  form.method = "POST";
  form.enctype = "multipart/form-data";
  form.action = action;
  const heading = document.createElement("h2");
  heading.textContent = title;
  form.appendChild(heading);
  for (const [name, value] of fields) {
    const input = document.createElement("input");
    input.type = "hidden";
    input.name = name;
    input.value = value;
    form.appendChild(input);
  }
  const file = document.createElement("input");
  file.type = "file";
  file.name = "file";
  // The Content-Type field follows the chosen file, as uploader pages do.
  file.addEventListener("change", () => {
    const chosen = file.files[0];
    const type = form.querySelector('input[name="Content-Type"]');
    if (chosen && type) type.value = chosen.type || "application/octet-stream";
  });
  form.appendChild(file);
  const submit = document.createElement("button");
  submit.type = "submit";
  submit.textContent = "Upload";
  form.appendChild(submit);
  document.getElementById("forms").appendChild(form);
  log(`form ${id}: POST ${action} with ${fields.map(([n]) => n).join(", ")}, file`);
}

function setField(id, name, value) {
  document.querySelector(`#${id} input[name="${name}"]`).value = value;
}

async function chosenFile(id) {
  const file = document.querySelector(`#${id} input[type=file]`).files[0];
  return { name: file.name, size: file.size, type: file.type, sha256: await sha256(file) };
}

// Submit a form's FormData with fetch (a simple CORS request) and read S3's XML answer.
async function postForm(id) {
  const form = document.getElementById(id);
  const file = await chosenFile(id);
  log(`POST ${file.name} (${file.size} bytes, ${file.type}) via fetch`);
  try {
    const response = await fetch(form.action, {
      method: "POST", body: new FormData(form), signal: AbortSignal.timeout(30000),
    });
    const body = await response.text();
    const xml = new DOMParser().parseFromString(body, "application/xml");
    const text = (name) => xml.getElementsByTagName(name)[0]?.textContent ?? null;
    const result = {
      status: response.status, etag: response.headers.get("ETag"), body: body.slice(0, 2000),
      root: xml.documentElement?.nodeName ?? null, location: text("Location"),
      bucket: text("Bucket"), key: text("Key"), xmlEtag: text("ETag"), code: text("Code"),
      file,
    };
    log(`POST -> ${response.status} ` + (result.code ? `${result.code}: ${text("Message")}`
        : `Key ${result.key} ETag ${result.xmlEtag}`), response.status === 201 ? "ok" : "fail");
    return result;
  } catch (error) {
    log(`POST failed: ${describeError(error)}`, "fail");
    return { error: describeError(error), file };
  }
}

// GET a presigned URL (a simple CORS request) and hash what arrived.
async function download(url) {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(30000) });
    const buffer = await response.arrayBuffer();
    const result = {
      status: response.status, size: buffer.byteLength, sha256: await sha256(buffer),
      etag: response.headers.get("ETag"), contentType: response.headers.get("Content-Type"),
      contentDisposition: response.headers.get("Content-Disposition"),
      body: response.ok ? null : new TextDecoder().decode(buffer.slice(0, 2000)),
    };
    log(`GET -> ${response.status} ${result.size} bytes sha256 ${result.sha256.slice(0, 16)}…`,
        response.ok ? "ok" : "fail");
    return result;
  } catch (error) {
    log(`GET failed: ${describeError(error)}`, "fail");
    return { error: describeError(error) };
  }
}

document.getElementById("origin").textContent = `origin: ${location.origin}`;
window.app = {
  log, sha256, deterministicBytes, putBlob, buildForm, setField, chosenFile, postForm, download,
};
