"""Text normalisation before crisis detection: undo the tricks that hide risk words from a lexicon.

:func:`normalise` maps a client's message to lower-case text in which obfuscated risk words read plainly,
so that the lexicon (:mod:`app.handoff.risk`), the non-English cues (:mod:`app.handoff.languages`) and the
learned component (:mod:`app.handoff.crisis_model`) see the same words. Steps, in order:

1. **NFKC** (Unicode Standard Annex #15): compatibility forms fold to plain letters — fullwidth ``ｋｉｌｌ``,
   mathematical bold ``𝐤𝐢𝐥𝐥``, ligatures ``ﬁ``, superscripts.
2. **Format characters removed**: every code point of general category ``Cf`` (zero-width space, joiner and
   non-joiner, soft hyphen, word joiner, BOM, bidi controls…), so ``ki\u200bll`` reads ``kill``.
3. **Combining marks removed** after canonical decomposition (category ``Mn``): accents (``é`` → ``e``,
   ``ã`` → ``a``; the non-English cues are written without them) and "zalgo" stacks of diacritics.
4. **Lower-case**, and a few look-alike letters from Cyrillic and Greek (``а е о р с у х і ѕ ј к м т``,
   ``ο α ι ε κ ν τ``) mapped to Latin — only inside a word that also has Latin letters, so Russian or Greek
   text is left alone (after Unicode TR #39 *confusables*, a small subset).
5. **Spaced-out letters** joined: a run of at least three single letters separated by one space, dot, dash,
   underscore or asterisk (``k i l l``, ``k.i.l.l``, ``s-u-i-c-i-d-e``) becomes one word when that word is a
   risk word (``a b c`` and ``U.S.A.`` stay); a wider gap (two spaces) separates words, so
   ``k i l l  m y s e l f`` → ``kill myself``. A run glued into a known risk phrase (``killmyself``) is
   split back (:data:`_GLUED`). Runs of spaces and tabs become one space (newlines stay).
6. **Leetspeak** inside a word that mixes letters with ``0 1 3 4 5 7 @ $ !`` (``k1ll``, ``mys3lf``,
   ``su1c1de``, ``$uicide``, ``unal1ve``): the digits map to letters (``1``/``!`` → ``i``, ``3`` → ``e``,
   ``4``/``@`` → ``a``, ``0`` → ``o``, ``5``/``$`` → ``s``, ``7`` → ``t``) and the word is replaced only
   when the result is a risk word of :data:`RISK_WORDS` — ``mp3``, ``2nd``, ``b4`` and ``10am`` stay.
7. **Slang and euphemisms** (:data:`SLANG`): ``kms`` → ``kill myself``, ``kys`` → ``kill yourself``,
   ``unalive`` → ``kill``, ``sewerslide`` / ``sewer slide`` → ``suicide``, ``self delete`` → ``kill myself``.

The function is pure, idempotent on its own output and fast (a few µs per short message). It does not
keep character offsets: detectors report cue names, not spans.
"""

from __future__ import annotations

import re
import unicodedata

_CONFUSABLES = str.maketrans(
    {
        "а": "a",
        "е": "e",
        "о": "o",
        "р": "p",
        "с": "c",
        "у": "y",
        "х": "x",
        "і": "i",
        "ѕ": "s",
        "ј": "j",
        "к": "k",
        "м": "m",
        "т": "t",
        "ο": "o",
        "α": "a",
        "ι": "i",
        "ε": "e",
        "κ": "k",
        "ν": "v",
        "τ": "t",
    }
)
_LATIN = re.compile(r"[a-z]")
_MIXED_WORD = re.compile(r"\w*[\u0370-\u03ff\u0400-\u04ff]\w*")

_SPACED = re.compile(r"(?<![\w])(?:[a-z0-9@$!](?:[ ._*\-]|\Z|(?=[ ]{2}))){3,}")
"""A run of single characters each followed by one separator (or the run's end)."""

_SPACES = re.compile(r"[^\S\n]+")
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})
_LEET_WORD = re.compile(r"(?<![\w@$!])(?=[\w@$!]*[a-z])(?=[\w@$!]*[013457@$!])[a-z013457@$!]{3,}(?![\w@$])")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


