// Uploads through the JSON API. Small files: one streamed PUT. Large ones: a multipart
// upload whose parts go up a few at a time, in parallel, then one complete call. Progress
// comes from XMLHttpRequest's upload events (fetch has none); cancelling aborts the
// requests in flight and, for a multipart upload, the upload itself, freeing its parts.

import { API, authHeaders, errorOf, objectPath } from "./api.js";

const MiB = 1024 * 1024;
export const MULTIPART_THRESHOLD = 16 * MiB;
export const PART_SIZE = 8 * MiB; // above S3's 5 MiB minimum for all but the last part
export const PARALLEL_PARTS = 3;
const PART_ATTEMPTS = 2;

class Cancelled extends Error {
  constructor() { super("Cancelled"); this.cancelled = true; }
}

/** One request by XMLHttpRequest; resolves with the parsed JSON answer. */
function send(method, path, body, { headers = {}, onProgress, track } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, API + path);
    for (const [name, value] of Object.entries({ ...authHeaders(), ...headers })) {
      xhr.setRequestHeader(name, value);
    }
    xhr.responseType = "text";
    if (onProgress) xhr.upload.onprogress = (event) => onProgress(event.loaded);
    xhr.onload = () => {
      track?.delete(xhr);
      let data = null;
      try { data = xhr.responseText ? JSON.parse(xhr.responseText) : null; } catch { /* */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(errorOf(xhr.status, data));
    };
    xhr.onerror = () => { track?.delete(xhr); reject(new Error("Network error")); };
    xhr.onabort = () => { track?.delete(xhr); reject(new Cancelled()); };
    track?.add(xhr);
    xhr.send(body);
  });
}

function json(value) {
  return [JSON.stringify(value), { "Content-Type": "application/json" }];
}

/**
 * Start uploading `file` to `bucket`/`key`. `onProgress(loaded, total)` is called as bytes
 * leave. Returns {done: Promise, cancel(), multipart: boolean}.
 */
export function startUpload(bucket, key, file, onProgress) {
  const inFlight = new Set();
  let cancelled = false;
  const contentType = file.type || "application/octet-stream";
  const path = objectPath(bucket, key);
  const multipart = file.size > MULTIPART_THRESHOLD;
  let uploadId = null;

  async function single() {
    await send("PUT", path, file, {
      headers: { "Content-Type": contentType },
      onProgress: (loaded) => onProgress(loaded, file.size),
      track: inFlight,
    });
  }

  async function parts() {
    const [body, headers] = json({ content_type: contentType });
    const started = await send("POST", `${path}/multipart`, body, { headers, track: inFlight });
    uploadId = started.upload_id;
    const count = Math.ceil(file.size / PART_SIZE);
    const loaded = new Array(count).fill(0);
    const report = () => onProgress(loaded.reduce((a, b) => a + b, 0), file.size);
    const done = [];
    let next = 0;

    async function worker() {
      while (next < count) {
        const index = next++;
        const blob = file.slice(index * PART_SIZE, Math.min(file.size, (index + 1) * PART_SIZE));
        for (let attempt = 1; ; attempt++) {
          if (cancelled) throw new Cancelled();
          try {
            const answer = await send("PUT", `${path}/multipart/${uploadId}/${index + 1}`, blob, {
              headers: { "Content-Type": "application/octet-stream" },
              onProgress: (n) => { loaded[index] = n; report(); },
              track: inFlight,
            });
            done.push({ part_number: index + 1, etag: answer.etag });
            loaded[index] = blob.size;
            report();
            break;
          } catch (error) {
            loaded[index] = 0;
            if (error.cancelled || attempt >= PART_ATTEMPTS || (error.status && error.status < 500)) {
              throw error;
            }
          }
        }
      }
    }

    try {
      if (cancelled) throw new Cancelled();
      await Promise.all(Array.from({ length: Math.min(PARALLEL_PARTS, count) }, worker));
      done.sort((a, b) => a.part_number - b.part_number);
      const [body2, headers2] = json({ parts: done });
      await send("POST", `${path}/multipart/${uploadId}/complete`, body2,
        { headers: headers2, track: inFlight });
    } catch (error) {
      cancelled = true;
      for (const xhr of inFlight) xhr.abort();
      // Free the parts already stored (they count against the quota until then).
      send("DELETE", `${path}/multipart/${uploadId}`, null).catch(() => {});
      throw error;
    }
  }

  const done = multipart ? parts() : single();
  return {
    done,
    multipart,
    cancel() {
      cancelled = true;
      for (const xhr of [...inFlight]) xhr.abort();
    },
  };
}
