"""PII scrubbing: e-mail addresses and phone numbers become placeholders in exported training data; few-shot
examples also lose the other client's name and any words of the client's that the coach's reply repeats.

Phone numbers are found with ``phonenumbers`` (the Python port of Google's libphonenumber): numbers written
in international form (``+44 20 7946 0958``) in any region, and national forms valid in
:data:`DEFAULT_REGIONS`. E-mail addresses use :data:`EMAIL_PATTERN` (``local@domain.tld``). Names are
replaced where the name is known (:func:`scrub_names`: the client's stored name); in few-shot examples, other
names, places, employers and acronyms are caught by their capitals (:func:`scrub_proper_nouns`), a heuristic:
the scrubber lowers, not removes, the risk of personal data in a fine-tune or a few-shot example.
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


NAME_PLACEHOLDER = "[NAME]"
ECHO_PLACEHOLDER = "[…]"
ECHO_WORDS = 4
"""A run of this many words that the coach's message shares with the client's messages counts as an echo."""
_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def scrub_names(text: str, names: Sequence[str]) -> str:
    """``text`` with each of ``names`` (a client's name as stored: the whole name and each of its words of two
    or more letters, case-insensitive, whole words only) replaced by ``[NAME]``. Over-matches a name that is
    also a common word ("Will"), which only removes more."""
    words = {w for name in names for w in (name.strip(), *_TOKEN.findall(name)) if len(w) >= 2}
    if not words:
        return text
    pattern = re.compile(
        r"(?<![\w])(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")(?![\w])",
        re.IGNORECASE,
    )
    return pattern.sub(NAME_PLACEHOLDER, text)


def redact_echoes(text: str, sources: Sequence[str], words: int = ECHO_WORDS) -> str:
    """``text`` with every run of at least ``words`` consecutive words that also occurs, in that order, in one
    of ``sources`` (case-insensitive, punctuation ignored) replaced by one ``[…]``: a reply that quotes or
    repeats the client ("You said you feel like …") loses the client's words. Shorter echoes (three words or
    fewer), paraphrases and translations are not detected."""
    seen: set[tuple[str, ...]] = set()
    for source in sources:
        tokens = [t.lower() for t in _TOKEN.findall(source)]
        seen.update(tuple(tokens[i : i + words]) for i in range(len(tokens) - words + 1))
    matches = list(_TOKEN.finditer(text))
    lowered = [m.group().lower() for m in matches]
    covered = [False] * len(matches)
    for i in range(len(matches) - words + 1):
        if tuple(lowered[i : i + words]) in seen:
            covered[i : i + words] = [True] * words
    return _replace_runs(text, matches, covered)


_SENTENCE_START = re.compile(r"[.!?:;\n\"“(]")
_APOSTROPHE = re.compile("['’]")
_FIRST_PERSON = frozenset(("i", "i'm", "i’m", "i'd", "i’d", "i'll", "i’ll", "i've", "i’ve"))


def scrub_proper_nouns(text: str) -> str:
    """``text`` with every run of likely proper nouns and acronyms replaced by one ``[…]``: words written in
    capitals (``HIV``, ``NYC``; two letters or more) and capitalised words inside a sentence (``Robert
    Delacroix``, ``Lyon``, ``Acme``), not the first word of a sentence nor "I". A heuristic in place of named
    entity recognition (no offline model here): a name that opens a sentence passes, and a language that
    capitalises its nouns (German) loses them all, which only removes more."""
    matches = list(_TOKEN.finditer(text))
    covered = [False] * len(matches)
    for i, match in enumerate(matches):
        word = match.group()
        if word.lower() in _FIRST_PERSON or not word[0].isupper() or not _APOSTROPHE.sub("", word).isalpha():
            continue  # (a code with digits, Q7-12, is no name)
        acronym = len(word) >= 2 and word.isupper()
        opens = i == 0 or bool(_SENTENCE_START.search(text[matches[i - 1].end() : match.start()]))
        covered[i] = acronym or not opens
    return _replace_runs(text, matches, covered)


def _replace_runs(text: str, matches: list[re.Match[str]], covered: list[bool]) -> str:
    """``text`` with each run of consecutive ``covered`` word ``matches`` replaced by one ``[…]``."""
    parts: list[str] = []
    last = 0
    i = 0
    while i < len(matches):
        if not covered[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(matches) and covered[j + 1]:
            j += 1
        parts += [text[last : matches[i].start()], ECHO_PLACEHOLDER]
        last = matches[j].end()
        i = j + 1
    parts.append(text[last:])
    return "".join(parts)
