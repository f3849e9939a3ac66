"""What the fuzz campaign throws at the gateway: Hypothesis strategies for hostile values,
byte-level mutation of valid inputs, and a corpus of known XML attacks."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import strategies as st

#: Values that have broken parsers before: empty, separators, signs, overflows, encodings.
EDGE_STRINGS = (
    "", " ", "\t", ",", ";", "=", "==", "/", "//", "%", "%zz", "%00", "%C3%28", "+", "*",
    "-", "-1", "0", "00", "1", "-0", "0x10", "1e3", "1e309", "NaN", "Infinity", "null",
    "true", "[]", "{}", '"', "'", "\\", "é", "\u00ff", "\u202e", "\ufeff", "٣", "²",
    "9" * 20, "9" * 400, "18446744073709551616", "-9223372036854775809",
    "9223372036854775807", "4294967296", "AWS4-HMAC-SHA256", "aws4_request",
    "UNSIGNED-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "bytes=0-0", "W/\"x\"",
    "<a>", "&amp;", "${filename}", "../../etc/passwd", "\x7f", "\x1b[31m",
)


def huge(min_size: int = 1_000, max_size: int = 20_000) -> st.SearchStrategy[str]:
    return st.tuples(st.sampled_from("aZ9%=/,;é"), st.integers(min_size, max_size)).map(
        lambda pair: pair[0] * pair[1])


def junk_text(max_size: int = 64, *, with_huge: bool = True) -> st.SearchStrategy[str]:
    """Text an attacker might send: edge values, random Unicode, random Latin-1."""
    options = [
        st.sampled_from(EDGE_STRINGS),
        st.text(max_size=max_size),
        st.text(alphabet=st.characters(codec="latin-1"), max_size=max_size),
        st.text(alphabet="0123456789abcdefABCDEF-xX;=,/ TZ:", max_size=max_size),
    ]
    if with_huge:
        options.append(huge())
    return st.one_of(options)


def header_text(max_size: int = 64) -> st.SearchStrategy[bytes]:
    """A header value as bytes: anything but CR and LF (which would end it)."""
    return st.one_of(
        junk_text(max_size).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.binary(max_size=max_size),
    ).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


def strip_surrogates(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")


@st.composite
def mutated(draw: st.DrawFn, base: bytes, *, max_edits: int = 4) -> bytes:
    """``base`` with one to ``max_edits`` random edits: flipped, replaced, inserted,
    deleted, duplicated or truncated bytes."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, max_edits))):
        op = draw(st.sampled_from(("flip", "set", "insert", "delete", "dup", "truncate")))
        pos = draw(st.integers(0, len(data))) if data else 0
        if op == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and pos < len(data):
            data[pos] = draw(st.sampled_from(b"\x00\r\n<>&;:=,-/\"' \xff\xc3Z0f"))
        elif op == "insert":
            data[pos:pos] = draw(st.one_of(
                st.binary(min_size=1, max_size=16),
                st.sampled_from((b"\r\n", b";", b"<!--", b"]]>", b"&x;", b"<a>", b"\x00")),
            ))
        elif op == "delete" and data:
            data[pos:pos + draw(st.integers(1, 16))] = b""
        elif op == "dup" and data:
            length = draw(st.integers(1, 64))
            data[pos:pos] = data[pos:pos + length]
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


# -- JSON ------------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False), junk_text(32, with_huge=False))

json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(junk_text(16, with_huge=False), inner, max_size=5)),
    max_leaves=20)


def nested_json(depth: int, *, kind: str = "list") -> str:
    """``depth`` levels of arrays (or objects) around a number."""
    if kind == "list":
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def deep_json_texts() -> st.SearchStrategy[str]:
    """Nesting around the interpreter's recursion limit (and far beyond it)."""
    return st.tuples(st.sampled_from((10, 100, 500, 900, 950, 980, 995, 1000, 1500, 5000,
                                      100_000)),
                     st.sampled_from(("list", "dict"))).map(
        lambda pair: nested_json(pair[0], kind=pair[1]))


