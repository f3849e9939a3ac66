// Numbers, sizes and dates for people, and sizes typed by them.

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

export function formatBytes(n) {
  if (n === null || n === undefined) return "—";
  let value = Number(n);
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) { value /= 1024; unit++; }
  const digits = unit === 0 || value >= 100 ? 0 : 1;
  return `${value.toFixed(digits)} ${UNITS[unit]}`;
}

export function formatCount(n) {
  return n === null || n === undefined ? "—" : Number(n).toLocaleString("en");
}

export function formatDate(value) {
  if (!value) return "—";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toISOString().replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC");
}

const FACTORS = {
  "": 1, b: 1, k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12,
  kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, tib: 1024 ** 4, pib: 1024 ** 5,
};

/**
 * A limit as typed: "10 GiB", "500MB", "1000", "unlimited" (null), "default" (the
 * gateway's setting). Throws on anything else.
 */
export function parseLimit(text, { bytes = true } = {}) {
  const value = String(text).trim().toLowerCase();
  if (value === "default") return "default";
  if (value === "unlimited" || value === "none" || value === "∞") return null;
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/.exec(value.replace(/,/g, ""));
  if (!match || !(match[2] in FACTORS) || (!bytes && match[2] && !"kmgt".includes(match[2][0]))) {
    throw new Error(`"${text}" is not a ${bytes ? "size (e.g. 10 GiB)" : "number"}, `
      + "\"unlimited\" or \"default\"");
  }
  return Math.round(Number(match[1]) * FACTORS[match[2]]);
}

/** A limit as the edit field shows it. */
export function limitText(value, overridden, { bytes = true } = {}) {
  if (!overridden) return "default";
  if (value === null || value === undefined) return "unlimited";
  return bytes ? formatBytes(value).replace(/\.0 /, " ") : String(value);
}