RISK_WORDS = _words(
    """
    kill kills killing killed myself self suicide suicidal suicidality die dying died dead death
    unalive unalived unaliving alive live living life end ending hang hanging overdose overdosed cut cutting
    cuts harm harming hurt hurting wrist wrists pills pill noose rope jump bridge gun shoot worthless hopeless
    want wanna gonna going my me i burden goodbye note knife blade razor bleed bleeding
    quiero quero matarme matar morir morirme suicidarme suicidar morrer vivir viver veux mourir tuer suicider
    vivre umbringen sterben leben selbstmord suizid
    """
)
"""Words a leetspeak or spaced-out spelling is decoded to (anything else keeps its spelling), English and
the key verbs of the non-English cues (:mod:`app.handoff.languages`)."""

_GLUED = (
    (re.compile(r"\b(kill|killing|hurt|hurting|cut|cutting|hang|hanging|end|ending|harm)(myself)\b"), r"\1 \2"),
    (re.compile(r"\b(end|ending|take|taking)(my)(life)\b"), r"\1 \2 \3"),
    (re.compile(r"\b(want|wanna)(to)?(die)\b"), r"\1 to \3"),
    (re.compile(r"\bself(harm)\b"), r"self \1"),
)

SLANG: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bkms\b"), "kill myself"),
    (re.compile(r"\bkys\b"), "kill yourself"),
    (re.compile(r"\bun ?alive(d|ing)?\b"), "kill"),
    (re.compile(r"\bsewer ?slide\b"), "suicide"),
    (re.compile(r"\bself[ -]?delet(e|ing)\b"), "kill myself"),
    (re.compile(r"\b(want|wanna|going|ready|need|have) 2\b"), r"\1 to"),
)
"""Internet slang for suicide and self-harm, as ``(pattern, replacement)`` on lower-cased text."""


def _strip_marks(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    kept = "".join(ch for ch in decomposed if unicodedata.category(ch) not in ("Mn", "Cf"))
    return unicodedata.normalize("NFC", kept)


def _unconfuse(match: re.Match[str]) -> str:
    word = match.group(0)
    return word.translate(_CONFUSABLES) if _LATIN.search(word) else word


def _risk_word(word: str) -> bool:
    """Whether ``word`` (already decoded) is a risk word or a known risk phrase glued into one word."""
    return word in RISK_WORDS or word.rstrip("s") in RISK_WORDS or any(p.fullmatch(word) for p, _ in _GLUED)


def _join_spaced(match: re.Match[str]) -> str:
    run = match.group(0)
    joined = re.sub(r"[ ._*\-]", "", run)
    decoded = joined.translate(_LEET)
    if not _risk_word(decoded):
        return run
    return decoded + (" " if run.endswith((" ", ".", "-", "_", "*")) else "")


def _decode_leet(match: re.Match[str]) -> str:
    word = match.group(0)
    decoded = word.translate(_LEET)
    return decoded if _risk_word(decoded) else word


def fold(text: str) -> str:
    """Steps 1–4 of :func:`normalise` without the look-alikes: NFKC, format characters and combining marks
    removed, lower-cased (``"Não SOU"`` → ``"nao sou"``). For text no one disguises on purpose (a model's reply,
    :func:`app.handoff.signals.human_claim_language`), at a third of :func:`normalise`'s cost."""
    if text.isascii():  # (nothing to compose, strip or fold)
        return text.lower()
    return _strip_marks(unicodedata.normalize("NFKC", text)).lower()


def normalise(text: str) -> str:
    """The detection form of ``text`` (see the module docstring): NFKC, format characters and combining marks
    removed, lower-cased, look-alikes, spaced letters, leetspeak and slang undone. ``""`` for empty input."""
    if not text:
        return ""
    text = fold(text)
    if not text.isascii():
        text = _MIXED_WORD.sub(_unconfuse, text)
    text = _SPACED.sub(_join_spaced, text)
    text = _LEET_WORD.sub(_decode_leet, text)
    for pattern, replacement in _GLUED:
        text = pattern.sub(replacement, text)
    for pattern, replacement in SLANG:
        text = pattern.sub(replacement, text)
    return _SPACES.sub(" ", text)
