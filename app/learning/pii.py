"""PII scrubbing of training data: e-mail addresses and phone numbers become placeholders before export.

Phone numbers are found with ``phonenumbers`` (the Python port of Google's libphonenumber): numbers written
in international form (``+44 20 7946 0958``) in any region, and national forms valid in
:data:`DEFAULT_REGIONS`. E-mail addresses use :data:`EMAIL_PATTERN` (``local@domain.tld``). Names and other
identifiers are not detected: the scrubber lowers, not removes, the risk of personal data in a fine-tune.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import phonenumbers

EMAIL_PLACEHOLDER = "[EMAIL]"
PHONE_PLACEHOLDER = "[PHONE]"
EMAIL_PATTERN = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
"""An e-mail address in running text (RFC 5322's common subset: dot-atoms without quotes or comments)."""
DEFAULT_REGIONS: tuple[str, ...] = ("US", "GB", "DE", "FR", "AU", "NZ", "CA", "IE")
"""Regions (ISO 3166-1 alpha-2) whose national number formats are recognised without a ``+`` prefix."""


def scrub_pii(text: str, regions: Sequence[str] = DEFAULT_REGIONS) -> str:
    """``text`` with every e-mail address replaced by ``[EMAIL]`` and every valid phone number (libphonenumber
    ``Leniency.VALID`` for one of ``regions``, or international form) by ``[PHONE]``."""
    scrubbed = EMAIL_PATTERN.sub(EMAIL_PLACEHOLDER, text)
    spans: list[tuple[int, int]] = []
    for region in regions:
        for match in phonenumbers.PhoneNumberMatcher(scrubbed, region, leniency=phonenumbers.Leniency.VALID):
            spans.append((match.start, match.end))
    if not spans:
        return scrubbed
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    parts: list[str] = []
    last = 0
    for start, end in merged:
        parts.append(scrubbed[last:start])
        parts.append(PHONE_PLACEHOLDER)
        last = end
    parts.append(scrubbed[last:])
    return "".join(parts)
