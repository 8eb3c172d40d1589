"""Personal data in users' texts replaced by typed placeholders (docs/spec.md, "Rule 14: Privacy"), before any prompt
is built: nothing personal reaches the LLM endpoint or the exports.

What is found, and how each is told apart from text that only looks alike (order numbers,
timestamps, amounts, versions, code):

- `<URL_SECRET>`: the value of a secret-looking query or fragment parameter of a URL (token,
  access_token, api_key, key, secret, password, sig, signature, session, code, ...) and the
  password of `scheme://user:password@host`.
- `<SECRET>`: API keys and credentials in free text: `sk-…` keys (20+ characters), AWS access
  key ids (`AKIA…` / `ASIA…`, 20 characters), the token after `Bearer` (12+ characters, not a
  plain lower-case word), the value of `password=` / `token=` / `api_key=` / `secret=` (and
  `password:` / `密码：`).
- `<EMAIL>`: local@domain.tld, also written `local[at]domain`, `local(at)domain[dot]com`, with a
  full-width `＠`, or with a non-ASCII local part (`张三@example.cn`).
- `<IBAN>`: an IBAN of a known country with that country's length and a valid ISO 7064
  MOD 97-10 check (grouped by 4 or not).
- `<ID_NUMBER>`: a Chinese resident ID number, 18 characters (optionally grouped 6-8-4 or
  6-4-4-4), whose birth date is a real date and whose ISO 7064 MOD 11-2 check character is right.
- `<BANK_CARD>`: 16 to 19 digits (alone or in groups of 4 split by spaces or dashes) starting
  like a card network (UnionPay 62, Visa 4, Mastercard 5/2, Amex 34/37, JCB 35, ...) whose Luhn
  check holds.
- `<SSN>`: a US social security number written 3-2-4 (dashes or spaces) with a possible area,
  group and serial, or 9 digits right after "SSN" / "social security".
- `<IP>`: IPv4 and IPv6 addresses (as Python's `ipaddress` parses them). IPv6 needs identifier
  boundaries and a digit (`std::vector`, `Foo::Bar::new()`, `dead::beef` are code, not
  addresses); a dotted quad written as a version (`v1.2.3.4`, `version 1.2.3.4`, `1.2.3.4 版本`,
  `升级到 2.0.1.3`) is a version unless an IP word stands before it (`IP`, `server`, `地址`, ...).
- `<PHONE>`: numbers that Google's libphonenumber (the `phonenumbers` package, offline metadata)
  finds valid: mainland China mobiles and landlines with or without +86 / 0086 and separators,
  and international numbers written with their `+country` code. A bare digit run that is not a
  valid number of the region (an order number, a Unix timestamp) is left alone.

Evasions are normalized away before matching, and only the matched characters of the original
text are replaced: each character is folded by NFKC (full-width digits, letters, `＠`, `：`
become ASCII), other scripts' decimal digits become ASCII digits, and invisible format
characters (zero-width space and joiners, soft hyphen, BOM, bidi controls) are dropped.
Digit runs are only taken whole (`12345678901234567890` is not searched for a phone inside).

One implementation serves rows and columns: `redact` is the rule; `redact_column` runs it only
on the texts an Arrow (RE2) pattern over the whole column marks as possibly personal. That
pattern is a superset of what `redact` finds, built from the same folding table, so both forms
give the same result on every text (tested).

Identifiers (request_id, doc ids) are not given placeholders, which would make different ids
equal: one that holds personal data is replaced whole by a stable pseudonym, `anon-` and 20
letters of its SHA-256 (`pseudonym`), so equal ids stay equal and joins, duplicates and
near-duplicates still work; ids without personal data are left as they are.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import date

import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
from phonenumbers import phonenumberutil

PHONE = "PHONE"
EMAIL = "EMAIL"
ID_NUMBER = "ID_NUMBER"
BANK_CARD = "BANK_CARD"
IP = "IP"
URL_SECRET = "URL_SECRET"
SECRET = "SECRET"
IBAN = "IBAN"
SSN = "SSN"
KINDS = (URL_SECRET, SECRET, EMAIL, IBAN, ID_NUMBER, BANK_CARD, SSN, IP, PHONE)

PSEUDONYM_PREFIX = "anon-"


def placeholder(kind: str) -> str:
    return f"<{kind}>"


# --- normalization -------------------------------------------------------------------------

@functools.cache
def _fold_table() -> dict[int, str]:
    """Character -> what matching sees instead (str.translate table): NFKC of the character,
    decimal digits of any script as ASCII digits, "" for invisible format characters."""
    table: dict[int, str] = {}
    # Planes 3-13 and the private use planes hold no compatibility, digit or format characters;
    # plane 14 holds the tags and variation selectors.
    for code in (*range(0x80, 0xD800), *range(0xE000, 0x30000), *range(0xE0000, 0xE1000)):
        char = chr(code)
        if unicodedata.category(char) == "Cf":
            table[code] = ""
            continue
        folded = unicodedata.normalize("NFKC", char)
        folded = "".join(str(unicodedata.decimal(c)) if not c.isascii() and unicodedata.decimal(c, None) is not None else c for c in folded)
        if folded != char:
            table[code] = folded
    return table


@functools.cache
def _resized() -> frozenset[str]:
    """The characters whose folded form is not one character long (positions move)."""
    return frozenset(chr(code) for code, folded in _fold_table().items() if len(folded) != 1)


def _re2_escape(char: str) -> str:
    return f"\\x{{{ord(char):x}}}" if ord(char) > 0x7F else re.escape(char)


def fold(text: str) -> tuple[str, list[int] | None]:
    """The text matching sees, and for each of its characters the index of the original
    character it comes from (None: the same positions)."""
    if text.isascii():
        return text, None
    table = _fold_table()
    if _resized().isdisjoint(text):
        return text.translate(table), None
    origin: list[int] = []
    for index, char in enumerate(text):
        origin.extend([index] * len(table.get(ord(char), char)))
    return text.translate(table), origin


# --- the rules, over folded text ---------------------------------------------------------

_SECRET_NAMES = (
    r"(?:access_?token|refresh_?token|id_?token|token|api_?key|apikey|key|secret|client_secret|password|passwd|pwd|"
    r"sig|signature|x-amz-signature|x-amz-credential|auth|authorization|session|sessionid|sid|code|ticket)"
)
_VALUE = r"[^&#\s\"'<>\x00]+"
_URL_PARAMETER = re.compile(rf"(?i)[?&#;]{_SECRET_NAMES}=({_VALUE})")
_URL_PASSWORD = re.compile(r"(?i)\b[a-z][a-z0-9+.\-]*://[^:/@\s\x00]+:([^@/\s\x00]+)@")

_API_KEY = re.compile(r"(?<![A-Za-z0-9_\-])sk-[A-Za-z0-9_\-]{20,}|(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])")
_SECRET_WORDS = ("sk-", "akia", "asia", "bearer", "token", "secret", "key", "pass", "pwd", "密码", "口令")
_NAME_WORDS = ("token", "secret", "key", "pass", "pwd", "密码", "口令")
_NAME_TAIL = re.compile(r"[A-Za-z0-9_]*[\"']?\s*[=:]")
_IDENTIFIER_START = re.compile(r"[A-Za-z0-9_]*$")
_BEARER = re.compile(r"(?i)(?<![A-Za-z0-9])bearer\s+([A-Za-z0-9\-._~+/]{12,}=*)")
# key=value (any spacing) or "key": "value" (DB_PASSWORD=…, "api_key": "…"); the password names
# also take key: value (密码：…), unless the value is a plain word ("Password: required").
_TOKEN_NAMES = r"(?:client_secret|secret(?:_access)?_key|secret|api_?key|apikey|access_?token|refresh_?token|auth_?token|token)"
_PASSWORD_NAMES = r"(?:password|passwd|pwd|密码|口令)"
_ASSIGNED_SECRET = re.compile(
    rf"(?i)(?:(?<=_)|(?<![A-Za-z0-9]))(?:{_TOKEN_NAMES}[\"']?\s*=|{_TOKEN_NAMES}[\"']\s*:|{_PASSWORD_NAMES}[\"']?\s*([=:]))"
    r"\s*[\"']?([^\s\"'&,;<>\x00]+)"
)

_AT = r"(?:@|\s?[\[({<]\s?at\s?[\])}>]\s?)"
_AT_WORD = re.compile(r"(?i)[\[({<]\s?at\s?[\])}>]")
_DOT = r"(?:\.|\s?[\[({<]\s?dot\s?[\])}>]\s?)"
_EMAIL = re.compile(
    rf"(?i)(?:[A-Za-z0-9._%+\-]+|[\w.%+\-]{{0,63}}[^\W\x00-\x7f]){_AT}[A-Za-z0-9\-]+(?:{_DOT}[A-Za-z0-9\-]+)*{_DOT}[A-Za-z]{{2,}}(?![A-Za-z0-9\-])"
)
# ISO 13616 registry: country -> IBAN length.
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "BY": 28,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:[ \-]?[A-Za-z0-9]){10,30}", re.ASCII)
# Whole digit runs only: no digit or letter glued to either end.
_ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])\d{6}[ \-]?\d{4}[ \-]?\d{4}[ \-]?\d{3}[\dXx](?![0-9A-Za-z])")
_CARD = re.compile(
    r"(?<![0-9A-Za-z\-])(?:\d{4}[ \-]){3}\d{4}(?:[ \-]?\d{1,3})?(?![0-9A-Za-z\-])|(?<![0-9A-Za-z])\d{16,19}(?![0-9A-Za-z])"
)
_SSN = re.compile(
    r"(?<![\w\-])\d{3}([\- ])\d{2}\1\d{4}(?![\w\-])|(?i:ssn|social security(?: number)?|社会安全号)\D{0,6}?(?<!\d)(\d{9})(?!\d)",
    re.ASCII,
)
_IPV4 = re.compile(r"(?<![0-9.])(?:\d{1,3}\.){3}\d{1,3}(?![0-9]|\.\d)")
_VERSION_BEFORE = re.compile(r"(?i)(?:\bv|\bver\.?|\bversion|\bbuild|\brelease|版本|版本号|升级到|升级至|更新到|[=<>~]=)\s*[:：]?\s*$")
_VERSION_AFTER = re.compile(r"(?i)^\s*(?:版本|版|version\b|release\b|build\b)")
_IP_WORD_BEFORE = re.compile(
    r"(?i)(?:\bip(?:v4)?|address|\baddr|\bhost|server|服务器|主机|地址|\bping|\bssh|\bcurl|\bfrom|网关|gateway|\bdns|proxy|代理)\W{0,3}$"
)
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{0,4}|(?:\d{1,3}\.){3}\d{1,3})(?![\w:])", re.ASCII)

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
# Card networks' leading digits (IIN ranges, coarse): UnionPay 62/81, Visa 4, Mastercard 51-55 and
# 2221-2720, Amex 34/37, JCB 35, Diners 30/36/38, Discover 6011/64/65.
_CARD_PREFIX = re.compile(r"^(?:62|81|4|5[1-5]|2[2-7]|3[4-8]|30|6011|6[45])")
_SEPARATORS = re.compile(r"[ \-]")
# What libphonenumber's matcher accepts between a number's digit groups (up to 4 at a time), and plus signs.
_PHONE_SEPARATOR = "[" + phonenumberutil._VALID_PUNCTUATION + phonenumberutil._PLUS_CHARS + r"\s]"
_PHONE_HINT = re.compile(r"\d(?:" + _PHONE_SEPARATOR + r"{0,4}\d){6}")
_MASK = "\x00"  # stands in for found data while the later rules run: matches none of them


def _birth_date(text: str) -> date | None:
    """The birth date written in an 18-character ID number, when it is a real date."""
    try:
        born = date(int(text[6:10]), int(text[10:12]), int(text[12:14]))
    except ValueError:
        return None
    return born if 1900 <= born.year <= 2100 else None


def id_number_valid(text: str) -> bool:
    """An 18-character resident ID number (separators aside): a real birth date and the right
    check character."""
    text = _SEPARATORS.sub("", text)
    if len(text) != 18 or _birth_date(text) is None:
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


def iban_valid(text: str) -> bool:
    """A known country's length and the MOD 97-10 check (ISO 13616)."""
    iban = _SEPARATORS.sub("", text).upper()
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum():
        return False
    return int("".join(str(int(c, 36)) for c in iban[4:] + iban[:4])) % 97 == 1


