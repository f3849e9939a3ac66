"""Bot packages: the rules of a ``<bot>.gbai`` bucket's folders, and the inspection every
upload passes before it commits.

A package holds ``.gbkb/`` (knowledge-base documents and data), ``.gbdialog/`` (scripts and
tools), ``.gbtheme/`` (css, fonts, images) and ``.gbdrive/`` (attachments, temp). A folder is
the first path segment ending in one of those names, so both ``.gbkb/faq.pdf`` and the
General Bots style ``mybot.gbkb/faq.pdf`` are in the knowledge base.

Each folder's rule names the extensions it accepts and what their bytes must look like
(sniffed from the first bytes: a ``.pdf`` that is not a PDF, or a ``.bas`` script that is not
text, is refused), a largest size, whether its objects are public, and cache headers. The
extension and size are checked before the body is taken; the content while it streams
(the first 8 KiB), together with the malware scanner, which sees every byte. A refused
upload raises before the backend finishes the blob, so nothing is stored, and is recorded
in ``upload_rejections``.

The rules can be replaced folder by folder with a JSON file (``GATEWAY_PACKAGE_RULES``)::

    {"folders": {".gbdialog": {"extensions": {".bas": "text", ".json": "text"},
                               "max_size": "512KiB"}}}

Scanning applies to every bucket, not only packages, when a scanner is configured.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import filetype
from sqlalchemy import and_, func, insert, select, true

from gateway import errors
from gateway.metadata.models import upload_rejections
from gateway.settings import parse_limit
from gateway.types import ObjectAttributes

if TYPE_CHECKING:
    from gateway.service.context import Context
    from gateway.service.scanning import Scanner, ScanSession

log = logging.getLogger("gateway.service")

PACKAGE_SUFFIX = ".gbai"
FOLDERS = (".gbkb", ".gbdialog", ".gbtheme", ".gbdrive")
#: The subfolders a new package starts with.
LAYOUT: dict[str, tuple[str, ...]] = {
    ".gbkb": ("docs", "data"),
    ".gbdialog": ("scripts", "tools"),
    ".gbtheme": ("css", "images"),
    ".gbdrive": ("attachments", "temp"),
}
#: Objects under ``<x>.gbdrive/temp/`` expire (``GATEWAY_TEMP_EXPIRY``).
TEMP_FOLDER = "temp/"
SNIFF_BYTES = 8192

#: What a kind of content looks like: ``text`` (UTF-8 without NUL bytes), ``svg`` (text
#: holding an ``<svg`` element), or the MIME types ``filetype`` recognises.
_KIND_MIMES: dict[str, frozenset[str]] = {
    "pdf": frozenset({"application/pdf"}),
    "docx": frozenset({"application/vnd.openxmlformats-officedocument.wordprocessingml.document"}),
    "xlsx": frozenset({"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}),
    "pptx": frozenset({
        "application/vnd.openxmlformats-officedocument.presentationml.presentation"}),
    "odf": frozenset({"application/vnd.oasis.opendocument.text",
                      "application/vnd.oasis.opendocument.spreadsheet",
                      "application/vnd.oasis.opendocument.presentation"}),
    "png": frozenset({"image/png"}),
    "jpeg": frozenset({"image/jpeg"}),
    "gif": frozenset({"image/gif"}),
    "webp": frozenset({"image/webp"}),
    "ico": frozenset({"image/x-icon"}),
    "font": frozenset({"application/font-woff", "font/woff", "font/woff2", "application/font-sfnt",
                       "font/ttf", "font/otf", "application/font-woff2"}),
    "epub": frozenset({"application/epub+zip"}),
}
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # .doc/.xls/.ppt (OLE compound file)
_TEXT_KINDS = frozenset({"text", "svg"})
KINDS = frozenset({*_KIND_MIMES, *_TEXT_KINDS, "ole", "any"})

_TEXT = "text"
_DEFAULT_RULES: dict[str, dict[str, Any]] = {
    ".gbkb": {
        "extensions": {
            ".pdf": "pdf", ".docx": "docx", ".xlsx": "xlsx", ".pptx": "pptx",
            ".odt": "odf", ".ods": "odf", ".odp": "odf", ".epub": "epub",
            ".doc": "ole", ".xls": "ole", ".ppt": "ole",
            **{ext: _TEXT for ext in (".txt", ".md", ".markdown", ".csv", ".tsv", ".json",
                                      ".jsonl", ".xml", ".html", ".htm", ".yaml", ".yml",
                                      ".rst", ".rtf")},
        },
        "max_size": "100MiB",
    },
    ".gbdialog": {
        "extensions": {ext: _TEXT for ext in (".bas", ".txt", ".json", ".yaml", ".yml",
                                              ".md")},
        "max_size": "1MiB",
    },
    ".gbtheme": {
        "extensions": {
            ".css": _TEXT, ".scss": _TEXT, ".svg": "svg", ".png": "png", ".jpg": "jpeg",
            ".jpeg": "jpeg", ".gif": "gif", ".webp": "webp", ".ico": "ico",
            ".woff": "font", ".woff2": "font", ".ttf": "font", ".otf": "font",
        },
        "max_size": "10MiB",
        "public": True,
        "cache_control": "public, max-age=3600",
    },
    ".gbdrive": {"extensions": None, "max_size": None},
}


@dataclass(frozen=True, slots=True)
class FolderRule:
    folder: str
    #: extension (lower case, with its dot) -> the kind its bytes must be; None: anything.
    extensions: Mapping[str, str] | None
    max_size: int | None = None
    #: Objects written here are readable by anyone (``public-read``), with this
    #: ``Cache-Control`` unless the writer gave one.
    public: bool = False
    cache_control: str | None = None

    def kind_for(self, key: str) -> str | None:
        """The kind an object's bytes must be; raises when its extension is not allowed."""
        if self.extensions is None:
            return None
        name = key.rsplit("/", 1)[-1]
        ext = ("." + name.rsplit(".", 1)[1].lower()) if "." in name.lstrip(".") else ""
        kind = self.extensions.get(ext)
        if kind is None:
            allowed = ", ".join(sorted(self.extensions))
            raise UnsupportedFileType(
                f"{self.folder}/ accepts {allowed}; not {ext or 'files without an extension'}",
                fields={"Key": key})
        return kind


