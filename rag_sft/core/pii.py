"""Personal data in users' texts replaced by typed placeholders (SPEC rule 14), before any prompt
is built: nothing personal reaches the LLM endpoint or the exports.

What is found, and how each is told apart from numbers that only look alike (order numbers,
timestamps, amounts, versions):

- `<URL_SECRET>`: the value of a secret-looking query or fragment parameter of a URL (token,
  access_token, api_key, key, secret, password, sig, signature, session, code, ...) and the
  password of `scheme://user:password@host`.
- `<EMAIL>`: local@domain.tld.
- `<ID_NUMBER>`: a Chinese resident ID number, 18 characters, whose birth date is a real date and
  whose ISO 7064 MOD 11-2 check character is right.
- `<BANK_CARD>`: 16 to 19 digits (alone or in groups of 4 split by spaces or dashes) starting
  like a card network (UnionPay 62, Visa 4, Mastercard 5/2, Amex 34/37, JCB 35, ...) whose Luhn
  check holds.
- `<IP>`: IPv4 and IPv6 addresses (as Python's `ipaddress` parses them).
- `<PHONE>`: numbers that Google's libphonenumber (the `phonenumbers` package, offline metadata)
  finds valid: mainland China mobiles and landlines with or without +86 / 0086 and separators,
  and international numbers written with their `+country` code. A bare digit run that is not a
  valid number of the region (an order number, a Unix timestamp) is left alone.

Digit runs are only taken whole (`12345678901234567890` is not searched for a phone inside).
The same text always gives the same result; `redact_column` runs the rules only on the texts
that hold something that could be personal (an Arrow regex over the whole column first).
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import date

import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc

PHONE = "PHONE"
EMAIL = "EMAIL"
ID_NUMBER = "ID_NUMBER"
BANK_CARD = "BANK_CARD"
IP = "IP"
URL_SECRET = "URL_SECRET"
KINDS = (URL_SECRET, EMAIL, ID_NUMBER, BANK_CARD, IP, PHONE)


def placeholder(kind: str) -> str:
    return f"<{kind}>"


# Something that could be personal: an @, a URL parameter or userinfo, an IPv6-like colon group,
# a dotted quad, or 7 digits within short runs of separators (phones, IDs, cards).
CANDIDATE_RE2 = (
    r"@|[?&#;][A-Za-z_\-]*=|://[^/\s]*:|[0-9A-Fa-f]*:[0-9A-Fa-f]*:|\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}"
    r"|\d(?:[\s\-().+/]{0,2}\d){6}"
)

_SECRET_NAMES = (
    r"(?:access_?token|refresh_?token|id_?token|token|api_?key|apikey|key|secret|client_secret|password|passwd|pwd|"
    r"sig|signature|x-amz-signature|x-amz-credential|auth|authorization|session|sessionid|sid|code|ticket)"
)
_URL_PARAMETER = re.compile(rf"(?i)([?&#;]{_SECRET_NAMES}=)([^&#\s\"'<>]+)")
_URL_PASSWORD = re.compile(r"(?i)(\b[a-z][a-z0-9+.\-]*://[^:/@\s]+:)([^@/\s]+)(@)")
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
# Whole digit runs only: no digit or letter glued to either end.
_ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])")
_CARD = re.compile(
    r"(?<![0-9A-Za-z\-])(?:\d{4}[ \-]){3}\d{4}(?:[ \-]?\d{1,3})?(?![0-9A-Za-z\-])|(?<![0-9A-Za-z])\d{16,19}(?![0-9A-Za-z])"
)
_IPV4 = re.compile(r"(?<![0-9.])(?:\d{1,3}\.){3}\d{1,3}(?![0-9]|\.\d)")
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{0,4}|(?:\d{1,3}\.){3}\d{1,3})(?![0-9A-Fa-f:])")

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
# Card networks' leading digits (IIN ranges, coarse): UnionPay 62/81, Visa 4, Mastercard 51-55 and
# 2221-2720, Amex 34/37, JCB 35, Diners 30/36/38, Discover 6011/64/65.
_CARD_PREFIX = re.compile(r"^(?:62|81|4|5[1-5]|2[2-7]|3[4-8]|30|6011|6[45])")


def _birth_date(text: str) -> date | None:
    """The birth date written in an 18-character ID number, when it is a real date."""
    try:
        born = date(int(text[6:10]), int(text[10:12]), int(text[12:14]))
    except ValueError:
        return None
    return born if 1900 <= born.year <= 2100 else None


def id_number_valid(text: str) -> bool:
    """An 18-character resident ID number: a real birth date and the right check character."""
    if _birth_date(text) is None:
        return False
    total = sum(int(digit) * weight for digit, weight in zip(text[:17], _ID_WEIGHTS))
    return _ID_CHECK[total % 11] == text[17].upper()


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, digit in enumerate(reversed(digits)):
        value = int(digit)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card_valid(text: str) -> bool:
    digits = re.sub(r"[ \-]", "", text)
    if len(digits) == 18 and _birth_date(digits) is not None:
        return False  # shaped like a resident ID number (one mistyped): cards of 18 digits are rare
    return 16 <= len(digits) <= 19 and bool(_CARD_PREFIX.match(digits)) and luhn_valid(digits)


def _ip_valid(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _replace(pattern: re.Pattern, kind: str, valid: Callable[[str], bool] | None, text: str, found: Counter) -> str:
    def substitute(match: re.Match) -> str:
        if valid is not None and not valid(match.group(0)):
            return match.group(0)
        found[kind] += 1
        return placeholder(kind)

    return pattern.sub(substitute, text)


def _replace_url_secrets(text: str, found: Counter) -> str:
    def keep_name(match: re.Match) -> str:
        if match.group(2).startswith("<"):  # already a placeholder
            return match.group(0)
        found[URL_SECRET] += 1
        return match.group(1) + placeholder(URL_SECRET) + (match.group(3) if match.re is _URL_PASSWORD else "")

    return _URL_PASSWORD.sub(keep_name, _URL_PARAMETER.sub(keep_name, text))


def _replace_phones(text: str, found: Counter, region: str) -> str:
    pieces, end = [], 0
    for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
        if _glued(text, match.start, match.end):
            continue  # part of a longer run of digits or an identifier
        pieces.append(text[end : match.start])
        pieces.append(placeholder(PHONE))
        found[PHONE] += 1
        end = match.end
    return "".join(pieces) + text[end:] if pieces else text


def _glued(text: str, start: int, end: int) -> bool:
    before = text[start - 1] if start > 0 else ""
    after = text[end] if end < len(text) else ""
    return (before.isascii() and before.isalnum()) or (after.isascii() and after.isalnum())


def redact(text: str, found: Counter | None = None, region: str = "CN") -> str:
    """The text with every piece of personal data replaced by its placeholder; `found` counts
    them by kind. Structured kinds first, so an ID or card number is not taken for a phone."""
    found = Counter() if found is None else found
    text = _replace_url_secrets(text, found)
    text = _replace(_EMAIL, EMAIL, None, text, found)
    text = _replace(_ID_NUMBER, ID_NUMBER, id_number_valid, text, found)
    text = _replace(_CARD, BANK_CARD, _card_valid, text, found)
    text = _replace(_IPV4, IP, _ip_valid, text, found)
    text = _replace(_IPV6, IP, _ip_valid, text, found)
    return _replace_phones(text, found, region)


def redact_column(texts: pa.Array, found: Counter) -> pa.Array:
    """`redact` over a string column; only texts the candidate pattern matches are visited."""
    candidates = np.flatnonzero(pc.fill_null(pc.match_substring_regex(texts, CANDIDATE_RE2), False).to_numpy(zero_copy_only=False))
    if not len(candidates):
        return texts
    originals = texts.take(pa.array(candidates)).to_pylist()
    redacted = [redact(text, found) if text is not None else None for text in originals]
    changed = [index for index, (before, after) in enumerate(zip(originals, redacted)) if before != after]
    if not changed:
        return texts
    mask = np.zeros(len(texts), dtype=bool)
    mask[candidates[changed]] = True
    return pc.replace_with_mask(texts, pa.array(mask), pa.array([redacted[index] for index in changed], texts.type))


def redact_batch(batch: pa.RecordBatch, text_columns: Sequence[str], docs_column: str | None) -> tuple[pa.RecordBatch, Counter]:
    """The batch with its text columns and the `content` of each doc in `docs_column` redacted,
    and what was found, by kind."""
    found: Counter = Counter()
    columns = {name: batch.column(name) for name in batch.schema.names}
    for name in text_columns:
        columns[name] = redact_column(columns[name], found)
    if docs_column is not None:
        docs = columns[docs_column]
        start, end = docs.offsets[0].as_py(), docs.offsets[-1].as_py()
        flat = docs.values.slice(start, end - start)  # this batch's docs, also when it is a slice
        content = flat.field("content")
        redacted = redact_column(content, found)
        if redacted is not content:
            fields = [redacted if field.name == "content" else flat.field(field.name) for field in flat.type]
            values = pa.StructArray.from_arrays(fields, fields=list(flat.type))
            offsets = pc.subtract(docs.offsets, start)
            mask = docs.is_null() if docs.null_count else None
            columns[docs_column] = pa.ListArray.from_arrays(offsets, values, type=docs.type, mask=mask)
    return pa.RecordBatch.from_arrays(list(columns.values()), schema=batch.schema), found
