// Inline SVG icons (24×24, stroked in the text colour). Decorative: the text beside each
// says what it is, so they are hidden from assistive technology.
import { html } from "./html.js";

const PATHS = {
  bucket: ["M4 6c0-1.7 3.6-3 8-3s8 1.3 8 3-3.6 3-8 3-8-1.3-8-3z",
    "M4 6l1.6 13c.2 1.2 3 2 6.4 2s6.2-.8 6.4-2L20 6"],
  bot: ["M5 9h14a1 1 0 0 1 1 1v9a1 1 0 0 1-1 1H5a1 1 0 0 1-1-1v-9a1 1 0 0 1 1-1z",
    "M12 9V5", "M12 3.5a.5.5 0 1 0 0 .01", "M9 14h.01", "M15 14h.01", "M9.5 17h5",
    "M2 13v3", "M22 13v3"],
  folder: ["M3 7a2 2 0 0 1 2-2h4l2 2h8a2 2 0 0 1 2 2v9a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2z"],
  file: ["M6 2h8l6 6v12a2 2 0 0 1-2 2H6a2 2 0 0 1-2-2V4a2 2 0 0 1 2-2z", "M14 2v6h6"],
  gbkb: ["M3 5h6a3 3 0 0 1 3 3v12a2 2 0 0 0-2-2H3z",
    "M21 5h-6a3 3 0 0 0-3 3v12a2 2 0 0 1 2-2h7z"],
  gbdialog: ["M21 14a2 2 0 0 1-2 2H8l-5 4V6a2 2 0 0 1 2-2h14a2 2 0 0 1 2 2z", "M8 9h8",
    "M8 12h5"],
  gbtheme: ["M12 3a9 9 0 1 0 0 18c1 0 1.6-.7 1.6-1.6 0-.4-.2-.8-.4-1.1-.3-.3-.4-.6-.4-1 "
    + "0-.9.7-1.6 1.6-1.6H16a5 5 0 0 0 5-5c0-4.3-4-7.7-9-7.7z",
  "M7.5 11.5h.01", "M10.5 7.5h.01", "M15.5 8.5h.01"],
  gbdrive: ["M22 13H2", "M5.5 5.5 2 13v5a2 2 0 0 0 2 2h16a2 2 0 0 0 2-2v-5l-3.5-7.5z",
    "M6 16.5h.01", "M10 16.5h.01"],
  up: ["M12 19V5", "M5 12l7-7 7 7"],
  upload: ["M12 16V4", "M7 9l5-5 5 5", "M4 16v3a1 1 0 0 0 1 1h14a1 1 0 0 0 1-1v-3"],
  download: ["M12 4v12", "M7 11l5 5 5-5", "M4 16v3a1 1 0 0 0 1 1h14a1 1 0 0 0 1-1v-3"],
  share: ["M10 13a5 5 0 0 0 7.5.5l3-3a5 5 0 0 0-7-7l-1.7 1.7",
    "M14 11a5 5 0 0 0-7.5-.5l-3 3a5 5 0 0 0 7 7l1.7-1.7"],
  trash: ["M3 6h18", "M8 6V4h8v2", "M6 6l1 14h10l1-14"],
  search: ["M11 18a7 7 0 1 0 0-14 7 7 0 0 0 0 14z", "M21 21l-5-5"],
  x: ["M6 6l12 12", "M18 6L6 18"],
};

export function icon(name, label) {
  const paths = PATHS[name] || PATHS.file;
  return html`<svg class=${"icon icon-" + name} data-icon=${name} viewBox="0 0 24 24"
    width="20" height="20" fill="none" stroke="currentColor" stroke-width="1.8"
    stroke-linecap="round" stroke-linejoin="round" focusable="false"
    aria-hidden=${label ? undefined : "true"} role=${label ? "img" : undefined}
    aria-label=${label}>${paths.map((d) => html`<path d=${d} />`)}</svg>`;
}

export const PACKAGE_SUFFIX = ".gbai";
export const PACKAGE_FOLDERS = [".gbkb", ".gbdialog", ".gbtheme", ".gbdrive"];

export const isPackage = (bucket) => bucket.endsWith(PACKAGE_SUFFIX);

/**
 * The package folder a prefix is, if any: in a `*.gbai` bucket, a first path segment
 * ending in `.gbkb`, `.gbdialog`, `.gbtheme` or `.gbdrive` (as the gateway's rules read it).
 */
export function packageFolder(bucket, prefix) {
  if (!isPackage(bucket)) return null;
  const segments = prefix.split("/").filter(Boolean);
  if (segments.length !== 1) return null;
  return PACKAGE_FOLDERS.find((name) => segments[0].endsWith(name)) || null;
}

export const FOLDER_TITLES = {
  ".gbkb": "Knowledge base", ".gbdialog": "Dialogs and tools", ".gbtheme": "Theme",
  ".gbdrive": "Drive",
};
