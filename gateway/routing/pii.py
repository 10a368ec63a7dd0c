"""Personal-data detection for routing: emails, phone numbers, card numbers (Luhn), IBANs (mod 97),
national ID patterns. A detector is anything with `detect(text) -> set[str]`; Presidio is optional.

Every check costs time linear in the input, whatever the input: each pattern either has one way to match
each character or a bounded length, so the regex engine never backtracks far; checksums and group rules
then run on at most `MAX_CHECKS` candidates per kind. Separators (`.`, `/`, `_`, dashes, no-break spaces)
count as spaces and letters are compared without case, so `4111.1111.1111.1111` and a lower-case IBAN are
found like their usual spellings.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left
from collections.abc import Iterator
from typing import Protocol

# Full-width forms (as typed with CJK input methods) and other scripts' digits read as ASCII, one
# character for one, so that positions stay the same.
_FULLWIDTH = {0xFF01 + i: 0x21 + i for i in range(94)} | {0x3000: 0x20}
_OTHER_DIGIT = re.compile(r"(?![0-9])\d")
_SEPARATORS = ".-/_\t\u00a0\u2007\u2009\u202f\u2010\u2011\u2012\u2013\u2014\u2212"
_TO_SPACE = str.maketrans({ch: " " for ch in _SEPARATORS})

# One local-part character before the `@` is enough to decide (any suffix of a local part is one), so the
# pattern never rescans a long run of letters; the domain part has one way to match each character.
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# On the normalised text (separators are spaces). Digits and separators are disjoint, so these are linear.
_DIGIT_RUN = re.compile(r"\d+(?: {1,3}\d+)*")
_DIGITS = re.compile(r"\d+")
_SEPARATOR_RUN = re.compile(r"\D+")
# Patterns start with the character they need (the word-boundary test follows as a lookbehind): the engine
# then skips ahead to candidate characters instead of trying every position.
# The first digit of each group that has enough digits ahead to hold a card (13 digits).
_CARD_AT = re.compile(r"\d(?<!\d\d)(?=\d{2}(?: {0,3}\d){10})")
_CARD_SPAN = 19 + 18 * 3
# A run of digit groups with at least 7 digits (the lookahead is bounded); one match per run, cut after 64
# groups or 24 digits in a group (longer groups hold no phone number).
_PHONE_RUN = re.compile(r"(?<![\w+])[+(]{0,2}(?=\d(?:[ ()]{0,3}\d){6})(\d{1,24}(?:[ ()]{1,3}\d{1,24}){0,63})")
_PHONE_REACH = 2 + 24 + 63 * 27 + 1
_IBAN_START = re.compile(r"[A-Z](?<![A-Z0-9][A-Z])[A-Z]\d{2}")
_IBAN_BODY = re.compile(r"[A-Z0-9]+(?: [A-Z0-9]+)*")
_NATIONAL_IDS = (
    re.compile(r"\d{3} (?<!\w\d\d\d )(?<!000 )(?<!666 )(?<!9\d\d )(?!00)\d{2} (?!0000)\d{4}\b"),  # US SSN
    re.compile(r"[A-CEGHJ-PR-TW-Z](?<!\w.)[A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"),  # UK NINO
    re.compile(r"[12](?<!\w[12]) ?\d{2} ?(?:0[1-9]|1[0-2]) ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}\b"),  # FR INSEE
)
_SE_PERSONNUMMER = re.compile(r"\d(?<!\w\d)\d[01]\d[0-3]\d ?\d{4}\b")
_SE_KEYWORD = re.compile(r"\b(?:personnummer|ssn|id)\b", re.IGNORECASE)
_NEWLINE = re.compile(r"\n")

_SLICE = 32 * 1024   # characters per regex call
_REACH = 64          # longest match (with its lookarounds) of the bounded patterns, and then some
_EMAIL_REACH = 1024  # e-mail addresses found across slice ends: longer than any real one
_LUHN_DOUBLE = str.maketrans("0123456789", "0246813579")  # the digit sum of 2*d, for each digit d
_IBAN_DIGITS = str.maketrans({chr(c): str(c - 55) for c in range(ord("A"), ord("Z") + 1)})
MAX_CHECKS = 500   # candidates checked by code per kind and text; more count as found (fail closed)
_IBAN_MAX = 34
# The IBAN registry's countries and those that use IBANs outside it.
IBAN_COUNTRIES = frozenset({
    "AD", "AE", "AL", "AO", "AT", "AZ", "BA", "BE", "BF", "BG", "BH", "BI", "BJ", "BR", "BY", "CF", "CG", "CH",
    "CI", "CM", "CR", "CV", "CY", "CZ", "DE", "DJ", "DK", "DO", "DZ", "EE", "EG", "ES", "FI", "FK", "FO", "FR",
    "GA", "GB", "GE", "GI", "GL", "GQ", "GR", "GT", "GW", "HN", "HR", "HU", "IE", "IL", "IQ", "IR", "IS", "IT",
    "JO", "KM", "KW", "KZ", "LB", "LC", "LI", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MG", "MK", "ML",
    "MN", "MR", "MT", "MU", "MZ", "NE", "NI", "NL", "NO", "OM", "PK", "PL", "PS", "PT", "QA", "RO", "RS", "RU",
    "SA", "SC", "SD", "SE", "SI", "SK", "SM", "SN", "SO", "ST", "SV", "TD", "TG", "TL", "TN", "TR", "UA", "VA",
    "VG", "XK", "YE",
})
_IBAN_WINDOW = 2 * _IBAN_MAX + 2   # characters after a start that can hold 34 letters and digits


class PiiDetector(Protocol):
    def detect(self, text: str) -> set[str]: ...


def luhn_ok(digits: str) -> bool:
    rev = digits[::-1]
    summed = rev[0::2] + rev[1::2].translate(_LUHN_DOUBLE)
    return (sum(summed.encode()) - 48 * len(summed)) % 10 == 0


def iban_ok(iban: str) -> bool:
    s = iban.replace(" ", "").upper()
    if not 15 <= len(s) <= _IBAN_MAX or not s.isascii() or not s.isalnum():
        return False
    return int((s[4:] + s[:4]).translate(_IBAN_DIGITS)) % 97 == 1


def _finditer(pattern: re.Pattern, text: str, reach: int) -> Iterator[re.Match]:
    """`pattern.finditer(text)`, in regex calls over at most `_SLICE + reach` characters, so that no single
    call holds the interpreter long (a scan in a worker thread then leaves the event loop its turns).

    The same matches as one call, provided a match and what its lookaheads read end within `reach`
    characters of its start: lookbehinds see before `pos`, and a match starting before a slice's end is
    found whole in that slice's call; the next call resumes where it ended, as finditer does."""
    pos, n = 0, len(text)
    while pos < n:
        stop = pos + _SLICE
        resume = stop
        for m in pattern.finditer(text, pos, min(n, stop + reach)):
            if m.start() >= stop:
                break
            resume = max(stop, m.end())
            yield m
        pos = resume