class UnsupportedFileType(errors.GatewayError):
    code = "UnsupportedFileType"
    status = 415
    default_message = "This folder of the bot package does not accept this type of file."


class MalwareDetected(errors.GatewayError):
    code = "MalwareDetected"
    status = 422
    default_message = "The upload was refused: the malware scanner found a threat in it."


class Unscannable(MalwareDetected):
    """The scanner answered but could not vouch for the bytes (too large for its limits,
    an archive it cannot open): refused, since an unscanned upload is not a clean one."""

    code = "UnscannableContent"
    default_message = "The upload was refused: the malware scanner could not scan it."


def _rule(folder: str, spec: Mapping[str, Any]) -> FolderRule:
    exts = spec.get("extensions")
    if exts is not None:
        if not isinstance(exts, Mapping):
            raise ValueError(f"{folder}: extensions must map an extension to a kind")
        unknown = {k for k in exts.values() if k not in KINDS}
        if unknown:
            raise ValueError(f"{folder}: unknown kinds {sorted(unknown)}; use {sorted(KINDS)}")
        exts = {(e if e.startswith(".") else "." + e).lower(): k for e, k in exts.items()}
    size = spec.get("max_size")
    max_size = parse_limit(str(size)) if size is not None else None
    return FolderRule(folder, exts, max_size, bool(spec.get("public", False)),
                      spec.get("cache_control"))


def load_rules(path: str = "") -> dict[str, FolderRule]:
    specs: dict[str, Mapping[str, Any]] = dict(_DEFAULT_RULES)
    if path:
        loaded = json.loads(Path(path).read_text())
        folders = loaded.get("folders", {}) if isinstance(loaded, dict) else None
        if not isinstance(folders, dict) or set(folders) - set(FOLDERS):
            raise ValueError(f"{path}: expected {{\"folders\": {{…}}}} with keys among "
                             f"{', '.join(FOLDERS)}")
        specs.update(folders)
    return {folder: _rule(folder, spec) for folder, spec in specs.items()}


def is_package(bucket: str) -> bool:
    return bucket.endswith(PACKAGE_SUFFIX)


def folder_of(key: str) -> tuple[str, str] | None:
    """The package folder a key is in, and the key's path below it; None for others."""
    first, sep, rest = key.partition("/")
    if not sep:
        return None
    for folder in FOLDERS:
        if first == folder or first.endswith(folder):
            return folder, rest
    return None


def is_folder_marker(key: str, size: int | None) -> bool:
    return key.endswith("/") and (size or 0) == 0


