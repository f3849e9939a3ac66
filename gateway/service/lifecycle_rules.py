"""Bucket lifecycle rules: their validation (as S3 answers PutBucketLifecycleConfiguration),
their stored form, and when a rule makes a version expire.

A configuration arrives as rules in the shape of S3's API (what boto3 calls ``Rules``)::

    {"ID": "logs", "Status": "Enabled", "Filter": {"And": {"Prefix": "logs/",
     "Tags": [{"Key": "k", "Value": "v"}], "ObjectSizeGreaterThan": 1024}},
     "Expiration": {"Days": 30}, "NoncurrentVersionExpiration": {"NoncurrentDays": 7},
     "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2}}

with leaves either typed (JSON) or as the text of XML elements. :func:`validate_rules`
checks it like S3 and answers the canonical form stored in ``buckets.lifecycle`` (typed
values, generated IDs, dates as ``2030-01-01T00:00:00.000Z``); :func:`compile_rules` turns
the stored form into :class:`Rule` values the lifecycle run evaluates.

Days count as S3 counts them: a version made at ``t`` expires after ``Days`` at the first
midnight UTC at least a full day later, ``midnight(t) + Days + 1`` (an object written on
1/15 at 10:30 with ``Days`` 3 expires on 1/19 at 00:00). Noncurrent days count from when
the version stopped being the latest; ``DaysAfterInitiation`` from an upload's start.

Transitions to other storage classes are refused with ``InvalidStorageClass``, as MinIO
refuses a tier it does not have: this gateway keeps one class, and a rule that silently did
nothing would be worse than an error.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

from gateway import errors
from gateway.service.packages import TEMP_FOLDER, folder_of

MAX_RULES = 1000
MAX_ID_LENGTH = 255
MAX_PREFIX_BYTES = 1024
MAX_NEWER_NONCURRENT = 100
#: Largest size a filter may name (the gateway's largest object, 5 TiB).
MAX_SIZE_FILTER = 5 * 1024**4
_MAX_INT = 2**31 - 1  # S3's Integer
_MAX_LONG = 2**63 - 1  # S3's Long
#: The classes S3 transitions to: valid in a Transition, but not held here.
TRANSITION_CLASSES = frozenset({"GLACIER", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING",
                                "DEEP_ARCHIVE", "GLACIER_IR"})
ENABLED, DISABLED = "Enabled", "Disabled"
#: The implicit rule every bot package (``<bot>.gbai``) has: see :func:`package_temp_rule`.
PACKAGE_TEMP_RULE_ID = "gbdrive-temp"

_RULE_KEYS = frozenset({"ID", "Prefix", "Status", "Filter", "Expiration", "Transitions",
                        "NoncurrentVersionTransitions", "NoncurrentVersionExpiration",
                        "AbortIncompleteMultipartUpload"})
_SIZE_KEYS = ("ObjectSizeGreaterThan", "ObjectSizeLessThan")
_FILTER_KEYS = frozenset({"Prefix", "Tag", "And", *_SIZE_KEYS})
_AND_KEYS = frozenset({"Prefix", "Tags", *_SIZE_KEYS})
_INTEGER = re.compile(r"[+-]?[0-9]+")


class NoSuchLifecycleConfiguration(errors.GatewayError):
    code = "NoSuchLifecycleConfiguration"
    status = 404
    default_message = "The lifecycle configuration does not exist"


# -- validation ----------------------------------------------------------------------------


def _malformed() -> errors.GatewayError:
    return errors.MalformedXML()


def _mapping(value: Any) -> Mapping[str, Any]:
    if value is None or value == "":
        return {}  # an empty element: <Filter/>
    if not isinstance(value, Mapping):
        raise _malformed()
    return value


def _known(value: Mapping[str, Any], allowed: frozenset[str]) -> None:
    if not set(value) <= allowed:
        raise _malformed()


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _malformed()
    return value


def _integer(value: Any, limit: int = _MAX_INT) -> int:
    """An Integer (or Long) of S3's schema: anything else does not validate."""
    if isinstance(value, bool):
        raise _malformed()
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        value = int(value.strip())
    if not isinstance(value, int) or not -limit - 1 <= value <= limit:
        raise _malformed()
    return value


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip() if isinstance(value, str) else None
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise _malformed()