def _found(pattern: re.Pattern, text: str, reach: int) -> bool:
    return next(_finditer(pattern, text, reach), None) is not None


def ascii_forms(text: str) -> str:
    """`４１１１` and `٤١١١` as `4111`, `ｊａｎｅ＠ｅｘａｍｐｌｅ．ｏｒｇ` as `jane@example.org`; same length."""
    if text.isascii():
        return text
    text = text.translate(_FULLWIDTH)
    digits = {ord(m.group()): str(unicodedata.digit(m.group())) for m in _finditer(_OTHER_DIGIT, text, 1)}
    return text.translate(digits) if digits else text


def normalise(text: str) -> str:
    """Separators become spaces; same length as `text`, so positions carry over."""
    return text.translate(_TO_SPACE)


class RegexPiiDetector:
    """Fast checks that run on every request whose policy asks about personal data.

    The patterns find candidates at C speed; the checksums and group rules run in Python on at most
    `MAX_CHECKS` candidates per kind. A text with more candidates than that counts as containing the kind:
    it could not be cleared in bounded time, so it is treated as personal (fail closed)."""

    def detect(self, text: str) -> set[str]:
        found: set[str] = set()
        text = ascii_forms(text)
        if "@" in text and _found(_EMAIL, text, _EMAIL_REACH):
            found.add("email")
        if not _found(_DIGITS, text, 1):
            return found
        norm = normalise(text)
        upper = norm.upper()
        cards = _card_spans(text, norm)
        if cards is None or cards:
            found.add("card")
        if _has_iban(upper):
            found.add("iban")
        if any(_found(p, upper, _REACH) for p in _NATIONAL_IDS) or _has_personnummer(norm):
            found.add("national_id")
        if _has_phone(norm, cards or []):
            found.add("phone")
        return found


def _groups_at(text: str, norm: str, start: int, span: int) -> tuple[list[str], list[str]]:
    """The digit groups (and the separators between them, as written) of the run that starts at `start`,
    within `span` characters; a group cut by the span is left out."""
    stop = min(len(norm), start + span)
    m = _DIGIT_RUN.match(norm, start, stop)
    if m is None:
        return [], []
    groups = m.group().split()
    if m.end() == stop < len(norm) and norm[stop].isdigit():
        groups.pop()
    return groups, _SEPARATOR_RUN.findall(text, start, m.end())[:max(0, len(groups) - 1)]


def _card_spans(text: str, norm: str) -> list[tuple[int, int]] | None:
    """Where card numbers are (13 to 19 digits, Luhn-valid, one bare group or whole groups joined by one
    and the same separator); None when there were too many candidates to check."""
    spans = []
    for checks, m in enumerate(_finditer(_CARD_AT, norm, _REACH)):
        if checks == MAX_CHECKS:
            return None
        start = m.start()
        groups, seps = _groups_at(text, norm, start, _CARD_SPAN)
        width = _card_from(groups, seps)
        if width:
            spans.append((start, start + width))
    return spans


