"""Who is answering, in Spanish, French, German and Portuguese: the non-English half of
:func:`app.handoff.signals.asks_if_ai` (the client asks whether they talk to a person or an AI) and of
:func:`app.handoff.signals.claims_human` (a reply claims that a person, not an AI, is writing).

The rules follow the English ones rule for rule. A **question** starts its clause (after greetings and fillers
such as "oye", "dis", "sag mal", "oi", or "I want to know whether": "quiero saber si", "je me demande si"), so a
statement around it is no question ("sé que eres una IA, pero…", "ich weiß, dass du eine KI bist"): "are you a
bot / a real person / real?" ("¿eres un bot?", "es-tu une IA ?", "bist du ein Mensch?", "você é um robô?"), "am
I talking to a bot?" ("¿estoy hablando con una persona real?", "je parle à un robot ?", "rede ich mit einer
KI?", "tô falando com um robô?"), "is this a bot / automated?", "who am I talking to?", "is anyone reading
this?", "is this really you?", the coach's name ("¿eres Sara de verdad?") and a bare "¿bot o humano?". What
is asked about must end the clause or be followed by an alternative ("… o un bot") or words about who is
answering, so "eres una persona increíble" and "bist du ein Mensch, der…" do not fire. A negated form is no
question, as in English ("no eres un bot", "tu n'es pas un robot", "du bist kein Bot", "você não é um robô"),
and a question after someone else's verb of saying is reported speech (:class:`ReportedSpeech`: 'mi amiga
preguntó: "¿eres un bot?"'), as for the ask for a human (:mod:`app.handoff.human_request`).

A **claim** is a first-person statement of being a person ("soy una persona real", "je suis humain", "ich bin
ein echter Mensch", "sou humano"), of being real, of not being an AI ("no soy un bot", "je ne suis pas une IA",
"ich bin keine KI", "não sou um robô"), "as a human, I…" and "you are talking to a real person". Honest wording
does not fire: "no soy una persona, soy una IA", "je ne suis pas une vraie personne", "ich bin kein Mensch",
"não sou uma pessoa", and neither do the catalogue's own disclosure and correction.

Clauses arrive as :func:`app.handoff.human_request.HumanRequestRules.matches` gets them: lower-cased, accents
removed, apostrophes and hyphens as spaces (``es-tu`` → ``es tu``, ``t'es`` → ``t es``), words joined by single
spaces; a claim is searched in all clauses joined by `` | ``. Written from everyday wording of the four
languages (tú / tu / du / você and the polite forms), not tuned on a data set; the tests list the variants
covered and refused.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from app.handoff.human_request import FRENCH, GERMAN, PORTUGUESE, SPANISH, ReportedSpeech
from app.handoff.languages import Language


@dataclass(frozen=True)
class HonestyRules:
    """The who-is-answering rules of one language: ``asks`` (the client's question, one alternation),
    ``named`` (a regex with ``{names}`` where the coach's name words go: "¿eres Sara de verdad?"), ``claims``
    (a reply claiming to be a person) and ``speech`` (someone else's verbs of saying: a question after them is
    reported)."""

    language: Language
    asks: re.Pattern[str]
    named: str
    claims: re.Pattern[str]
    speech: ReportedSpeech

    def asks_in(self, clause: str, names: Sequence[str] = (), context: Sequence[str] = ()) -> bool:
        """Whether the prepared ``clause`` asks who is answering; ``names``: the coach's name words
        (regex-escaped, accent-free; empty: no name rule); ``context``: the words of its sentence before it."""
        patterns = [self.asks]
        if names:
            patterns.append(re.compile(self.named.replace("{names}", "|".join(names))))
        return any(
            not self.speech.reports([*context, *clause[: match.start()].split()])
            for pattern in patterns
            for match in pattern.finditer(clause)
        )


def _speech(rules: ReportedSpeech, asking: str) -> ReportedSpeech:
    """The ask-for-a-human rules' verbs of saying plus the verbs of asking (space-separated ``asking``)."""
    return ReportedSpeech(rules.verbs | frozenset(asking.split()), rules.first_person, rules.contrast)


def _any(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns))


# --- Spanish -----------------------------------------------------------------------------------------------

_ES_INTRO = (
    r"^(?:(?:hola|oye|oiga|pero|entonces|y|a ver|perdona|perdon|disculpa|o sea|en serio|una pregunta|pregunta|"
    r"espera|ok|vale|bueno|tu|usted|acaso|de verdad|realmente) )*(?:(?:quiero saber|quisiera saber|necesito saber|"
    r"me pregunto|dime|digame|puedes decirme|me puedes decir|por curiosidad) si )?"
)
_ES_AI = (
    r"(?:una? |el |la )?(?:bot|robot|ia|chatbot|maquina|programa|inteligencia artificial|asistente virtual|chatgpt)"
)
_ES_HUMAN = r"(?:una? )?(?:persona(?: real| de verdad| de carne y hueso)?|humano|humana|ser humano)"
_ES_WHAT = rf"(?:{_ES_AI}|{_ES_HUMAN}|real|de verdad)"
_ES_ADV = r"(?:(?:realmente|de verdad|en serio|solo|simplemente|tu|usted) ){0,2}"
_ES_ADV_IT = r"(?:(?:realmente|de verdad|en serio|solo|simplemente) ){0,2}"
"""As :data:`_ES_ADV` without "tú" / "usted": "es tu" is French ("es-tu un bot ?")."""
_ES_TAIL = (
    r"(?=$| o\b| (?:de verdad|en serio|verdad|o no|quien|que me|al otro lado|detras|respondiendo|contestando|"
    r"escribiendo)\b)"
)
_ES_END = r"(?=$| \|| (?:y|no|tambien|de verdad|real)\b)"
SPANISH_HONESTY = HonestyRules(
    "es",
    _any(
        # "¿eres un bot?", "¿eres una persona real o una IA?", "¿usted es humano?", "¿eres real?"
        rf"{_ES_INTRO}(?:eres|es usted|usted es|sois) {_ES_ADV}{_ES_WHAT}{_ES_TAIL}",
        # "¿estoy hablando con un bot?", "¿hablo con una persona real?"
        rf"{_ES_INTRO}(?:estoy |estamos )?(?:hablando|chateando|conversando|escribiendo|hablo|chateo|escribo) "
        rf"(?:con|a) {_ES_ADV}{_ES_WHAT}{_ES_TAIL}",
        # "¿es esto un bot?", "¿esto es automático?", "¿es una persona real?" (not after "tú": "tu es humano" is
        # Portuguese "tu és", Spanish says "tú eres")
        rf"{_ES_INTRO}(?<!\btu )(?:es esto|esto es|es) {_ES_ADV_IT}(?:{_ES_AI}|{_ES_HUMAN}|automatico|automatizado)"
        rf"{_ES_TAIL}",
        # "¿con quién hablo?", "¿quién me responde?", "¿quién está al otro lado?"
        r"\bcon quien (?:estoy |estamos )?(?:hablo|hablando|chateo|chateando|hablamos)(?:$| (?:ahora|aqui|realmente)$)",
        r"\bquien (?:me )?(?:esta )?(?:responde|contesta|escribe|respondiendo|contestando|escribiendo)"
        r"(?:$| (?:ahora|aqui|realmente|de verdad)$)",
        r"\bquien (?:esta|hay) (?:al otro lado|detras)\b",
        # "¿alguien está leyendo esto?"
        rf"{_ES_INTRO}(?:hay )?alguien (?:esta )?(?:lee|leyendo|responde|respondiendo) (?:esto|mis mensajes)$",
        # "¿de verdad eres tú?", "¿eres tú realmente?"
        rf"{_ES_INTRO}(?:(?:de verdad|realmente|en serio) eres tu|eres tu (?:de verdad|realmente|en serio|mismo|misma|"
        rf"en persona|o {_ES_AI}))$",
        # bare "¿bot o humano?", "¿bot?"
        rf"^{_ES_WHAT} o (?:{_ES_WHAT}|no)$",
        r"^(?:una? )?(?:bot|robot|ia|chatbot)$",
    ),
    rf"{_ES_INTRO}(?:eres|es esto|hablo con|estoy hablando con) (?:de verdad |realmente )?(?:{{names}})"
    r"(?:$| (?:de verdad|realmente|en persona|misma|mismo)$)",
    _any(
        # "soy una persona real", "soy humana", "sí, soy real" (not "no soy una persona")
        rf"(?<!no )\bsoy {_ES_ADV}(?:{_ES_HUMAN}|real|de verdad){_ES_END}",
        # "no soy un bot", "no soy una IA"
        rf"\bno soy (?:(?:un|una|ningun|ninguna) )?{_ES_AI}\b",
        # "como humano, yo…"
        r"\bcomo (?:un )?(?:ser humano|humano|humana|persona)(?: que soy)?(?: \|)? (?:yo|tambien)\b",
        # "estás hablando con una persona real", "una persona real te está respondiendo"
        r"(?<!no )\b(?:estas|esta usted) (?:hablando|chateando|escribiendo|conversando) con "
        r"(?:una? )?(?:persona|humano|ser humano)\b",
        r"\buna persona (?:real|de verdad) (?:te )?(?:esta )?"
        r"(?:escribiendo|respondiendo|contestando|escribe|responde)\b",
    ),
    _speech(SPANISH.speech, "pregunta preguntaba preguntaron"),
)

# --- French ------------------------------------------------------------------------------------------------

_FR_INTRO = (
    r"^(?:(?:salut|bonjour|coucou|hey|mais|alors|et|du coup|attends|ok|bon|franchement|serieusement|dis|dites|"
    r"une question|question) )*(?:(?:je me demande|je voudrais savoir|je veux savoir|j aimerais savoir|dis moi|"
    r"dites moi|tu peux me dire) si )?"
)
_FR_AI = (
    r"(?:un |une |l )?(?:bot|robot|ia|chatbot|machine|programme|intelligence artificielle|assistant virtuel|chatgpt)"
)
_FR_HUMAN = (
    r"(?:(?:un |une )?(?:vraie |vrai |veritable )?(?:personne(?: reelle| humaine)?|humain|humaine|etre humain)|"
    r"quelqu un de (?:reel|vrai))"
)
_FR_WHAT = rf"(?:{_FR_AI}|{_FR_HUMAN}|reel|reelle)"
_FR_ADV = r"(?:(?:vraiment|reellement|juste|seulement|simplement|en fait|bien) ){0,2}"
_FR_TAIL = r"(?=$| ou\b| (?:vraiment|pour de vrai|en vrai|derriere|de l autre cote|qui)\b)"
_FR_END = r"(?=$| \|| (?:et|moi aussi|aussi|pour de vrai|en chair et en os)\b)"
FRENCH_HONESTY = HonestyRules(
    "fr",
    _any(
        # "es-tu un bot ?", "tu es une IA ?", "t'es humain ?", "est-ce que vous êtes une vraie personne ?"
        rf"{_FR_INTRO}(?:est ce que )?(?:es tu|etes vous|tu es|t es|vous etes) {_FR_ADV}{_FR_WHAT}{_FR_TAIL}",
        # "je parle à un robot ?", "est-ce que je discute avec une vraie personne ?"
        rf"{_FR_INTRO}(?:est ce que )?(?:je|j) (?:parle|discute|ecris|chatte) (?:a|avec) {_FR_ADV}{_FR_WHAT}{_FR_TAIL}",
        # "c'est un bot ?", "est-ce une IA ?", "c'est automatique ?"
        rf"{_FR_INTRO}(?:c est|est ce|est ce que c est) {_FR_ADV}(?:{_FR_AI}|{_FR_HUMAN}|automatique|automatise)"
        rf"{_FR_TAIL}",
        # "à qui je parle ?", "qui me répond ?", "qui est de l'autre côté ?"
        r"\b(?:a|avec) qui (?:est ce que )?(?:je parle|je discute|j ecris|parle je)(?:$| (?:la|ici|en ce moment)$)",
        r"\bqui (?:me )?(?:repond|ecrit)(?:$| (?:la|ici|vraiment|en ce moment)$)",
        r"\bqui (?:est|se trouve|se cache) (?:de l autre cote|derriere)\b",
        # "quelqu'un lit ce message ?"
        rf"{_FR_INTRO}(?:(?:y a t il|il y a|y a) )?quelqu un (?:qui )?(?:lit|repond a) "
        r"(?:ceci|ca|mes messages|ce message|ce que j ecris)$",
        # "c'est vraiment toi ?", "c'est toi en vrai ?"
        rf"{_FR_INTRO}(?:c est|est ce) (?:(?:vraiment|reellement|bien) toi|toi (?:en vrai|pour de vrai|en personne|"
        r"vraiment|ou))\b",
        # bare "bot ou humain ?", "robot ?"
        rf"^{_FR_WHAT} ou (?:{_FR_WHAT}|pas)$",
        r"^(?:un |une )?(?:bot|robot|ia|chatbot)$",
    ),
    rf"{_FR_INTRO}(?:c est|est ce|es tu|(?:est ce que )?je parle (?:a|avec)) (?:vraiment |bien )?(?:{{names}})"
    r"(?:$| (?:en vrai|en personne|vraiment)$)",
    _any(
        # "je suis une vraie personne", "je suis humain", "je suis réelle"
        rf"\bje suis {_FR_ADV}(?:{_FR_HUMAN}|reel|reelle){_FR_END}",
        # "je ne suis pas un robot", "je suis pas une IA"
        rf"\bje (?:ne |n )?suis (?:pas|absolument pas|vraiment pas) {_FR_AI}\b",
        # "en tant qu'humain, je…"
        r"\ben tant qu (?:humain|humaine|etre humain)(?: \|)? (?:je|j)\b|\ben tant que personne(?: \|)? (?:je|j)\b",
        # "tu parles à une vraie personne", "c'est une vraie personne qui te répond"
        r"\b(?:tu parles|vous parlez|tu discutes|vous discutez|tu ecris|vous ecrivez) (?:a|avec) "
        r"(?:une |un )?(?:vraie |vrai |veritable )?(?:personne|humain|etre humain)\b",
        r"\bc est (?:une |un )(?:vraie|vrai|veritable) (?:personne|humain)\b",
    ),
    _speech(FRENCH.speech, "demande demandait demandent"),
)

# --- German ------------------------------------------------------------------------------------------------

_DE_INTRO = (
    r"^(?:(?:hallo|hi|hey|und|also|aber|moment|ok|okay|sag mal|mal ehrlich|ehrlich|ehrliche frage|kurze frage|"
    r"frage) )*"
)
_DE_REAL = r"(?:(?:echter|echte|echten|echtem|richtiger|richtige|richtigen|realer|reale|realen|lebendiger) )?"
_DE_AI = r"(?:bot|roboter|ki|chatbot|maschine|computer|programm|kunstliche intelligenz|sprachmodell|chatgpt)"
_DE_WHAT = rf"(?:(?:ein |eine |einer )?{_DE_REAL}(?:mensch|person|{_DE_AI})|echt|real)"
_DE_WITH = rf"(?:(?:einem |einer |dem |der )?{_DE_REAL}(?:menschen|person|{_DE_AI}))"
_DE_ADV = r"(?:(?:wirklich|echt|tatsachlich|eigentlich|uberhaupt|nur|denn|etwa|gerade|hier) ){0,2}"
_DE_TAIL = r"(?=$| oder\b| (?:aus fleisch und blut|am anderen ende|wirklich|eigentlich|gerade|jetzt)\b)"
_DE_END = r"(?=$| \|(?! (?:der|die|das|den|dem)\b)| (?:und|aus|auch|wirklich)\b)"
GERMAN_HONESTY = HonestyRules(
    "de",
    _any(
        # "bist du ein Mensch?", "sind Sie eine KI?", "bist du echt?", "du bist ein Bot, oder?"
        rf"{_DE_INTRO}(?:bist du|sind sie|seid ihr|du bist) {_DE_ADV}{_DE_WHAT}{_DE_TAIL}",
        # "ob du ein Bot bist"
        rf"^(?:ich frage mich |ich will wissen |ich mochte wissen |sag mir )?ob (?:du|sie) {_DE_ADV}{_DE_WHAT} "
        r"(?:bist|sind)$",
        # "rede ich mit einem Bot?", "spreche ich gerade mit einem echten Menschen?"
        rf"{_DE_INTRO}(?:rede|spreche|schreibe|chatte) ich {_DE_ADV}mit {_DE_ADV}{_DE_WITH}{_DE_TAIL}",
        # "ist das ein Bot?", "ist das automatisch?"
        rf"{_DE_INTRO}(?:ist das|ist dies|ist es) {_DE_ADV}(?:(?:ein |eine )?{_DE_REAL}(?:mensch|person|{_DE_AI})|"
        rf"automatisch|automatisiert){_DE_TAIL}",
        # "mit wem rede ich?", "wer antwortet mir hier?", "wer sitzt am anderen Ende?"
        r"\bmit wem (?:rede|spreche|schreibe|chatte) ich(?:$| (?:hier|gerade|jetzt|eigentlich|da)$)",
        r"\bwer (?:antwortet|schreibt)(?: mir)?(?: (?:hier|gerade|da|eigentlich|wirklich)){0,2}$",
        r"\bwer (?:sitzt|ist) (?:da |hier )?am anderen ende\b",
        # "liest das überhaupt jemand?", "liest hier ein Mensch mit?"
        rf"{_DE_INTRO}liest (?:das|hier|dies) {_DE_ADV}(?:ein {_DE_REAL}mensch|jemand)(?: mit)?$",
        # "bist du es wirklich?", "ist das wirklich du?"
        rf"{_DE_INTRO}bist (?:du es|du das|das) (?:wirklich|echt|tatsachlich|personlich)(?: du)?(?: selbst)?$",
        rf"{_DE_INTRO}ist das (?:wirklich |echt |tatsachlich )du(?: selbst)?$",
        # bare "Mensch oder Bot?", "KI?"
        rf"^{_DE_WHAT} oder (?:{_DE_WHAT}|nicht)$",
        r"^(?:ein |eine )?(?:bot|roboter|ki|chatbot)$",
    ),
    rf"{_DE_INTRO}(?:bist du|ist das|(?:rede|spreche|schreibe) ich (?:hier |gerade )?mit) "
    r"(?:wirklich |echt |tatsachlich )?(?:{names})(?:$| (?:selbst|personlich|wirklich)$)",
    _any(
        # "ich bin ein echter Mensch", "ich bin auch nur ein Mensch", "ich bin echt"
        rf"\bich bin {_DE_ADV}(?:auch |nur )*(?:(?:ein |eine ){_DE_REAL}(?:mensch|person)|echt|real)"
        rf"(?: aus fleisch und blut)?{_DE_END}",
        # "ich bin kein Bot", "ich bin keine KI", "ich bin nicht ein Roboter"
        rf"\bich bin (?:kein|keine|nicht ein|nicht eine) {_DE_AI}\b",
        # "als Mensch weiß ich…"
        rf"\bals {_DE_REAL}mensch(?: \|)? (?:ich|\w+ ich)\b",
        # "du sprichst mit einem echten Menschen", "hier schreibt ein echter Mensch"
        r"\b(?:du sprichst|du redest|du schreibst|du chattest|sie sprechen|sie schreiben) (?:hier |gerade )?mit "
        rf"(?:einem |einer ){_DE_REAL}(?:menschen|person)\b",
        r"\b(?:schreibt|antwortet|tippt) (?:dir )?(?:hier )?ein (?:echter|richtiger|realer) mensch\b",
    ),
    _speech(GERMAN.speech, "fragt fragen fragten"),
)

# --- Portuguese --------------------------------------------------------------------------------------------

_PT_INTRO = (
    r"^(?:(?:oi|ola|e ai|mas|entao|e|tipo|pera|espera|ok|serio|uma pergunta|pergunta|so uma pergunta|tu|voce|vc) )*"
    r"(?:(?:quero saber|queria saber|preciso saber|me diz|me diga|so pra saber|curiosidade) se )?"
)
_PT_AI = r"(?:uma? |o |a )?(?:bot|robo|ia|chatbot|maquina|programa|inteligencia artificial|assistente virtual|chatgpt)"
_PT_HUMAN = r"(?:uma? )?(?:pessoa(?: real| de verdade| de carne e osso)?|humano|humana|ser humano)"
_PT_WHAT = rf"(?:{_PT_AI}|{_PT_HUMAN}|real|de verdade)"
_PT_ADV = r"(?:(?:mesmo|realmente|de verdade|so|apenas|na verdade) ){0,2}"
_PT_TAIL = r"(?=$| ou\b| (?:mesmo|de verdade|na real|ai|respondendo|escrevendo|do outro lado)\b)"
_PT_END = r"(?=$| \|| (?:e|sim|tambem|de verdade|de carne e osso)\b)"
PORTUGUESE_HONESTY = HonestyRules(
    "pt",
    _any(
        # "você é um robô?", "vc é humano?", "tu és uma IA?", "você é real?"
        rf"{_PT_INTRO}(?:voce e|vc e|voce eh|vc eh|tu es|tu e|es) {_PT_ADV}{_PT_WHAT}{_PT_TAIL}",
        # "é um bot?", "isso é automático?", "é uma pessoa real?"
        rf"{_PT_INTRO}(?:e|eh|isso e|isto e) {_PT_ADV}(?:{_PT_AI}|{_PT_HUMAN}|automatico|automatizado){_PT_TAIL}",
        # "estou falando com um robô?", "tô conversando com uma pessoa real?"
        rf"{_PT_INTRO}(?:eu )?(?:(?:estou|to|tou) )?(?:falando|conversando|teclando|falo|converso) com "
        rf"{_PT_ADV}{_PT_WHAT}{_PT_TAIL}",
        # "com quem estou falando?", "quem está me respondendo?", "quem está do outro lado?"
        r"\bcom quem (?:eu )?(?:(?:estou|to|tou) )?(?:falando|conversando|falo|converso)(?:$| (?:aqui|agora|ai)$)",
        r"\bquem (?:(?:esta|ta) )?(?:me )?(?:respondendo|escrevendo|responde|escreve)(?:$| (?:aqui|agora|ai|isso)$)",
        r"\bquem (?:esta|ta|fica) do outro lado\b",
        # "alguém está lendo isso?"
        rf"{_PT_INTRO}(?:(?:tem|ha) )?alguem (?:(?:esta|ta) )?(?:lendo|le) (?:isso|isto|minhas mensagens)$",
        # "é você mesmo?", "é mesmo você?"
        rf"{_PT_INTRO}(?:e|eh) (?:(?:voce|vc|tu) (?:mesmo|mesma|de verdade|pessoalmente|ou)|(?:mesmo|realmente|de "
        r"verdade) (?:voce|vc|tu))\b",
        # bare "humano ou robô?", "bot?"
        rf"^{_PT_WHAT} ou (?:{_PT_WHAT}|nao)$",
        r"^(?:um |uma )?(?:bot|robo|ia|chatbot)$",
    ),
    rf"{_PT_INTRO}(?:e|eh|voce e|(?:estou |to )?falando com|falo com) (?:mesmo |realmente )?(?:a |o )?(?:{{names}})"
    r"(?:$| (?:mesmo|mesma|de verdade|pessoalmente)$)",
    _any(
        # "sou uma pessoa real", "eu sou humano", "sou real" (not "não sou uma pessoa")
        rf"(?<!nao )\bsou {_PT_ADV}(?:{_PT_HUMAN}|real|de verdade){_PT_END}",
        # "não sou um robô", "não sou uma IA"
        rf"\bnao sou (?:(?:nenhum|nenhuma) )?{_PT_AI}\b",
        # "como ser humano, eu…"
        r"\bcomo (?:um )?(?:ser humano|humano|humana|pessoa)(?: que sou)?(?: \|)? (?:eu|tambem)\b",
        # "você está falando com uma pessoa real", "uma pessoa real está respondendo"
        r"(?<!nao )\b(?:voce esta|vc esta|voce ta|tu estas) (?:falando|conversando|teclando) com "
        r"(?:uma? )?(?:pessoa|humano|ser humano)\b",
        r"\buma pessoa (?:real|de verdade) (?:(?:esta|ta) )?(?:te )?(?:escrevendo|respondendo|escreve|responde)\b",
    ),
    _speech(PORTUGUESE.speech, "pergunta perguntava perguntaram"),
)

HONESTY_RULES: tuple[HonestyRules, ...] = (SPANISH_HONESTY, FRENCH_HONESTY, GERMAN_HONESTY, PORTUGUESE_HONESTY)
"""Every non-English rule set; a clause is checked against all of them (a question such as "¿eres un bot?" is
too short for :func:`app.handoff.languages.detect_language`), in this order unless the message's spelling names
the language to try first (:func:`spelled_language`)."""

_PORTUGUESE_ES = re.compile(r"(?<!\w)és(?!\w)")
"""Portuguese "és" ("tu és humano?": you are), written with its accent. The rules read accent-free clauses, where
it is Spanish "es" ("¿es humano?": is it) or French "(tu) es", whose rules come first; neither language writes it
with an accent."""


def spelled_language(text: str) -> Language | None:
    """The language the raw ``text``'s spelling shows before the accents are dropped: ``"pt"`` when it writes
    "és" (:data:`_PORTUGUESE_ES`, any case, composed or not), else ``None``."""
    return "pt" if _PORTUGUESE_ES.search(unicodedata.normalize("NFC", text).lower()) else None


def question_language(
    clause: str, names: Sequence[str] = (), context: Sequence[str] = (), first: Language | None = None
) -> Language | None:
    """The language whose rules find the client asking who is answering in the prepared ``clause``, or ``None``;
    ``names``, ``context`` as :meth:`HonestyRules.asks_in`; ``first``: the language whose rules are tried before
    the others (:func:`spelled_language` of the message), else :data:`HONESTY_RULES`' order."""
    ordered = sorted(HONESTY_RULES, key=lambda rules: rules.language != first)  # (a stable sort)
    return next((rules.language for rules in ordered if rules.asks_in(clause, names, context)), None)


def claim_language(joined: str) -> Language | None:
    """The language whose rules find a claim to be a person in ``joined`` (a reply's prepared clauses joined by
    `` | ``), or ``None``."""
    return next((rules.language for rules in HONESTY_RULES if rules.claims.search(joined)), None)
