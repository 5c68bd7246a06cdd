"""An explicit ask for a human in Spanish, French, German and Portuguese: the non-English half of
:func:`app.handoff.signals.asks_for_human`.

The rules follow the English ones rule for rule: a request frame plus a talk verb plus a human target
("quiero hablar con una persona", "puis-je parler à un vrai humain", "kann ich mit einem echten Menschen
sprechen", "posso falar com o meu coach"), imperatives ("pásame con una persona", "passez-moi un humain",
"verbinden Sie mich mit einem Menschen", "me transfira para um atendente"), wants ("quiero una persona real",
"j'ai besoin d'un humain", "ich will einen echten Menschen", "preciso de um humano"), "is there a real
person" ("¿hay alguien real?", "y a-t-il une vraie personne", "gibt es einen echten Menschen", "tem alguém de
verdade"), "can my coach answer", "I don't want to talk to a bot any more" ("ya no quiero hablar con un
bot"…) and a bare "una persona, por favor". A negator (:attr:`HumanRequestRules.negators`) among the
:data:`NEGATION_WINDOW` words before a match, or inside it, cancels it ("no necesito un humano", "ich will
nicht mit einem Menschen sprechen"), except in the "no bot" rules that carry their own negation; so do the
German third persons "er" and "man", whose modal verbs read like the first person ("er will mit einem
Menschen sprechen"). A verb of saying before a match in the same sentence makes it a quote or reported
speech, not a request ("mi coach dijo que necesito una persona", 'me dijo: "quiero hablar con una persona"'),
unless its subject is the client ("je te l'ai dit : je veux parler à un humain") or a "but" comes between
(:class:`ReportedSpeech`).

Mentions are not requests, as in English: "hablé con una persona en el trabajo", "mi coach dijo que…",
"solo soy humano", "je ne suis qu'un humain", "ich bin auch nur ein Mensch", "quero ser uma pessoa melhor".
Per language: French "personne" without an article is "nobody" ("je ne veux parler à personne"), and
German "Mensch!" alone is an interjection ("Mensch, ist das anstrengend"), so neither counts.

Clauses arrive lower-cased, accents removed (:func:`app.handoff.normalise.normalise`), apostrophes and
hyphens turned into spaces (``j'ai`` → ``j ai``, ``passez-moi`` → ``passez moi``) and words joined by single
spaces, as :func:`app.handoff.signals.asks_for_human` prepares them. Written from everyday wording of the
four languages (tú / tu / du / você and the polite forms), not tuned on a data set; the tests list the
variants covered and refused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from app.handoff.languages import Language

NEGATION_WINDOW = 3
"""Words before a match (in the same clause) searched for a negator, as in English."""

SUBJECT_WINDOW = 3
"""Words before a verb of saying searched for a first-person word ("ich habe doch gesagt")."""


@dataclass(frozen=True)
class ReportedSpeech:
    """How one language reports someone else's words: ``verbs`` of saying ("dijo", "a dit", "sagte", "disse"),
    the ``first_person`` words that make such a verb the client's own ("je te l'ai dit", "ich habe doch
    gesagt", "eu já disse": a request restated) and the ``contrast`` words after which the client speaks for
    themselves again ("lo que dice mi coach es útil, **pero** quiero hablar con una persona")."""

    verbs: frozenset[str]
    first_person: frozenset[str]
    contrast: frozenset[str]

    def reports(self, words: Sequence[str]) -> bool:
        """Whether ``words`` (the sentence before a match) end in someone else's words: a verb of saying after
        the last contrast word, with no first-person word among the :data:`SUBJECT_WINDOW` words before it."""
        for index in range(len(words) - 1, -1, -1):
            if words[index] in self.contrast:
                return False
            subject = words[max(0, index - SUBJECT_WINDOW) : index]
            if words[index] in self.verbs and not self.first_person.intersection(subject):
                return True
        return False


@dataclass(frozen=True)
class HumanRequestRules:
    """The ask-for-a-human rules of one language.

    ``patterns``: regexes searched in a clause; ``self_negating``: indices of those that carry their own
    negation (no negator check); ``bare``: a clause that is only a request word ("una persona, por favor");
    ``negators``: words that cancel a match; ``speech``: how someone else's words are reported — a match after
    them in the same sentence is a quote, not a request ("mi coach dijo que necesito una persona", 'me dijo:
    "quiero hablar con una persona"'); ``name_template``: a regex with ``{names}`` where the coach's name
    words go ("quiero hablar con {names}")."""

    language: Language
    patterns: tuple[re.Pattern[str], ...]
    self_negating: frozenset[int]
    bare: re.Pattern[str]
    negators: frozenset[str]
    speech: ReportedSpeech
    name_template: str
    screen: re.Pattern[str]
    """All of ``patterns`` in one alternation: one search tells whether any may match (most clauses: none)."""

    def matches(self, clause: str, names: Sequence[str] = (), context: Sequence[str] = ()) -> bool:
        """Whether the prepared ``clause`` asks for a human; ``names``: the coach's name words, regex-escaped
        and accent-free (empty: no name rule); ``context``: the words of the sentence before the clause."""
        if self.bare.match(clause) and not self.speech.reports(context):
            return True
        patterns = list(enumerate(self.patterns)) if self.screen.search(clause) else []
        if names:
            patterns.append((-1, re.compile(self.name_template.replace("{names}", "|".join(names)))))
        for index, pattern in patterns:
            for match in pattern.finditer(clause):
                before = clause[: match.start()].split()
                if self.speech.reports([*context, *before]):
                    continue
                near = [*before[-NEGATION_WINDOW:], *match.group().split()]
                if index in self.self_negating or not self.negators.intersection(near):
                    return True
        return False


def _rules(
    language: Language,
    patterns: Sequence[str],
    bare: str,
    negators: str,
    speech: tuple[str, str, str],
    name_template: str,
) -> HumanRequestRules:
    """Rules whose last pattern is the self-negating "no bot" one; ``speech``: the verbs of saying, first-person
    words and contrast words of :class:`ReportedSpeech`, each space-separated."""
    return HumanRequestRules(
        language,
        tuple(re.compile(p) for p in patterns),
        frozenset({len(patterns) - 1}),
        re.compile(bare),
        frozenset(negators.split()),
        ReportedSpeech(*(frozenset(words.split()) for words in speech)),
        name_template,
        re.compile("|".join(f"(?:{p})" for p in patterns)),
    )


_FILL = r"(?: \w+){0,2}"
"""Up to two words between a frame and its verb: "quiero **solo** hablar", "je voudrais **bien** parler"."""

# --- Spanish -----------------------------------------------------------------------------------------------

_ES_ADJ = r"(?: (?:real|de verdad|de carne y hueso|humana|humano))?"
_ES_PERSON = (
    rf"(?:(?:una? |el |la |alguna? )?(?:persona|humano|humana|ser humano){_ES_ADJ}|alguien (?:real|de verdad))\b"
)
_ES_TARGET = rf"(?:{_ES_PERSON}|(?:una? |el |la )?(?:agente|operador|operadora){_ES_ADJ}\b)"
_ES_COACH = r"(?:mi|el|la|tu|su|nuestro|nuestra) (?:coach|entrenador|entrenadora)\b"
_ES_FRAME = (
    r"(?:puedo|podria|quiero|quisiera|querria|necesito|prefiero|preferiria|me gustaria|deseo|dejame|"
    r"dejeme|como puedo|como hago para|donde puedo|por favor|hay forma de|hay manera de)"
)
_ES_TALK = r"(?:hablar|charlar|conversar|chatear)(?: directamente| personalmente| ya| ahora)? (?:con|a)"
_ES_AI = r"(?:una? |el |la |esta |este )?(?:bot|ia|robot|maquina|chatbot|ordenador|computadora|inteligencia artificial)"
SPANISH = _rules(
    "es",
    (
        rf"\b{_ES_FRAME}{_FILL} {_ES_TALK} (?:{_ES_TARGET}|{_ES_COACH})",
        rf"\b(?:pasame|paseme|conectame|conecteme|comunicame|comuniqueme|transfiereme|transfierame|"
        rf"ponme|pongame|derivame|librame) (?:con|a) (?:{_ES_TARGET}|{_ES_COACH})",
        rf"\b(?:quiero|necesito|prefiero|quisiera|querria|me gustaria) (?:{_ES_PERSON}|{_ES_COACH})",
        rf"\b(?:quiero|prefiero|necesito) que me (?:atienda|responda|conteste) (?:{_ES_TARGET}|{_ES_COACH})",
        rf"\bme (?:pasas|conectas|comunicas|(?:puedes|puede|podrias|podria) "
        rf"(?:pasar|conectar|comunicar)) (?:con|a) (?:{_ES_TARGET}|{_ES_COACH})",
        rf"\bme (?:puede|puedes|podria|podrias) (?:atender|responder|contestar) (?:{_ES_TARGET}|{_ES_COACH})",
        r"\bhay (?:una? |alguna? )?(?:persona|humano|ser humano) (?:real|de verdad)\b|"
        r"\bhay alguien (?:real|de verdad)\b",
        rf"\b(?:puede|podria) (?:{_ES_COACH} (?:\w+ )?(?:responder|contestar|escribir|llamar)|"
        rf"(?:responderme|contestarme|responder|contestar) {_ES_COACH})",
        rf"\bno (?:quiero|aguanto) (?:seguir |mas )?(?:hablar|hablando|charlar|chatear)(?: mas)? con {_ES_AI}\b",
    ),
    r"^(?:una? )?(?:persona|humano|agente|operador)(?: real| de verdad)?(?: por favor| porfa| ya| ahora)?$",
    "no nunca jamas tampoco sin nadie ni",
    ("dijo dice decia dijeron dicen comento escribio respondio", "yo", "pero sino aunque"),
    rf"\b{_ES_FRAME}{_FILL} {_ES_TALK} (?:{{names}})\b",
)

# --- French ------------------------------------------------------------------------------------------------

_FR_HUMAN = (
    r"(?:(?:une|la|cette) (?:vraie |veritable )?personne(?: reelle| humaine| en chair et en os)?|"
    r"(?:un |l |le )?(?:vrai |veritable )?(?:humain|etre humain)(?: reel| en chair et en os)?|"
    r"quelqu un de (?:reel|vrai|humain))"
)
""""personne" only with an article: on its own it is "nobody" ("je ne veux parler à personne")."""
_FR_PERSON = rf"{_FR_HUMAN}\b"
_FR_TARGET = rf"(?:{_FR_HUMAN}|(?:un |une |l |le )?(?:agent|conseiller|conseillere|operateur|operatrice))\b"
_FR_COACH = r"(?:(?:mon|ma|le|la|votre|ton|ta|notre) |au |l )(?:vrai |vraie )?(?:coach|coache)\b"
_FR_FRAME = (
    r"(?:peux|puis je|pourrais|veux|voudrais|aimerais|prefere|prefererais|souhaite|souhaiterais|"
    r"ai besoin de|laisse moi|laissez moi|il faut que je|comment faire pour|on peut|peut on|svp|s il vous plait)"
)
_FR_TALK = r"(?:parler|parle|discuter|echanger)(?: directement| vraiment)?(?: (?:a|avec))?"
_FR_AI = r"(?:une? |la |le |l |ce |cette )?(?:bot|robot|ia|machine|chatbot|ordinateur|intelligence artificielle)"
FRENCH = _rules(
    "fr",
    (
        rf"\b{_FR_FRAME}{_FILL} {_FR_TALK} (?:{_FR_TARGET}|{_FR_COACH})",
        rf"\b(?:passez|passe|mettez|mets|connectez|connecte|transferez|transfere|redirigez|redirige) moi "
        rf"(?:(?:en relation |en contact )?(?:a|avec) )?(?:{_FR_TARGET}|{_FR_COACH})",
        rf"\b(?:veux|voudrais|aimerais|prefere|prefererais|souhaite|ai besoin d|ai besoin de) (?:{_FR_PERSON}|"
        rf"{_FR_COACH})",
        rf"\b(?:pouvez vous|peux tu|pourriez vous|pourrais tu) me (?:passer|mettre en relation avec|transferer a|"
        rf"connecter avec|connecter a) (?:{_FR_TARGET}|{_FR_COACH})",
        rf"\b(?:y a t il|il y a|y a|est ce qu il y a) (?:{_FR_PERSON}|un humain)(?= (?:ici|la|derriere)\b|$)",
        rf"\b{_FR_COACH} (?:peut|pourrait|pourra)(?: il| elle)? (?:me )?(?:repondre|ecrire|appeler|reprendre)",
        rf"\b(?:veux|voudrais) (?:plus|pas) (?:parler|discuter)(?: (?:a|avec))? {_FR_AI}\b",
    ),
    r"^(?!personne$)(?:une? )?(?:vraie? )?(?:personne|humain|agent|conseiller)(?: reelle?)?"
    r"(?: s il vous plait| s il te plait| svp| stp| maintenant)?$",
    "ne n pas jamais sans plus",
    ("dit disait disent ecrit repondu selon", "je j ai", "mais"),
    rf"\b{_FR_FRAME}{_FILL} {_FR_TALK} (?:{{names}})\b",
)

# --- German ------------------------------------------------------------------------------------------------

_DE_REAL = r"(?:(?:echten|echter|echte|echtem|richtigen|richtiger|richtige|realen|realer|lebendigen|wirklichen) )?"
_DE_PERSON = (
    rf"(?:(?:einem|einen|einer|eine|ein|dem|den|der|die) {_DE_REAL}(?:menschen|mensch|person)|"
    r"(?:echten|echte) (?:menschen|person)|jemand(?:em|en)? (?:echtes|echten|echtem|reales))\b"
)
_DE_TARGET = rf"(?:{_DE_PERSON}|(?:einem|einen|einer|eine|dem|den) (?:mitarbeiter|mitarbeiterin|berater|beraterin)\b)"
_DE_COACH = (
    r"(?:meinem|meinen|meiner|meine|mein|dem|den|der|die|deinem|deinen|deiner|ihrem|ihren) "
    r"(?:echten |richtigen )?(?:coach|coachin|trainer|trainerin)\b"
)
_DE_FRAME = (
    r"(?:will|mochte|moechte|kann|konnte|darf|wurde gerne?|wuerde gerne?|muss|mochte lieber|lass mich|"
    r"lassen sie mich|wie kann ich|gibt es eine moglichkeit)"
)
_DE_TALK = r"(?:sprechen|reden|chatten|schreiben|telefonieren)"
_DE_AI = r"(?:einem |einer |dem |der |diesem |dieser )?(?:bot|ki|roboter|maschine|chatbot|computer)"
GERMAN = _rules(
    "de",
    (
        rf"\b{_DE_FRAME}(?: \w+){{0,3}} mit (?:{_DE_TARGET}|{_DE_COACH})(?: \w+)? {_DE_TALK}\b",
        rf"\b{_DE_FRAME}(?: \w+){{0,2}} (?:einen|den|meinen) {_DE_REAL}(?:menschen|coach|mitarbeiter|berater) "
        r"sprechen\b",
        rf"\b(?:verbinde|verbinden sie|verbindet|stell|stelle|stellen sie|leite|leiten sie) mich (?:bitte )?"
        rf"(?:mit|zu|an|durch zu) (?:{_DE_TARGET}|{_DE_COACH})",
        rf"\b(?:konnen|konnten|kannst|konntest) (?:sie|du) mich (?:bitte )?(?:mit|zu|an) (?:{_DE_TARGET}|{_DE_COACH}) "
        r"(?:verbinden|durchstellen|weiterleiten)\b",
        rf"\b(?:gib|geben sie|hol|holen sie) mir (?:bitte )?(?:{_DE_TARGET}|{_DE_COACH})",
        rf"\b(?:will|mochte|moechte|brauche|hatte gerne?|hatte lieber|wunsche mir) (?:bitte |lieber |jetzt |sofort )?"
        rf"(?:{_DE_PERSON}|{_DE_COACH})(?=$| (?:bitte|jetzt|sofort|sprechen|haben)\b)",
        r"\b(?:gibt es|ist da|ist hier|sitzt da) (?:hier |da |dort )?(?:einen |ein |eine )?"
        r"(?:echten|echter|echte|richtigen|richtiger|"
        r"realen|realer|lebendigen) (?:menschen|mensch|person)\b",
        rf"\b(?:kann|konnte|kannst|wurde) (?:mir )?{_DE_COACH}(?: \w+){{0,2}} (?:antworten|zuruckschreiben|"
        r"zurueckschreiben|anrufen|ubernehmen|uebernehmen)\b",
        rf"\b(?:will|mochte|moechte) (?:nicht mehr|nicht|nie mehr) mit {_DE_AI} {_DE_TALK}\b",
    ),
    r"^(?:(?:einen?|ein) (?:echten? )?|echten? )(?:menschen?|person|mitarbeiter)(?: bitte| jetzt| sofort)?$"
    r"|^(?:menschen?|person|mitarbeiter) bitte$",
    "nicht nie niemals kein keine keinen ohne niemand er man",
    ("sagt sagte sagten gesagt meint meinte gemeint schrieb geschrieben fragte gefragt", "ich", "aber sondern"),
    rf"\b{_DE_FRAME}(?: \w+){{0,3}} mit (?:{{names}})(?: \w+)? {_DE_TALK}\b",
)

# --- Portuguese --------------------------------------------------------------------------------------------

_PT_ADJ = r"(?: (?:real|de verdade|de carne e osso|humana|humano))?"
_PT_PERSON = rf"(?:(?:uma? |o |a |alguma? )?(?:pessoa|humano|humana|ser humano){_PT_ADJ}|alguem (?:real|de verdade))\b"
_PT_TARGET = rf"(?:{_PT_PERSON}|(?:uma? |o |a )?(?:atendente|agente|operador|operadora){_PT_ADJ}\b)"
_PT_COACH = r"(?:(?:o|a) )?(?:meu|minha|o|a|seu|sua|teu|tua|nosso|nossa) (?:coach|treinador|treinadora)\b"
_PT_FRAME = (
    r"(?:posso|poderia|quero|queria|gostaria de|preciso|prefiro|preferia|da pra|da para|tem como|como posso|"
    r"como faco pra|como faco para|deixa eu|me deixa|por favor)"
)
_PT_TALK = r"(?:falar|conversar|papear|bater papo)(?: diretamente| agora)? (?:com|a|pra|para)"
_PT_AI = r"(?:uma? |o |a |esse |essa |este |esta )?(?:bot|robo|ia|maquina|chatbot|computador|inteligencia artificial)"
PORTUGUESE = _rules(
    "pt",
    (
        rf"\b{_PT_FRAME}{_FILL} {_PT_TALK} (?:{_PT_TARGET}|{_PT_COACH})",
        rf"\b(?:me passa|me passe|passa me|me transfira|me transfere|transfira me|me conecta|me conecte|"
        rf"conecte me|me coloca|me coloque|me encaminha|me encaminhe) (?:para|pra|com|a) (?:{_PT_TARGET}|{_PT_COACH})",
        rf"\b(?:quero|preciso de|prefiro|queria|gostaria de) (?:{_PT_PERSON}|{_PT_COACH})",
        rf"\b(?:pode|poderia|consegue|podes) me (?:passar|transferir|conectar|encaminhar) (?:para|pra|com|a) "
        rf"(?:{_PT_TARGET}|{_PT_COACH})",
        r"\b(?:tem|ha|existe) (?:uma? |alguma? )?(?:pessoa|humano|ser humano) (?:real|de verdade)\b|"
        r"\b(?:tem|ha|existe) alguem (?:real|de verdade)\b",
        rf"\b(?:{_PT_COACH} (?:pode|poderia)|(?:pode|poderia) {_PT_COACH}) (?:me )?"
        r"(?:responder|escrever|ligar|assumir)",
        rf"\b(?:nao|n) (?:quero|aguento) (?:mais )?(?:falar|conversar)(?: mais)? com {_PT_AI}\b",
    ),
    r"^(?:uma? )?(?:pessoa|humano|atendente)(?: real| de verdade)?(?: por favor| pfv| pf| agora| ja)?$",
    "nao n nunca jamais sem ninguem nem",
    ("disse diz dizia disseram falou escreveu perguntou respondeu", "eu", "mas porem"),
    rf"\b{_PT_FRAME}{_FILL} {_PT_TALK} (?:o |a )?(?:{{names}})\b",
)

RULES: tuple[HumanRequestRules, ...] = (SPANISH, FRENCH, GERMAN, PORTUGUESE)
"""Every non-English rule set; a clause is checked against all of them (a short ask such as "¿puedo hablar
con mi coach?" is too short for :func:`app.handoff.languages.detect_language`)."""


def request_language(clause: str, names: Sequence[str] = (), context: Sequence[str] = ()) -> Language | None:
    """The language whose rules find an ask for a human in the prepared ``clause`` (see the module
    docstring), or ``None``; ``names``: the coach's name words (regex-escaped, accent-free); ``context``: the
    words of the sentence before the clause (a verb of saying there makes the clause a quote)."""
    return next((rules.language for rules in RULES if rules.matches(clause, names, context)), None)
