// Uploads. Small files: one streamed PUT through the JSON API. Large ones: a multipart
// upload whose parts go up a few at a time, in parallel, then one complete call. Each part
// goes straight to the S3 endpoint through a presigned UploadPart URL (the JSON API signs
// it with one of the user's S3 keys after checking the upload is theirs), so the part bytes
// never carry the login token; a user without an S3 key sends the parts through the JSON
// API's part endpoint instead. Progress comes from XMLHttpRequest's upload events (fetch
// has none); cancelling aborts the requests in flight and, for a multipart upload, the
// upload itself, freeing its parts.

import { API, ApiError, authHeaders, errorOf, objectPath } from "./api.js";

const MiB = 1024 * 1024;
export const MULTIPART_THRESHOLD = 16 * MiB;
export const PART_SIZE = 8 * MiB; // above S3's 5 MiB minimum for all but the last part
export const PARALLEL_PARTS = 3;
const PART_ATTEMPTS = 2;
// A part URL is used at once; a short life keeps a leaked one from being worth much.
const PART_URL_SECONDS = 900;

class Cancelled extends Error {
  constructor() { super("Cancelled"); this.cancelled = true; }
}

/** One request by XMLHttpRequest to `url`; resolves with the finished request (2xx). */
function request(method, url, body, { headers = {}, onProgress, track, errorFrom } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url);
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    xhr.responseType = "text";
    if (onProgress) xhr.upload.onprogress = (event) => onProgress(event.loaded);
    xhr.onload = () => {
      track?.delete(xhr);
      if (xhr.status >= 200 && xhr.status < 300) resolve(xhr);
      else reject(errorFrom(xhr));
    };
    xhr.onerror = () => { track?.delete(xhr); reject(new Error("Network error")); };
    xhr.onabort = () => { track?.delete(xhr); reject(new Cancelled()); };
    track?.add(xhr);
    xhr.send(body);
  });
}

function parsed(xhr) {
  try { return xhr.responseText ? JSON.parse(xhr.responseText) : null; } catch { return null; }
}

/** A JSON API call by XMLHttpRequest; resolves with the parsed JSON answer. */
async function send(method, path, body, { headers = {}, onProgress, track } = {}) {
  const xhr = await request(method, API + path, body, {
    headers: { ...authHeaders(), ...headers }, onProgress, track,
    errorFrom: (failed) => errorOf(failed.status, parsed(failed)),
  });
  return parsed(xhr);
}

/** The error of an S3 answer: its XML body's Code and Message. */
function s3Error(xhr) {
  const doc = new DOMParser().parseFromString(xhr.responseText || "", "application/xml");
  const text = (name) => doc.getElementsByTagName(name)[0]?.textContent || undefined;
  return new ApiError(xhr.status, text("Code") || "HTTP_" + xhr.status,
    text("Message") || `The server answered ${xhr.status}`);
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
  // Parts go by presigned URL until the API says the user has no S3 key to sign with.
  let presigned = true;

  async function single() {
    await send("PUT", path, file, {
      headers: { "Content-Type": contentType },
      onProgress: (loaded) => onProgress(loaded, file.size),
      track: inFlight,
    });
  }

  /** A presigned UploadPart URL, or null when the user has no S3 key (409). */
  async function partUrl(number) {
    const [body, headers] = json({
      operation: "PUT", upload_id: uploadId, part_number: number,
      expires_in: PART_URL_SECONDS,
    });
    try {
      const signed = await send("POST", `${path}/presign`, body, { headers, track: inFlight });
      return signed.url;
    } catch (error) {
      if (error.status === 409) return null;
      throw error;
    }
  }

  /** Send one part; resolves with its ETag. */
  async function sendPart(number, blob, onPartProgress) {
    const url = presigned ? await partUrl(number) : null;
    // A cancel that came while the URL was being signed found nothing in flight to abort.
    if (cancelled) throw new Cancelled();
    if (url) {
      const xhr = await request("PUT", url, blob, {
        onProgress: onPartProgress, track: inFlight, errorFrom: s3Error,
      });
      const etag = xhr.getResponseHeader("ETag");
      if (!etag) throw new Error(`Part ${number} came back without an ETag`);
      return etag;
    }
    presigned = false;
    const answer = await send("PUT", `${path}/multipart/${uploadId}/${number}`, blob, {
      headers: { "Content-Type": "application/octet-stream" },
      onProgress: onPartProgress,
      track: inFlight,
    });
    return answer.etag;
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
            const etag = await sendPart(index + 1, blob, (n) => { loaded[index] = n; report(); });
            done.push({ part_number: index + 1, etag });
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
