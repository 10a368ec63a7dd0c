"""Personal-data detection for routing: emails, phone numbers, card numbers (Luhn), IBANs (mod 97),
national ID patterns. A detector is anything with `detect(text) -> set[str]`; Presidio is optional."""

from __future__ import annotations

import re
from typing import Protocol

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_PHONE = re.compile(r"(?<![\w+])(?:\+|00)?(?:\(?\d{1,4}\)?[ .-]?){2,5}\d{2,4}(?!\w)")
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_NATIONAL_IDS = (
    re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"),        # US SSN
    re.compile(r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"),  # UK NINO
    re.compile(r"\b[12] ?\d{2} ?(?:0[1-9]|1[0-2]) ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}\b"),  # FR INSEE
    re.compile(r"\b\d{2}[01]\d[0-3]\d-?\d{4}\b(?=.*\b(?:personnummer|ssn|id)\b)", re.I),  # SE personnummer
)


class PiiDetector(Protocol):
    def detect(self, text: str) -> set[str]: ...


def luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = ord(ch) - 48
        if i % 2 == parity:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    s = iban.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


class RegexPiiDetector:
    """Fast checks that run on every request whose policy asks about personal data."""

    def detect(self, text: str) -> set[str]:
        found: set[str] = set()
        if "@" in text and _EMAIL.search(text):
            found.add("email")
        has_digits = any(ch.isdigit() for ch in text)
        if not has_digits:
            return found
        cards = set()
        for m in _CARD.finditer(text):
            digits = re.sub(r"\D", "", m.group())
            if 13 <= len(digits) <= 19 and luhn_ok(digits):
                found.add("card")
                cards.add(m.group())
        for m in _IBAN.finditer(text):
            if iban_ok(m.group()):
                found.add("iban")
        if any(p.search(text) for p in _NATIONAL_IDS):
            found.add("national_id")
        for m in _PHONE.finditer(text):
            digits = re.sub(r"\D", "", m.group())
            if 7 <= len(digits) <= 15 and m.group() not in cards and _looks_like_phone(m.group()):
                found.add("phone")
                break
        return found


def _looks_like_phone(s: str) -> bool:
    s = s.strip()
    # A bare run of digits is more often a number than a phone; ask for a + prefix or separators.
    return s.startswith(("+", "00", "(")) or bool(re.search(r"\d[ .-]\d", s))


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