def looks_like(kind: str, head: bytes) -> bool:
    """Whether the first bytes of an object are of ``kind``."""
    if kind == "any":
        return True
    if kind in _TEXT_KINDS:
        if b"\x00" in head:
            return False
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError as exc:
            # A multi-byte character cut by the sniffing window is still text.
            if exc.start < len(head) - 3:
                return False
            text = head[:exc.start].decode("utf-8")
        return kind == _TEXT or "<svg" in text
    if kind == "ole":
        return head.startswith(_OLE)
    guessed = filetype.guess(head)
    return guessed is not None and guessed.mime in _KIND_MIMES[kind]


class Inspection:
    """What one upload must pass: the folder rule's content check and the scanner. Feed it
    every chunk in order, then ``finish()`` — it raises when the upload must not commit."""

    def __init__(self, key: str, kind: str | None, session: ScanSession | None) -> None:
        self.key = key
        self.kind = kind
        self.session = session
        self._head = bytearray()
        self._sniffed = kind is None

    async def feed(self, chunk: bytes) -> None:
        if not self._sniffed:
            self._head += chunk[:SNIFF_BYTES - len(self._head)]
            if len(self._head) >= SNIFF_BYTES:
                self._sniff()
        if self.session is not None and chunk:
            try:
                await self.session.feed(chunk)
            except Exception as exc:
                raise _unavailable(exc) from None

    def _sniff(self) -> None:
        self._sniffed = True
        assert self.kind is not None
        if not looks_like(self.kind, bytes(self._head)):
            raise UnsupportedFileType(
                f"The content of {self.key.rsplit('/', 1)[-1]} is not {self.kind}, as its "
                "extension says", fields={"Key": self.key})

    async def finish(self) -> None:
        if not self._sniffed:
            self._sniff()
        if self.session is not None:
            try:
                verdict = await self.session.finish()
            except Exception as exc:
                raise _unavailable(exc) from None
            if not verdict.clean and verdict.signature is None:
                raise Unscannable(
                    f"The upload was refused: the malware scanner could not scan it "
                    f"({verdict.error or 'no verdict'})",
                    fields={"Key": self.key})
            if not verdict.clean:
                raise MalwareDetected(
                    f"The upload was refused: {verdict.signature or 'a threat'} found",
                    fields={"Key": self.key, "Signature": verdict.signature or ""})

    async def aclose(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            try:
                await session.aclose()
            except Exception:
                log.debug("closing a scanner session failed", exc_info=True)


@dataclass
class InspectedBody:
    """A request body whose chunks pass an :class:`Inspection` on their way to the
    backend; the inspection's verdict is asked before the last chunk is handed over, so a
    refused upload never completes its blob."""

    inner: Any
    inspection: Inspection

    def __getattr__(self, name: str) -> Any:
        # size, md5_hex, checksum_* … are the inner (verifying) body's.
        return getattr(self.inner, name)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        held: bytes | None = None
        try:
            async for chunk in self.inner:
                await self.inspection.feed(chunk)
                if held is not None:
                    yield held
                held = chunk
            await self.inspection.finish()
            if held is not None:
                yield held
        finally:
            await self.inspection.aclose()


class PackageService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.rules = load_rules(ctx.settings.package_rules)
        self._scanner: Scanner | None = None
        self._scanner_made = False

    @property
    def scanner(self) -> Scanner | None:
        if not self._scanner_made:
            self._scanner_made = True
            if self.ctx.settings.clamav:
                from gateway.service.scanning import scanner_from_settings

                self._scanner = scanner_from_settings(self.ctx.settings)
        return self._scanner

    def rule_for(self, bucket: str, key: str) -> FolderRule | None:
        if not is_package(bucket):
            return None
        found = folder_of(key)
        return self.rules.get(found[0]) if found else None

    def adjust_attrs(self, bucket: str, key: str, attrs: ObjectAttributes) -> ObjectAttributes:
        """A public folder's objects are public-read and cached, unless the writer chose."""
        rule = self.rule_for(bucket, key)
        if rule is None or not rule.public:
            return attrs
        headers = dict(attrs.headers)
        if rule.cache_control and "Cache-Control" not in headers:
            headers["Cache-Control"] = rule.cache_control
        acl = "public-read" if attrs.acl == "private" else attrs.acl
        return ObjectAttributes(content_type=attrs.content_type,
                                user_metadata=attrs.user_metadata, headers=headers,
                                storage_class=attrs.storage_class, acl=acl,
                                tags=attrs.tags)

    async def precheck(self, bucket: str, key: str, size: int | None,
                       principal: str | None = None) -> Inspection | None:
        """Refuse what the key and size already tell; the inspection the bytes must pass
        (None: nothing to inspect)."""
        if is_folder_marker(key, size) and self.rule_for(bucket, key) is not None:
            return None
        kind = await self.check_name_and_size(bucket, key, size, principal)
        scanner = self.scanner
        if kind is None and scanner is None:
            return None
        session = None
        if scanner is not None:
            try:
                session = await scanner.session()
            except Exception as exc:
                raise _unavailable(exc) from None
        return Inspection(key, kind, session)

    async def check_name_and_size(self, bucket: str, key: str, size: int | None,
                                  principal: str | None = None) -> str | None:
        """The kind the bytes must be (None: any); raises, and records, when the folder
        does not take this name or size."""
        rule = self.rule_for(bucket, key)
        if rule is None or is_folder_marker(key, size):
            return None
        try:
            if rule.max_size is not None and size is not None and size > rule.max_size:
                raise errors.EntityTooLarge(
                    f"{rule.folder}/ takes objects of at most {rule.max_size} bytes",
                    fields={"MaxSizeAllowed": str(rule.max_size), "Key": key})
            return rule.kind_for(key)
        except errors.GatewayError as exc:
            await self.record_rejection(bucket, key, exc, principal)
            raise

    def wrap(self, body: Any, inspection: Inspection | None) -> Any:
        return body if inspection is None else InspectedBody(body, inspection)

    async def inspect_blob(self, bucket: str, key: str, blob_key: str, size: int,
                           principal: str | None = None, *,
                           open_blob: Callable[[Any], Awaitable[Any]] | None = None) -> None:
        """Inspect a blob the backend already holds but no object points to yet (a
        completed multipart upload, a copy); raises when it must not commit.
        ``open_blob``: how to read its plaintext (a byte range or None: all), for an
        encrypted blob; by default the backend's bytes."""
        inspection = await self.precheck(bucket, key, size, principal)
        if inspection is None:
            return
        try:
            from storage_backends import ByteRange

            scanning = inspection.session is not None
            byte_range = None if scanning or size <= SNIFF_BYTES else ByteRange(0, SNIFF_BYTES)
            if size:
                reader = await (open_blob(byte_range) if open_blob is not None else
                                self.ctx.backend.get(blob_key, byte_range=byte_range))
                try:
                    async for chunk in reader:
                        await inspection.feed(chunk)
                finally:
                    await reader.aclose()
            await inspection.finish()
        except (UnsupportedFileType, MalwareDetected) as exc:
            await self.record_rejection(bucket, key, exc, principal)
            raise
        finally:
            await inspection.aclose()

    async def rejections(self, *, filters: Mapping[str, str], descending: bool, limit: int,
                         offset: int) -> tuple[list[dict[str, Any]], int]:
        """Refused uploads in the order they were refused (for administrators)."""
        t = upload_rejections
        cond = [t.c[name] == value for name, value in filters.items()]

        def read(conn: Any) -> tuple[list[dict[str, Any]], int]:
            where = and_(true(), *cond)
            total = int(conn.execute(select(func.count()).select_from(t).where(where))
                        .scalar_one())
            order = t.c.id.desc() if descending else t.c.id.asc()
            rows = conn.execute(select(t).where(where).order_by(order)
                                .limit(limit).offset(offset)).all()
            return [{"id": r.id, "bucket": r.bucket, "key": r.key, "reason": r.reason,
                     "detail": r.detail, "principal": r.principal,
                     "createdAt": r.created_at.isoformat().replace("+00:00", "Z")}
                    for r in rows], total

        result: tuple[list[dict[str, Any]], int] = await self.ctx.db.read(read)
        return result

    async def record_rejection(self, bucket: str, key: str, exc: BaseException,
                               principal: str | None) -> None:
        reason = ("unscannable" if isinstance(exc, Unscannable)
                  else "infected" if isinstance(exc, MalwareDetected)
                  else "size" if isinstance(exc, errors.EntityTooLarge) else "type")
        if reason == "infected":
            log.warning("refused an upload to %s/%s: %s", bucket, key, exc)
        values = {"bucket": bucket, "key": key, "reason": reason, "detail": str(exc)[:1000],
                  "principal": principal, "created_at": datetime.now(UTC)}
        try:
            await self.ctx.db.write(lambda conn: conn.execute(insert(upload_rejections), values))
        except Exception:
            log.warning("could not record a refused upload", exc_info=True)


def _unavailable(exc: BaseException) -> errors.GatewayError:
    log.warning("the malware scanner is unavailable: %s", exc)
    return errors.ServiceUnavailable("The malware scanner is unavailable; nothing was stored.")
