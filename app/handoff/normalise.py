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
8. **Typos in risk words** (:func:`_untypo`): a word one edit (a letter dropped, added, changed, or two
   neighbours swapped: Damerau) from a long risk word of :data:`TYPO_TARGETS` becomes that word (``myslef``,
   ``sucidal``, ``suicde``, ``ovrdose``) — none of their one-edit neighbours is an English word but
   :data:`_REAL_NEIGHBOURS`; a short risk word written with a letter doubled or dropped (``kil``, ``kiill``,
   ``dieee``, ``selff``: :data:`STRETCHED_TARGETS`), or one of the :data:`MISSPELLINGS` (``wnat``, ``slef``,
   ``lfe``, Spanish texting ``kiero``). Short words get no general edit distance: one edit from ``die``,
   ``want`` or ``living`` are ``dye``, ``wait``, ``giving``.

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


TYPO_TARGETS = ("myself", "suicide", "suicidal", "overdose")
"""Risk words long enough that no everyday word is one edit from them, corrected at Damerau–Levenshtein distance
1: none of their neighbours is in the MiniLM tokenizer's 30,000-entry vocabulary, and the few that are words all
the same (a subword vocabulary misses ``overdone``) are :data:`_REAL_NEIGHBOURS`."""

_REAL_NEIGHBOURS = _words(
    "overdone overdoes overdosed overdoses suicides suicided suicida suicidas suicidar suicider suicidi"
)
"""Words one edit from a :data:`TYPO_TARGETS` word, left alone: English inflections and ``overdone``, and the
Spanish, Portuguese and French words the non-English cues read (``suicidas``, ``me suicidar``, ``me suicider``)."""

STRETCHED_TARGETS = ("kill", "die", "self", "want", "wanna", "life")
"""Short risk words also matched with each run of a repeated letter written one to three times (``kil``,
``kiill``, ``dieee``, ``selff``, ``wana``); no English word has those letters in that order (``pills`` is left
out: ``pils``)."""

MISSPELLINGS: dict[str, str] = {
    "wnat": "want",
    "watn": "want",
    "wnt": "want",
    "wamt": "want",
    "wnna": "wanna",
    "wnana": "wanna",
    "wanan": "wanna",
    "kll": "kill",
    "klil": "kill",
    "ikll": "kill",
    "slef": "self",
    "sefl": "self",
    "lfe": "life",
    "lfie": "life",
    "livng": "living",
    "lving": "living",
    "kiero": "quiero",
    "qiero": "quiero",
    "kisiera": "quisiera",
}
"""Common misspellings of short risk words (swapped or dropped letters, Spanish texting ``k`` for ``qu``) that
are not English words."""


def _stretched(word: str) -> set[str]:
    """``word`` with each run of one letter written one to three times (``kill`` → ``kil``, ``kiilll``…)."""
    spellings = {""}
    for run in re.findall(r"((\w)\2*)", word):
        spellings = {spelling + run[1] * times for spelling in spellings for times in (1, 2, 3)}
    return spellings - {word}


def one_edit(word: str) -> set[str]:
    """The strings one edit from ``word`` in the optimal-string-alignment form of the Damerau–Levenshtein distance
    (Damerau 1964, "A technique for computer detection and correction of spelling errors", CACM 7(3)): a letter
    dropped, added (``a``–``z``), changed, or two neighbours swapped; the candidate generation of Norvig's spelling
    corrector ("How to Write a Spelling Corrector", 2007). ``word`` itself is not among them."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    dropped = {head + tail[1:] for head, tail in splits if tail}
    swapped = {head + tail[1] + tail[0] + tail[2:] for head, tail in splits if len(tail) > 1}
    changed = {head + letter + tail[1:] for head, tail in splits if tail for letter in letters}
    added = {head + letter + tail for head, tail in splits for letter in letters}
    return (dropped | swapped | changed | added) - {word}


_TYPOS: dict[str, str] = {
    **{typo: target for target in TYPO_TARGETS for typo in one_edit(target) - _REAL_NEIGHBOURS},
    **{typo: target for target in STRETCHED_TARGETS for typo in _stretched(target)},
    **MISSPELLINGS,
}
"""Misspelling → risk word: :data:`TYPO_TARGETS` one edit away, :data:`STRETCHED_TARGETS` stretched or
shortened, :data:`MISSPELLINGS`."""
_WORD = re.compile(r"\b[a-z]{3,}\b")


def _untypo(match: re.Match[str]) -> str:
    """The risk word a misspelt ``match`` stands for (:data:`_TYPOS`), else the word."""
    word = match.group(0)
    return _TYPOS.get(word, word)


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
    removed, lower-cased, look-alikes, spaced letters, leetspeak, slang and typos in risk words undone. ``""`` for
    empty input."""
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
    text = _WORD.sub(_untypo, text)
    return _SPACES.sub(" ", text)