def _card_valid(text: str) -> bool:
    digits = _SEPARATORS.sub("", text)
    if len(digits) == 18 and _birth_date(digits) is not None:
        return False  # shaped like a resident ID number (one mistyped): cards of 18 digits are rare
    return 16 <= len(digits) <= 19 and bool(_CARD_PREFIX.match(digits)) and luhn_valid(digits)


def _ssn_valid(text: str) -> bool:
    digits = re.sub(r"\D", "", text)
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area != "000" and area != "666" and area[0] != "9" and group != "00" and serial != "0000"


def _ip_valid(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


Span = tuple[int, int]


def _matches(
    pattern: re.Pattern, valid: Callable[[str], bool] | None = None, group: int = 0, needs: str = ""
) -> Callable[[str], Iterator[Span]]:
    """The spans of `pattern` (its `group`) that `valid` accepts, in texts holding `needs`."""

    def find_spans(text: str) -> Iterator[Span]:
        if needs not in text:
            return
        for match in pattern.finditer(text):
            if valid is None or valid(match.group(group)):
                yield match.span(group)

    return find_spans


def _secrets(text: str) -> Iterator[Span]:
    lower = text.lower()
    if not any(word in lower for word in _SECRET_WORDS):
        return
    for match in _API_KEY.finditer(text):
        yield match.span()
    for match in _BEARER.finditer(text):
        if not (match.group(1).isalpha() and match.group(1).islower()):  # "Bearer authentication": a word
            yield match.span(1)
    yield from _assigned_secrets(text, lower)


def _assigned_secrets(text: str, lower: str) -> Iterator[Span]:
    """`_ASSIGNED_SECRET`, tried only where a name is followed by = or : (the pattern is slow to
    run over a whole text)."""
    seen: set[Span] = set()
    for word in _NAME_WORDS:
        at = lower.find(word)
        while at != -1:
            separator = _NAME_TAIL.match(text, at + len(word))
            if separator:
                start = _IDENTIFIER_START.search(text, max(0, at - 64), at).start()
                match = _ASSIGNED_SECRET.search(text, start, separator.end() + 512)
                if match and match.start(2) >= separator.end() and not (match.group(1) == ":" and match.group(2).isalpha()):
                    seen.add(match.span(2))
            at = lower.find(word, at + 1)
    yield from sorted(seen)


def _emails(text: str) -> Iterator[Span]:
    if "@" in text or _AT_WORD.search(text):  # the pattern is slow to fail on long texts
        for match in _EMAIL.finditer(text):
            yield match.span()


def _ibans(text: str) -> Iterator[Span]:
    for match in _IBAN.finditer(text):
        length = _IBAN_LENGTHS.get(match.group()[:2].upper())
        if length is None:
            continue
        # The match may run on into the next word: the IBAN is its country's length of characters.
        count, end = 0, match.start()
        for end in range(match.start(), match.end()):
            if text[end].isalnum():
                count += 1
                if count == length:
                    break
        end += 1
        if count == length and not (end < len(text) and text[end].isascii() and text[end].isalnum()):
            if iban_valid(text[match.start() : end]):
                yield match.start(), end


def _ssns(text: str) -> Iterator[Span]:
    for match in _SSN.finditer(text):
        span = match.span(2) if match.group(2) else match.span()
        if _ssn_valid(text[span[0] : span[1]]):
            yield span


def _ipv4s(text: str) -> Iterator[Span]:
    if "." not in text:
        return
    for match in _IPV4.finditer(text):
        if not _ip_valid(match.group()):
            continue
        before, after = text[max(0, match.start() - 24) : match.start()], text[match.end() : match.end() + 12]
        as_version = _VERSION_BEFORE.search(before) or _VERSION_AFTER.search(after)
        if as_version and not _IP_WORD_BEFORE.search(before):
            continue
        yield match.span()


def _ipv6s(text: str) -> Iterator[Span]:
    if ":" not in text:
        return
    for match in _IPV6.finditer(text):
        address = match.group()
        if any(c.isdigit() for c in address) and _ip_valid(address):
            yield match.span()


def _phones(text: str) -> Iterator[Span]:
    """Numbers without a country code are read as mainland China's (the service's users)."""
    if not _could_hold_phone(text):
        return  # nothing the (slow) matcher could find
    for match in phonenumbers.PhoneNumberMatcher(text, "CN", leniency=phonenumbers.Leniency.VALID):
        if not _glued(text, match.start, match.end):  # not part of a longer run of digits or an identifier
            yield match.start, match.end


_DIGIT_RUN = re.compile(r"\d(?:" + _PHONE_SEPARATOR + r"{0,4}\d)*")
_DIGITS = re.compile(r"\d+")
_EXTENSION = re.compile(phonenumberutil._EXTN_PATTERNS_FOR_MATCHING, re.IGNORECASE)
@functools.cache
def _cn_numbers() -> tuple[re.Pattern, int, int]:
    """Any valid national number of China at the end of a text (the union of its number types'
    patterns), and the shortest and longest."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region("CN")
    types = ("fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost", "personal_number", "voip", "pager", "uan", "voicemail")
    patterns = [getattr(metadata, name).national_number_pattern for name in types if getattr(metadata, name, None) is not None]
    lengths = metadata.general_desc.possible_length
    return re.compile("(?:" + "|".join(f"(?:{p})" for p in patterns if p) + r")\Z"), min(lengths), max(lengths)


@functools.cache
def _shortest_international() -> int:
    """The fewest digits of a country code and a valid number after it, over every region."""
    regions = [phonenumbers.PhoneMetadata.metadata_for_region(region) for region in phonenumbers.SUPPORTED_REGIONS]
    regions += [phonenumbers.PhoneMetadata.metadata_for_nongeo_region(code) for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS]
    return min(
        len(str(metadata.country_code)) + min(length for length in metadata.general_desc.possible_length if length > 0)
        for metadata in regions
        if metadata is not None and any(length > 0 for length in metadata.general_desc.possible_length or ())
    )


def _could_hold_phone(text: str) -> bool:
    """False only when libphonenumber's matcher cannot find a valid number in the text: no plus
    sign, no international prefix (00 and a country code) and no valid national number of China
    ending where a group of digits ends (the matcher may start a number anywhere in a run and
    strip prefixes in front of it). The matcher costs about 20 µs a candidate, this a few; it is
    tested to let every number the matcher finds through."""
    if not _PHONE_HINT.search(text):
        return False  # fewer than 7 digits close together
    if "+" in text:
        return True
    pattern, shortest, longest = _cn_numbers()
    for run in _DIGIT_RUN.finditer(text):
        groups = list(_DIGITS.finditer(text, run.start(), run.end()))
        digits = "".join(group.group() for group in groups)
        if len(digits) < shortest:
            continue
        end = 0
        for group in groups:
            if group.group().startswith("00") and digits[end + 2 : end + 3] not in ("", "0"):
                if len(digits) - end - 2 >= _shortest_international():
                    return True  # the international prefix, a country code and a number: another country's
            end += len(group.group())
            # A number glued to a letter after it is part of an identifier (`_glued`), unless the
            # letter starts an extension (x, ext, anexo, int).
            after = group.end()
            glued = after < len(text) and text[after].isascii() and text[after].isalnum() and not _EXTENSION.match(text, after)
            if not glued and end >= shortest and pattern.search(digits, max(0, end - longest), end):
                return True
    return False


def _glued(text: str, start: int, end: int) -> bool:
    before = text[start - 1] if start > 0 else ""
    after = text[end] if end < len(text) else ""
    return (before.isascii() and before.isalnum()) or (after.isascii() and after.isalnum())


# In this order: structured kinds first, so an ID, card or IBAN number is not taken for a phone.
_RULES: tuple[tuple[str, Callable[[str], Iterable[Span]]], ...] = (
    (URL_SECRET, _matches(_URL_PARAMETER, group=1, needs="=")),
    (URL_SECRET, _matches(_URL_PASSWORD, group=1, needs="://")),
    (SECRET, _secrets),
    (EMAIL, _emails),
    (IBAN, _ibans),
    (ID_NUMBER, _matches(_ID_NUMBER, id_number_valid)),
    (BANK_CARD, _matches(_CARD, _card_valid)),
    (SSN, _ssns),
    (IP, _ipv4s),
    (IP, _ipv6s),
    (PHONE, _phones),
)


def find(text: str) -> list[tuple[int, int, str]]:
    """The personal data in a text: (start, end, kind) over the original text, in order."""
    folded, origin = fold(text)
    found: list[tuple[int, int, str]] = []
    for kind, rule in _RULES:
        spans = [span for span in rule(folded) if span[1] > span[0]]
        for start, end in spans:
            folded = folded[:start] + _MASK * (end - start) + folded[end:]
            found.append((start, end, kind))
    if origin is not None:
        found = [(origin[start], origin[end - 1] + 1, kind) for start, end, kind in found]
    return sorted(found)


def redact(text: str, found: Counter | None = None) -> str:
    """The text with every piece of personal data replaced by its placeholder; `found` counts
    them by kind. Placeholders already there are left alone (redacting twice changes nothing)."""
    spans = find(text)
    if not spans:
        return text
    found = Counter() if found is None else found
    pieces, end = [], 0
    for start, stop, kind in spans:
        pieces.append(text[end:start])
        pieces.append(placeholder(kind))
        found[kind] += 1
        end = stop
    return "".join(pieces) + text[end:]


def pseudonym(value: str, found: Counter | None = None) -> str:
    """An identifier holding personal data replaced whole by `anon-` and 20 letters (a-p) of its
    SHA-256: the same id always gives the same pseudonym, and the pseudonym holds nothing any
    rule finds. An id without personal data is returned as it is.

    In an id, a phone number counts only in a form that is one beyond doubt (a `+` and a country
    code, or a mainland mobile number of 11 digits): ids built from dates and counters
    ("2026-11-18-10") read as valid numbers to the matcher, and renaming them would break the
    lineage users follow by request_id."""
    if not any(kind != PHONE or _unmistakable_phone(value[start:end]) for start, end, kind in find(value)):
        return value
    if found is not None:
        redact(value, found)
    digest = hashlib.sha256(value.encode()).hexdigest()[:20]
    return PSEUDONYM_PREFIX + digest.translate(_HEX_AS_LETTERS)


_HEX_AS_LETTERS = str.maketrans("0123456789abcdef", "abcdefghijklmnop")
_MAINLAND_MOBILE = re.compile(r"1[3-9]\d{9}")


def _unmistakable_phone(number: str) -> bool:
    folded = fold(number)[0]
    return folded.lstrip().startswith("+") or _MAINLAND_MOBILE.fullmatch("".join(_DIGITS.findall(folded))) is not None


def id_forms(ids: Iterable[str]) -> list[str]:
    """Each id, and after it its pseudonym when it holds personal data: every form the id can
    have in the tables and exports (for erasure)."""
    forms: list[str] = []
    for value in ids:
        forms.append(value)
        alias = pseudonym(value)
        if alias != value:
            forms.append(alias)
    return forms


# --- the column form ---------------------------------------------------------------------

def _raw_class(python_class: str) -> str:
    """An RE2 class of the characters a Python class matches
    and of every character that folds into them only."""
    matches = re.compile(python_class).fullmatch
    # Punctuation and spaces live below U+3100 and among the full-width forms.
    members = {chr(code) for code in (*range(0x3100), *range(0xFE00, 0x10000)) if matches(chr(code))}
    members.update(chr(code) for code, folded in _fold_table().items() if folded and all(matches(c) for c in folded))
    return "[" + "".join(_re2_escape(c) for c in sorted(members)) + "]"


@functools.cache
def candidate_pattern() -> str:
    """An RE2 pattern that every raw text `redact` would change matches (and few others): each
    rule's anchor over the raw text, its punctuation widened to what folds into it; and any
    character that folds into an ASCII letter, digit or @, or is invisible."""
    suspect = sorted(
        chr(code) for code, folded in _fold_table().items() if not folded or any(c.isascii() and (c.isalnum() or c == "@") for c in folded)
    )
    colon, dot, equals, space = _raw_class(":"), _raw_class(r"\."), _raw_class("="), _raw_class(r"\s")
    punctuation, separator = _raw_class(_PHONE_SEPARATOR), _raw_class(r"[ \-]")
    opening, closing = _raw_class(r"[\[({<]"), _raw_class(r"[\])}>]")
    pieces = [
        "[" + "".join(_re2_escape(c) for c in suspect) + "]",
        "@",
        "(?i:" + opening + space + "?at" + space + "?" + closing + ")",
        _raw_class("[?&#;]") + r"[A-Za-z_\-]*" + equals,
        colon + "//[^/]*" + colon,
        "[0-9A-Fa-f]*" + colon + "[0-9A-Fa-f]*" + colon,
        "[0-9]{1,3}" + dot + "[0-9]{1,3}" + dot + "[0-9]{1,3}" + dot + "[0-9]{1,3}",
        # 7 digits among separators, from a digit not glued to a letter or digit before it to one
        # not glued after it but to an extension (phones, cards and SSNs are taken only whole); ID
        # numbers may end in X.
        "(?:^|[^A-Za-z0-9])[0-9](?:" + punctuation + "{0,4}[0-9]){6,}(?:$|[^A-Za-z0-9]|(?i:e?xt|x|int|anexo))",
        "(?:^|[^A-Za-z0-9])[0-9]{6}" + separator + "?[0-9]{4}" + separator + "?[0-9]{4}" + separator + "?[0-9]{3}[0-9Xx]",
        "(?i:ssn|social security|社会安全号)",
        "sk-",
        "AKIA|ASIA",
        "(?i:bearer)",
        "(?i:" + _TOKEN_NAMES + "|" + _PASSWORD_NAMES + ")[\"']?" + space + "*(?:" + equals + "|" + colon + ")",
        "(?:^|[^A-Za-z0-9])(?i:" + "|".join(_IBAN_LENGTHS) + r")[0-9]{2}(?:[ \-]?[A-Za-z0-9]){10}",  # an IBAN's start
    ]
    return "|".join(pieces)


def _candidates(texts: pa.Array) -> np.ndarray:
    return np.flatnonzero(pc.fill_null(pc.match_substring_regex(texts, candidate_pattern()), False).to_numpy(zero_copy_only=False))


def redact_column(texts: pa.Array, found: Counter, pseudonymize: bool = False) -> pa.Array:
    """`redact` over a string column (or `pseudonym`, for a column of ids); only texts the
    candidate pattern matches are visited."""
    candidates = _candidates(texts)
    if not len(candidates):
        return texts
    originals = texts.take(pa.array(candidates)).to_pylist()
    changed, replacements = [], []
    for index, text in enumerate(originals):
        if text is None:
            continue
        replaced = pseudonym(text, found) if pseudonymize else redact(text, found)
        if replaced != text:
            changed.append(index)
            replacements.append(replaced)
    if not changed:
        return texts
    mask = np.zeros(len(texts), dtype=bool)
    mask[candidates[changed]] = True
    return pc.replace_with_mask(texts, pa.array(mask), pa.array(replacements, texts.type))


def _redact_list_values(lists: pa.ListArray, redact_values: Callable[[pa.Array], pa.Array]) -> pa.ListArray:
    """A list column with `redact_values` applied to its values (a struct's fields or strings)."""
    start, end = lists.offsets[0].as_py(), lists.offsets[-1].as_py()
    flat = lists.values.slice(start, end - start)  # this batch's values, also when it is a slice
    redacted = redact_values(flat)
    if redacted is flat:
        return lists
    mask = lists.is_null() if lists.null_count else None
    return pa.ListArray.from_arrays(pc.subtract(lists.offsets, start), redacted, type=lists.type, mask=mask)


def redact_batch(
    batch: pa.RecordBatch,
    texts: Sequence[str] = (),
    docs: str | None = None,
    ids: Sequence[str] = (),
    label_lists: Sequence[str] = (),
) -> tuple[pa.RecordBatch, Counter]:
    """The batch with placeholders in its `texts` columns, in the values of its `label_lists`
    (lists of strings) and in the `content` of each doc of `docs`; pseudonyms for the `ids`
    columns and each doc's `id`. Also what was found, by kind."""
    found: Counter = Counter()
    columns = {name: batch.column(name) for name in batch.schema.names}
    for name in texts:
        columns[name] = redact_column(columns[name], found)
    for name in ids:
        columns[name] = redact_column(columns[name], found, pseudonymize=True)
    for name in label_lists:
        columns[name] = _redact_list_values(columns[name], lambda values: redact_column(values, found))
    if docs is not None:

        def redact_docs(flat: pa.StructArray) -> pa.Array:
            content = redact_column(flat.field("content"), found)
            doc_ids = redact_column(flat.field("id"), found, pseudonymize=True)
            if content is flat.field("content") and doc_ids is flat.field("id"):
                return flat
            fields = {field.name: flat.field(field.name) for field in flat.type}
            fields.update(content=content, id=doc_ids)
            return pa.StructArray.from_arrays(list(fields.values()), fields=list(flat.type))

        columns[docs] = _redact_list_values(columns[docs], redact_docs)
    return pa.RecordBatch.from_arrays(list(columns.values()), schema=batch.schema), found