def b64(text: str | bytes) -> str:
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# -- dates -----------------------------------------------------------------------------------

#: Dates in the forms parsers meet (HTTP, ISO 8601, AWS), with impossible and extreme ones.
EDGE_DATES = (
    "Thu, 01 Jan 1970 00:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT",
    "Mon, 01 Jan 0001 00:00:00 GMT", "Mon, 32 Dec 2024 25:61:61 GMT",
    "Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT",
    "Sun Nov  6 08:49:37 1994", "Sun, 06 Nov 1994 08:49:37 +9999",
    "Sun, 06 Nov 1994 08:49:37 -2400", "Sun, 06 Nov 99999 08:49:37 GMT",
    "Sun, 06 Nov 1994 08:49:37", "06 Nov 1994", "Nov", "GMT", "0",
    "20240101T000000Z", "20241301T000000Z", "20240230T000000Z", "99999999T999999Z",
    "00000000T000000Z", "2024-01-01T00:00:00Z", "2024-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z", "2024-02-30T00:00:00Z", "2024-01-01", "2024-01-01T25:00:00Z",
    "1e9", "-1", "",
)


def date_text() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(EDGE_DATES), junk_text(40, with_huge=False))


# -- XML -------------------------------------------------------------------------------------

def xml_attacks(root: str, leaf: str, *, canary_url: str) -> list[tuple[str, bytes]]:
    """(name, body) of XML attacks dressed as a ``root`` document; ``leaf``: an element
    of that document whose text an entity could land in. ``canary_url``: where an
    external entity points (a listener that counts connections)."""
    decl = '<?xml version="1.0" encoding="UTF-8"?>\n'
    laughs = '<!ENTITY l0 "lol">' + "".join(
        f'<!ENTITY l{i} "{("&l" + str(i - 1) + ";") * 10}">' for i in range(1, 10))
    quadratic = "A" * 50_000
    wrap = f"<{root}><{leaf}>{{}}</{leaf}></{root}>"
    return [
        ("billion laughs", (decl + f"<!DOCTYPE {root} [{laughs}]>"
                            + wrap.format("&l9;")).encode()),
        ("quadratic blowup", (decl + f'<!DOCTYPE {root} [<!ENTITY a "{quadratic}">]>'
                              + wrap.format("&a;" * 30_000)).encode()),
        ("external entity file", (decl + f'<!DOCTYPE {root} [<!ENTITY x SYSTEM '
                                  '"file:///etc/passwd">]>' + wrap.format("&x;")).encode()),
        ("external entity http", (decl + f'<!DOCTYPE {root} [<!ENTITY x SYSTEM '
                                  f'"{canary_url}">]>' + wrap.format("&x;")).encode()),
        ("external entity to a closed port",
         (decl + f'<!DOCTYPE {root} [<!ENTITY x SYSTEM "http://127.0.0.1:1/">]>'
          + wrap.format("&x;")).encode()),
        ("parameter entity", (decl + f'<!DOCTYPE {root} [<!ENTITY % p SYSTEM '
                              f'"{canary_url}"> %p;]>' + wrap.format("x")).encode()),
        ("external DTD", (decl + f'<!DOCTYPE {root} SYSTEM "{canary_url}">'
                          + wrap.format("x")).encode()),
        ("internal DTD", (decl + f"<!DOCTYPE {root} [<!ELEMENT {root} ANY>]>"
                          + wrap.format("x")).encode()),
        ("XInclude", (decl + f'<{root} xmlns:xi="http://www.w3.org/2001/XInclude">'
                      f'<{leaf}><xi:include href="file:///etc/passwd" parse="text"/>'
                      f"</{leaf}></{root}>").encode()),
        ("entity in attribute", (decl + f'<!DOCTYPE {root} [<!ENTITY x SYSTEM '
                                 '"file:///etc/passwd">]>'
                                 f'<{root} a="&x;"><{leaf}>x</{leaf}></{root}>').encode()),
        ("deep nesting of the root", (f"<{root}>" * 100_000 + f"</{root}>" * 100_000
                                      ).encode()),
        ("deep nesting of a leaf", (f"<{root}>" + f"<{leaf}>" * 100_000
                                    + f"</{leaf}>" * 100_000 + f"</{root}>").encode()),
        ("deep nesting unclosed", (f"<{root}>" + "<a>" * 200_000).encode()),
        ("many siblings", (f"<{root}>" + f"<{leaf}>x</{leaf}>" * 60_000
                           + f"</{root}>").encode()),
        ("many attributes", (f"<{root} " + " ".join(f"a{i}='x'" for i in range(20_000))
                             + f"><{leaf}>x</{leaf}></{root}>").encode()),
        ("long name", (f"<{root}><{'n' * 500_000}>x</{'n' * 500_000}></{root}>").encode()),
        ("huge text", wrap.format("x" * 1_900_000).encode()),
        ("beyond the body limit", wrap.format("x" * (2 * 1024 * 1024 + 1)).encode()),
        ("UTF-16", ('<?xml version="1.0" encoding="UTF-16"?>' + wrap.format("x")
                    ).encode("utf-16")),
        ("declared encoding lies", ('<?xml version="1.0" encoding="ISO-8859-1"?>'
                                    + wrap.format("é")).encode("utf-8")),
        ("unknown encoding", ('<?xml version="1.0" encoding="x-unknown"?>'
                              + wrap.format("x")).encode()),
        ("invalid UTF-8", wrap.format("x").encode().replace(b"x", b"\xc3\x28")),
        ("NUL byte", wrap.format("x\x00y").encode()),
        ("processing instruction", (f'<?xml-stylesheet href="{canary_url}"?>'
                                    + wrap.format("x")).encode()),
        ("CDATA", wrap.format("<![CDATA[<x>&amp;]]>").encode()),
        ("two roots", (wrap.format("x") + wrap.format("y")).encode()),
        ("empty", b""),
        ("whitespace", b"   \r\n\t "),
        ("not XML", b"{\"json\": true}"),
        ("unclosed", f"<{root}><{leaf}>x".encode()),
    ]