def _positive(value: Any, field: str, action: str) -> int:
    number = _integer(value)
    if number <= 0:
        raise errors.InvalidArgument(
            f"'{field}' for {action} action must be a positive integer",
            name=field, value=str(number))
    return number


def _date(value: Any) -> datetime:
    """An ISO 8601 timestamp at midnight UTC (S3 keeps no other time of day)."""
    if isinstance(value, datetime):
        when = value
    else:
        try:
            when = datetime.fromisoformat(_text(value).strip())
        except ValueError:
            raise _malformed() from None
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    if (when.hour, when.minute, when.second, when.microsecond) != (0, 0, 0, 0):
        raise errors.InvalidArgument("'Date' must be at midnight GMT", name="Date",
                                     value=str(value))
    return when


def format_date(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _prefix(value: Any) -> str:
    prefix = _text(value)
    if len(prefix.encode("utf-8", "surrogatepass")) > MAX_PREFIX_BYTES:
        raise errors.InvalidRequest(f"The maximum size of a prefix is {MAX_PREFIX_BYTES}")
    return prefix


def _tag(value: Any) -> dict[str, str]:
    tag = _mapping(value)
    _known(tag, frozenset({"Key", "Value"}))
    if "Key" not in tag:
        raise _malformed()
    key = _text(tag["Key"])
    # Only a Key: the rule matches objects with that tag and an empty value.
    tag_value = _text(tag.get("Value", ""))
    if not 1 <= len(key) <= 128:
        raise errors.InvalidTag("The TagKey you have provided is invalid")
    if len(tag_value) > 256:
        raise errors.InvalidTag("The TagValue you have provided is invalid")
    return {"Key": key, "Value": tag_value}


def _size(value: Any, field: str) -> int:
    size = _integer(value, _MAX_LONG)
    if not 0 <= size <= MAX_SIZE_FILTER:
        raise errors.InvalidArgument(
            f"'{field}' must be between 0 and {MAX_SIZE_FILTER} bytes", name=field,
            value=str(size))
    return size


def _check_sizes(sizes: Mapping[str, int]) -> None:
    above, below = sizes.get("ObjectSizeGreaterThan"), sizes.get("ObjectSizeLessThan")
    if above is not None and below is not None and above >= below:
        raise errors.InvalidArgument(
            "'ObjectSizeLessThan' must be greater than 'ObjectSizeGreaterThan'",
            name="ObjectSizeLessThan", value=str(below))


def _validate_filter(value: Any) -> dict[str, Any]:
    flt = _mapping(value)
    _known(flt, _FILTER_KEYS)
    if len(flt) > 1:  # one predicate, or several inside And
        raise _malformed()
    if "Prefix" in flt:
        return {"Prefix": _prefix(flt["Prefix"])}
    if "Tag" in flt:
        return {"Tag": _tag(flt["Tag"])}
    for name in _SIZE_KEYS:
        if name in flt:
            return {name: _size(flt[name], name)}
    if "And" not in flt:
        return {}
    both = _mapping(flt["And"])
    _known(both, _AND_KEYS)
    out: dict[str, Any] = {}
    if "Prefix" in both:
        out["Prefix"] = _prefix(both["Prefix"])
    raw_tags = both.get("Tags", [])
    if not isinstance(raw_tags, Sequence) or isinstance(raw_tags, str):
        raise _malformed()
    tags = [_tag(t) for t in raw_tags]
    if len({t["Key"] for t in tags}) != len(tags):
        raise errors.InvalidRequest("Duplicate Tag Keys are not allowed.")
    if tags:
        out["Tags"] = tags
    for name in _SIZE_KEYS:
        if name in both:
            out[name] = _size(both[name], name)
    _check_sizes(out)
    if ("Prefix" in out) + len(tags) + sum(n in out for n in _SIZE_KEYS) < 2:
        raise _malformed()  # And joins two predicates or more
    return {"And": out}


def _filter_tags(flt: Mapping[str, Any]) -> list[dict[str, str]]:
    if "Tag" in flt:
        return [flt["Tag"]]
    return list(flt.get("And", {}).get("Tags", []))


def _validate_expiration(value: Any, has_tags: bool) -> dict[str, Any]:
    exp = _mapping(value)
    _known(exp, frozenset({"Days", "Date", "ExpiredObjectDeleteMarker"}))
    if len(exp) != 1:  # exactly one of Days, Date, ExpiredObjectDeleteMarker
        raise _malformed()
    if "Days" in exp:
        return {"Days": _positive(exp["Days"], "Days", "Expiration")}
    if "Date" in exp:
        return {"Date": format_date(_date(exp["Date"]))}
    marker = _boolean(exp["ExpiredObjectDeleteMarker"])
    if marker and has_tags:
        raise errors.InvalidRequest("ExpiredObjectDeleteMarker cannot be specified with Tags.")
    return {"ExpiredObjectDeleteMarker": marker}


def _validate_noncurrent(value: Any) -> dict[str, Any]:
    nve = _mapping(value)
    _known(nve, frozenset({"NoncurrentDays", "NewerNoncurrentVersions"}))
    if "NoncurrentDays" not in nve:
        raise _malformed()
    out = {"NoncurrentDays": _positive(nve["NoncurrentDays"], "NoncurrentDays",
                                       "NoncurrentVersionExpiration")}
    if "NewerNoncurrentVersions" in nve:
        newer = _positive(nve["NewerNoncurrentVersions"], "NewerNoncurrentVersions",
                          "NoncurrentVersionExpiration")
        if newer > MAX_NEWER_NONCURRENT:
            raise errors.InvalidArgument(
                "'NewerNoncurrentVersions' for NoncurrentVersionExpiration action must not "
                f"exceed {MAX_NEWER_NONCURRENT}", name="NewerNoncurrentVersions",
                value=str(newer))
        out["NewerNoncurrentVersions"] = newer
    return out


def _validate_abort(value: Any, has_tags: bool) -> dict[str, Any]:
    abort = _mapping(value)
    _known(abort, frozenset({"DaysAfterInitiation"}))
    if "DaysAfterInitiation" not in abort:
        raise _malformed()
    if has_tags:
        raise errors.InvalidRequest(
            "AbortIncompleteMultipartUpload cannot be specified with Tags.")
    return {"DaysAfterInitiation": _positive(abort["DaysAfterInitiation"],
                                             "DaysAfterInitiation",
                                             "AbortIncompleteMultipartUpload")}


def _refuse_transitions(value: Any, days_key: str) -> None:
    """A well-formed transition still names a class this gateway does not have."""
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise _malformed()
    for item in value:
        transition = _mapping(item)
        _known(transition, frozenset({days_key, "Date", "StorageClass",
                                      "NewerNoncurrentVersions"}))
        if _text(transition.get("StorageClass")) not in TRANSITION_CLASSES:
            raise _malformed()
        if days_key in transition:
            _integer(transition[days_key])
        elif "Date" in transition and days_key == "Days":
            _date(transition["Date"])
        else:
            raise _malformed()
    if value:
        raise errors.InvalidStorageClass(
            "This gateway keeps one storage class: lifecycle transitions are not supported.")


def _validate_rule(value: Any) -> dict[str, Any]:
    raw = _mapping(value)
    _known(raw, _RULE_KEYS)
    status = raw.get("Status")
    if status not in (ENABLED, DISABLED):
        raise _malformed()
    rule_id = _text(raw.get("ID") or "") or _generated_id()
    if len(rule_id) > MAX_ID_LENGTH:
        raise errors.InvalidArgument(
            f"ID length should not exceed allowed limit of {MAX_ID_LENGTH}", name="ID",
            value=rule_id[:64] + "...")
    out: dict[str, Any] = {"ID": rule_id, "Status": status}
    if ("Prefix" in raw) == ("Filter" in raw):  # one of them (the top-level one is legacy)
        raise _malformed()
    if "Prefix" in raw:
        out["Prefix"] = _prefix(raw["Prefix"])
        has_tags = False
    else:
        out["Filter"] = _validate_filter(raw["Filter"])
        has_tags = bool(_filter_tags(out["Filter"]))
    if "Expiration" in raw:
        out["Expiration"] = _validate_expiration(raw["Expiration"], has_tags)
    if "NoncurrentVersionExpiration" in raw:
        out["NoncurrentVersionExpiration"] = _validate_noncurrent(
            raw["NoncurrentVersionExpiration"])
    if "AbortIncompleteMultipartUpload" in raw:
        out["AbortIncompleteMultipartUpload"] = _validate_abort(
            raw["AbortIncompleteMultipartUpload"], has_tags)
    _refuse_transitions(raw.get("Transitions", []), "Days")
    _refuse_transitions(raw.get("NoncurrentVersionTransitions", []), "NoncurrentDays")
    if not {"Expiration", "NoncurrentVersionExpiration",
            "AbortIncompleteMultipartUpload"} & set(out):
        raise errors.InvalidRequest("At least one action needs to be specified in a rule")
    return out


def _generated_id() -> str:
    """What S3 names a rule sent without an ID: an opaque 48-character string."""
    return base64.b64encode(str(uuid.uuid4()).encode()).decode()[:48]


def validate_rules(rules: Any) -> list[dict[str, Any]]:
    """Check a configuration's rules as S3 does; their canonical (stored) form."""
    if not isinstance(rules, Sequence) or isinstance(rules, str) or not rules:
        raise _malformed()  # a configuration holds one rule or more
    if len(rules) > MAX_RULES:
        raise errors.InvalidRequest(
            f"The number of lifecycle rules should not exceed allowed limit of {MAX_RULES} "
            "rules")
    out = [_validate_rule(rule) for rule in rules]
    if len({rule["ID"] for rule in out}) != len(out):
        raise errors.InvalidArgument(
            "Rule ID must be unique. Found same ID for more than one rule", name="ID")
    return out


# -- evaluation ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filter:
    """Which versions a rule applies to: all of these hold."""

    prefix: str = ""
    tags: tuple[tuple[str, str], ...] = ()
    size_greater_than: int | None = None
    size_less_than: int | None = None
    #: Keys under a package's ``<x>.gbdrive/temp/`` (the folder marker itself excluded),
    #: as the package folder rules name them, instead of a plain prefix.
    package_temp: bool = False

    def matches_key(self, key: str) -> bool:
        if not key.startswith(self.prefix):
            return False
        if self.package_temp:
            where = folder_of(key)
            return (where is not None and where[0] == ".gbdrive"
                    and where[1].startswith(TEMP_FOLDER) and len(where[1]) > len(TEMP_FOLDER))
        return True

    def matches(self, key: str, tags: Mapping[str, str] | None, size: int) -> bool:
        if not self.matches_key(key):
            return False
        if self.size_greater_than is not None and not size > self.size_greater_than:
            return False
        if self.size_less_than is not None and not size < self.size_less_than:
            return False
        have = tags or {}
        return all(have.get(k) == v for k, v in self.tags)


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    enabled: bool
    filter: Filter
    #: Expiration: current versions expire ``days`` after creation (S3's day rounding) …
    days: int | None = None
    #: … or all of them on this midnight UTC …
    date: datetime | None = None
    #: … or exactly this old (the package temp rule; no rounding).
    max_age: timedelta | None = None
    #: Remove a delete marker that is a key's only version.
    expired_delete_markers: bool = False
    noncurrent_days: int | None = None
    #: Keep this many newer noncurrent versions whatever their age.
    newer_noncurrent: int | None = None
    abort_days: int | None = None

    @property
    def expires_current(self) -> bool:
        return self.days is not None or self.date is not None or self.max_age is not None

    @property
    def removes_delete_markers(self) -> bool:
        """S3 removes expired delete markers for a ``Days`` rule too, once they are as old
        as the rule says."""
        return self.expired_delete_markers or self.days is not None or self.max_age is not None


def _compile_filter(stored: Mapping[str, Any]) -> Filter:
    if "Prefix" in stored and "Filter" not in stored:
        return Filter(prefix=stored["Prefix"])
    flt = stored.get("Filter") or {}
    body = flt.get("And", flt)
    return Filter(prefix=body.get("Prefix", ""),
                  tags=tuple((t["Key"], t["Value"]) for t in _filter_tags(flt)),
                  size_greater_than=body.get("ObjectSizeGreaterThan"),
                  size_less_than=body.get("ObjectSizeLessThan"))


def compile_rule(stored: Mapping[str, Any]) -> Rule:
    exp = stored.get("Expiration") or {}
    nve = stored.get("NoncurrentVersionExpiration") or {}
    abort = stored.get("AbortIncompleteMultipartUpload") or {}
    return Rule(
        id=stored["ID"], enabled=stored["Status"] == ENABLED, filter=_compile_filter(stored),
        days=exp.get("Days"), date=_date(exp["Date"]) if "Date" in exp else None,
        expired_delete_markers=bool(exp.get("ExpiredObjectDeleteMarker", False)),
        noncurrent_days=nve.get("NoncurrentDays"),
        newer_noncurrent=nve.get("NewerNoncurrentVersions"),
        abort_days=abort.get("DaysAfterInitiation"))


def compile_rules(stored: Sequence[Mapping[str, Any]] | None) -> list[Rule]:
    """The enabled rules of a stored configuration."""
    return [rule for rule in map(compile_rule, stored or ()) if rule.enabled]


def package_temp_rule(max_age_seconds: int) -> Rule:
    """What every bot package has besides its own rules: objects under
    ``<x>.gbdrive/temp/`` expire ``GATEWAY_TEMP_EXPIRY`` after they were written, to the
    second (not rounded to days as an S3 rule is)."""
    return Rule(id=PACKAGE_TEMP_RULE_ID, enabled=True, filter=Filter(package_temp=True),
                max_age=timedelta(seconds=max_age_seconds))


def _midnight(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def expires_at(created: datetime, days: int) -> datetime | None:
    """When something made at ``created`` is ``days`` old as S3 counts (None: never)."""
    try:
        return _midnight(created) + timedelta(days=days + 1)
    except OverflowError:
        return None


def made_before(now: datetime, days: int) -> datetime | None:
    """What was made before this instant is ``days`` old at ``now`` (as S3 counts); None
    when nothing can be that old."""
    try:
        return _midnight(now) - timedelta(days=days)
    except OverflowError:
        return None


def expiration(rules: Sequence[Rule], key: str, tags: Mapping[str, str] | None, size: int,
               last_modified: datetime) -> tuple[datetime, str] | None:
    """When the current version of ``key`` expires, and by which rule (the earliest)."""
    best: tuple[datetime, str] | None = None
    for rule in rules:
        if not rule.filter.matches(key, tags, size):
            continue
        when = (rule.date if rule.date is not None
                else expires_at(last_modified, rule.days) if rule.days is not None
                else last_modified + rule.max_age if rule.max_age is not None else None)
        if when is not None and (best is None or when < best[0]):
            best = (when, rule.id)
    return best


def expiration_header(rules: Sequence[Rule], key: str, tags: Mapping[str, str] | None,
                      size: int, last_modified: datetime) -> str | None:
    """S3's ``x-amz-expiration`` for PutObject, GetObject and HeadObject answers."""
    found = expiration(rules, key, tags, size, last_modified)
    if found is None:
        return None
    when, rule_id = found
    return f'expiry-date="{format_datetime(when, usegmt=True)}", rule-id="{rule_id}"'