def _card_from(groups: list[str], seps: list[str]) -> int:
    """The length in characters of the first card window starting at the first group, or 0. Every group
    but the last has 3 digits or more (cards are not printed in pairs); all separators are the same."""
    if not groups:
        return 0
    total = width = len(groups[0])
    if total >= 13:
        return width if total <= 19 and luhn_ok(groups[0]) else 0
    for j in range(1, len(groups)):
        if len(groups[j - 1]) < 3 or seps[j - 1] != seps[0]:
            return 0
        total += len(groups[j])
        width += len(seps[j - 1]) + len(groups[j])
        if total > 19:
            return 0
        if total >= 13 and luhn_ok("".join(groups[:j + 1])):
            return width
    return 0


def _has_phone(norm: str, cards: list[tuple[int, int]]) -> bool:
    """7 to 15 digits in whole groups of one run: at least two groups, or one after `+`, `00` or `(`.
    A run that holds a card number is the card's, not a phone's."""
    card_starts = [start for start, _ in cards]
    checks = 0
    for m in _finditer(_PHONE_RUN, norm, _PHONE_REACH):
        first, end = m.start(1), m.end()
        k = bisect_left(card_starts, first)
        if (k < len(cards) and cards[k][0] < end) or (k > 0 and cards[k - 1][1] > first):
            continue  # the run holds (part of) a card number
        groups: list[int] = []
        lengths = (g.end() - g.start() for g in _DIGITS.finditer(norm, first, end))
        prefixed = m.start() < first or norm.startswith("00", first)
        i = 0
        while True:
            checks += 1
            if checks > MAX_CHECKS:
                return True
            total, j = 0, i
            while total <= 15:
                while j >= len(groups):
                    length = next(lengths, None)
                    if length is None:
                        break
                    groups.append(length)
                if j >= len(groups):
                    break
                total += groups[j]
                if 7 <= total <= 15 and (j > i or (i == 0 and prefixed)):
                    return True
                j += 1
            if i + 1 >= len(groups):
                break
            i += 1
    return False


def _has_iban(upper: str) -> bool:
    """A country code and two check digits, then whole groups up to 34 characters, passing mod 97."""
    checks = 0
    for m in _finditer(_IBAN_START, upper, _REACH):
        start = m.start()
        if upper[start:start + 2] not in IBAN_COUNTRIES:
            continue
        checks += 1
        if checks > MAX_CHECKS:
            return True
        body = _IBAN_BODY.match(upper, start, start + _IBAN_WINDOW)
        chunks = body.group().split(" ") if body else []
        # mod 97 of the rearranged number (account part, then country and check digits), chunk by chunk
        moved = int(upper[start:start + 4].translate(_IBAN_DIGITS))  # always 6 digits
        chunks[0] = chunks[0][4:]
        remainder = length = digits = 0
        for chunk in chunks:
            length += len(chunk)
            if length > _IBAN_MAX - 4:
                break
            if chunk:
                number = chunk.translate(_IBAN_DIGITS)
                remainder = (remainder * pow(10, len(number), 97) + int(number)) % 97
                digits += len(chunk) if chunk.isdigit() else sum(map(str.isdigit, chunk))
            # Account parts are mostly digits: this keeps upper-cased prose from passing the 1-in-97 check.
            if length >= 11 and 2 * digits >= length and (remainder * 1_000_000 + moved) % 97 == 1:
                return True
    return False


def _has_personnummer(norm: str) -> bool:
    """A Swedish personnummer shape followed, on the same line, by a keyword that says what it is."""
    keywords = [k.start() for k in _finditer(_SE_KEYWORD, norm, _REACH)]
    if not keywords:
        return False
    newlines: list[int] | None = None
    for checks, m in enumerate(_finditer(_SE_PERSONNUMMER, norm, _REACH)):
        if checks == MAX_CHECKS:
            return True
        k = bisect_left(keywords, m.end())
        if k == len(keywords):
            return False  # no keyword after this one, nor after any later candidate
        if newlines is None:
            newlines = [n.start() for n in _finditer(_NEWLINE, norm, 1)]
        n = bisect_left(newlines, m.end())
        if n == len(newlines) or keywords[k] < newlines[n]:
            return True
    return False


class PresidioPiiDetector:
    """Optional: Microsoft Presidio's analyzer (pip install presidio-analyzer, with a spaCy model)."""

    _MAP = {"EMAIL_ADDRESS": "email", "PHONE_NUMBER": "phone", "CREDIT_CARD": "card", "IBAN_CODE": "iban",
            "US_SSN": "national_id", "UK_NHS": "national_id"}

    def __init__(self) -> None:
        from presidio_analyzer import AnalyzerEngine  # optional extra

        self._engine = AnalyzerEngine()

    def detect(self, text: str) -> set[str]:
        return {self._MAP[r.entity_type] for r in self._engine.analyze(text=text, language="en")
                if r.entity_type in self._MAP}