#: Text of /etc/passwd that must never come back in an answer.
PASSWD_MARKERS = (b"root:x:0:0", b"/usr/sbin/nologin", b"daemon:x:")


def _xml_char(ch: str) -> bool:
    """Whether XML 1.0 allows ``ch`` in text (tab, CR and LF aside)."""
    return ch >= " " and ch != "\x7f" and ch not in "\ufffe\uffff"


@st.composite
def xml_trees(draw: st.DrawFn, root: str, vocabulary: tuple[str, ...]) -> bytes:
    """Random well-formed documents under ``root`` made of the document's own element
    names (and strangers), with hostile texts."""
    names = st.one_of(st.sampled_from(vocabulary), st.sampled_from(("x", "Root", root)))

    def render(node: Any) -> str:
        if isinstance(node, str):
            return (node.replace("&", "&amp;").replace("<", "&lt;"))
        name, children = node
        return f"<{name}>" + "".join(render(c) for c in children) + f"</{name}>"

    texts = junk_text(24, with_huge=False).map(strip_surrogates).map(
        lambda t: "".join(ch for ch in t if ch in "\t\n\r" or (ch >= " " and ch != "\x7f"
                                                               and not 0xD800 <= ord(ch)
                                                               <= 0xDFFF
                                                               and ch not in "\ufffe\uffff")))
    tree = st.recursive(
        texts,
        lambda inner: st.tuples(names, st.lists(inner, max_size=4)),
        max_leaves=25)
    children = draw(st.lists(tree, max_size=6))
    ns = draw(st.sampled_from(("", ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"',
                               ' xmlns="urn:other"')))
    body = f"<{root}{ns}>" + "".join(render(c) for c in children) + f"</{root}>"
    return body.encode("utf-8")
