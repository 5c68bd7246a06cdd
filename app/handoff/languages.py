"""Suicidal ideation in Spanish, French, German and Portuguese, and the language of a message.

The English lexicon (:mod:`app.handoff.risk`) and the learned component (MiniLM, trained on English Reddit
posts) do not read other languages. This module adds what a crisis protocol must not miss in the four
languages OpenCoach's coaches most often meet besides English: first-person statements of wanting to die,
to kill oneself or to end one's life, plus plans ("voy a matarme") and passive wishes ("ich will nicht mehr
leben"). Each of those is an ``explicit`` cue of weight :data:`WEIGHT` (crisis level on its own) named
``"<lang>: <cue>"``. A negator right before the verb ("no quiero morir", "je n'ai pas / plus / aucune envie de
mourir", "ich habe nicht vor, mich umzubringen"; "je ne veux pas mourir" does not match at all) cancels it, except in
the cues that carry their own negation ("ya no quiero vivir", "je n'ai plus envie de vivre"). English discounts a
negated cue instead ("I don't want to die": ``concern``); in both, a negated wish to die is not a crisis.

The English lexicon's weaker classes have counterparts too, each at its English cue's kind and weight
(:class:`LanguageCue`), so a message scores as its English translation would: no reason to live and a wish to
disappear or never to have been born (``indirect``, crisis level), an overdose taken (``explicit``, crisis),
not being able to go on (``indirect`` 0.55: ``concern``, and ``crisis`` when the client's next message is
concerning too, :func:`app.handoff.detector.conversation_risk`), being a burden (``indirect`` 0.45) and
hopelessness (``distress`` 0.2), both ``concern``.

The patterns run on :func:`app.handoff.normalise.normalise` output (lower-case, accents removed), with
apostrophes turned into spaces (``j'ai`` → ``j ai``). They were written from native-speaker crisis-line
wording and the warning-sign pages of national lines (Spain 024, France 3114, Germany Telefonseelsorge,
Brazil CVV 188), not tuned on any data set; the tests list the variants covered.

:func:`detect_language` tells ``es|fr|de|pt|en`` with py3langid (langid.py's byte n-gram naive Bayes, Lui &
Baldwin 2012, restricted to these five languages; :func:`written_language`); it picks the crisis resources' language
and keeps the English-only learned component off non-English text. A message too short to tell defaults to ``en``.
Before, a vote of about twenty function words per language read "had a rough day" as Portuguese ("a").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Literal

from py3langid.langid import MODEL_FILE, LanguageIdentifier

Language = Literal["en", "es", "fr", "de", "pt"]
CueKind = Literal["explicit", "indirect", "means", "distress"]
"""The lexicon's cue classes (:mod:`app.handoff.risk`): stated intent, indirect ideation, a means, distress."""
LANGUAGES: tuple[Language, ...] = ("en", "es", "fr", "de", "pt")

WEIGHT = 0.9
"""Weight of a non-English explicit cue: like English ``kill myself`` (crisis level alone)."""

_NEGATORS: dict[Language, re.Pattern[str]] = {
    "es": re.compile(r"\b(?:no|nunca|jamas)\s+(?:\w+\s+)?$"),
    "pt": re.compile(r"\b(?:nao|nunca|jamais)\s+(?:\w+\s+)?$"),
    "fr": re.compile(r"\b(?:ne|n|jamais)\s+(?:\w+\s+)?$"),
    "de": re.compile(
        r"\b(?:nicht|nie|niemals|kein)\s+(?:\w+\s+)?$|\b(?:(?:nicht|nie|niemals) vor|keine (?:absicht|lust)),?\s+$"
    ),
}


@dataclass(frozen=True)
class LanguageCue:
    """One non-English cue: ``language``, ``name`` (``"es: quiero matarme"``), ``pattern``, ``negatable``
    (cancelled by a negator in the two words before it), and the ``kind`` and ``weight`` (0–1) it scores with,
    those of its English counterpart in :data:`app.handoff.risk.CUES`."""

    language: Language
    name: str
    pattern: re.Pattern[str]
    negatable: bool = True
    kind: CueKind = "explicit"
    weight: float = WEIGHT


def _cue(
    language: Language,
    name: str,
    *alternatives: str,
    negatable: bool = True,
    kind: CueKind = "explicit",
    weight: float = WEIGHT,
) -> LanguageCue:
    regex = "|".join(f"(?:{alternative})" for alternative in alternatives)
    return LanguageCue(language, f"{language}: {name}", re.compile(rf"\b(?:{regex})\b"), negatable, kind, weight)


_ES_WANT = r"(?:quiero|queria|quisiera|necesito|deseo|voy a|me voy a|pienso|estoy pensando en|tengo ganas de|planeo)"
_PT_WANT = r"(?:quero|queria|preciso|desejo|vou|eu vou|penso em|estou pensando em|to pensando em|tenho vontade de)"
# "envie de" negated by the word before it ("je n'ai pas / plus / aucune envie de mourir", spoken "j'ai pas envie"),
# which the negator two words back (_NEGATORS) misses; "de plus en plus envie de mourir" is not negated
_FR_WANT = (
    r"(?:veux|voudrais|vais|compte|pense a|j ai envie de|ai envie de|ai decide de?"
    r"|(?<!pas )(?<!jamais )(?<!aucune )(?<!(?<!en )plus )envie de?)"
)
_DE_WANT = r"(?:will|mochte|moechte|werde|wurde|muss|denke daran|plane)"
# thinking about suicide, as English's "suicide intent" cue reads "thinking about suicide": its own words in each
# language ("pienso en el suicidio"); not someone else's ("…el suicidio de mi padre": grief, not ideation)
_ES_THINK = r"(?:pienso|pensando|he pensado|pense|pensaba) (?:mucho |siempre |a veces |todos los dias )?en"
_PT_THINK = r"(?:penso|pensando|pensei|tenho pensado|pensava) (?:muito |sempre |as vezes |todo dia )?(?:em|no)"
_FR_THINK = r"(?:je |j )?(?:pense|pensais|ai pense|songe) (?:souvent |beaucoup |tout le temps |tous les jours )?"
_DE_THINK = r"(?:denke|dachte) (?:oft |standig |staendig |jeden tag |taglich |viel )?(?:an|uber|ueber)"
# a height or a train to end one's life by, as English's "jump to die" cue reads them
_ES_FROM_HEIGHT = (
    r"(?:de|desde|por) (?:un |una |el |la |mi )?(?:puente|edificio|balcon|ventana|azotea|techo|acantilado)"
)
_PT_HEIGHT = r"(?:ponte|predio|janela|sacada|varanda|telhado|penhasco)"
_FR_HEIGHT = r"(?:pont|immeuble|balcon|fenetre|toit|falaise)"
_DE_HEIGHT = r"(?:brucke|bruecke|dach|hochhaus|balkon|klippe|fenster)"

CUES: tuple[LanguageCue, ...] = (
    # Spanish
    _cue(
        "es",
        "quiero matarme",
        rf"{_ES_WANT} (?:ya )?(?:matarme|suicidarme|quitarme la vida|morirme|morir|acabar con mi vida|colgarme)",
        r"me (?:quiero|voy a|voy a|pienso) (?:matar|suicidar|morir|quitar la vida)",
        r"(?:me mato|me suicido|me quito la vida)(?: ya| hoy| esta noche)?$",
        rf"{_ES_THINK} (?:el )?suicidio(?! de )",
        rf"{_ES_THINK} (?:matarme|suicidarme|quitarme la vida)",
    ),
    _cue(
        "es",
        "no quiero vivir",
        r"(?:ya )?no quiero (?:seguir )?(?:vivir|viviendo|estar vivo|estar viva|despertar)",
        r"(?:desearia|ojala|quisiera) (?:estar|estuviera) muert[oa]",
        r"(?:mejor|preferiria) (?:estar|estaria) muert[oa]",
        r"pensamientos suicidas|ideas suicidas|no vale la pena vivir",
        negatable=False,
    ),
    # Portuguese
    _cue(
        "pt",
        "quero me matar",
        rf"{_PT_WANT} (?:me matar|me suicidar|morrer|me enforcar)",
        rf"{_PT_WANT} (?:tirar (?:a )?minha (?:propria )?vida|acabar com (?:a )?minha vida)",
        r"(?:quero|vou) matar-me|(?:quero|vou) suicidar-me",
        rf"{_PT_THINK} (?:o )?suicidio(?! d[oa]s? )",
    ),
    _cue(
        "pt",
        "nao quero mais viver",
        r"(?:eu )?(?:nao|n) quero (?:mais )?(?:viver|estar viv[oa]|acordar)(?: mais)?",
        r"(?:queria|preferia|gostaria de) estar mort[oa]",
        r"pensamentos suicidas|ideias suicidas|a vida nao vale a pena",
        negatable=False,
    ),
    # French
    _cue(
        "fr",
        "je veux me suicider",
        rf"(?:je |j )?{_FR_WANT} (?:me suicider|mourir|me tuer|en finir(?! avec (?!la vie|ma vie|tout\b))|me foutre"
        r" en l air|me pendre)",
        rf"(?:je |j )?{_FR_WANT} mettre fin a (?:mes jours|ma vie)",
        r"je (?:me suicide|me tue|vais en finir)",
        rf"{_FR_THINK}au suicide(?! d)",
    ),
    _cue(
        "fr",
        "je ne veux plus vivre",
        r"je (?:ne )?veux plus (?:vivre|etre en vie|me reveiller)",
        r"(?:je n ai|j ai) (?:plus|pas|plus du tout|aucune) envie de vivre"
        r"(?! (?:a|en|au|aux|dans|avec|chez|ici|loin)\b)",
        r"j aimerais (?:etre|mieux etre) mort(?:e)?|je prefererais etre mort(?:e)?",
        r"pensees suicidaires|idees suicidaires|(?:je suis|je me sens) suicidaire",
        r"(?:je )?voudrais (?:etre|mieux etre) mort(?:e)?",
        r"(?:voudrais|aimerais|veux) ne (?:plus|plus jamais|jamais) me reveiller|je ne veux plus jamais me reveiller",
        negatable=False,
    ),
    # German
    _cue(
        "de",
        "ich will mich umbringen",
        rf"(?:ich )?{_DE_WANT} mich (?:umbringen|toten|erhangen|aufhangen|selbst toten)",
        rf"(?:ich )?{_DE_WANT} (?:sterben|tot sein|mir das leben nehmen|selbstmord begehen|suizid begehen)",
        r"ich (?:bringe|bring) mich (?:heute |jetzt |bald )?um",
        r"mich umzubringen|mir das leben zu nehmen",
        rf"{_DE_THINK} (?:selbstmord|suizid)(?! (?:meine|seine|ihre|deine|unsere|des|der|von))",
    ),
    _cue(
        "de",
        "ich will nicht mehr leben",
        r"ich (?:will|mochte|kann) nicht mehr (?:leben|weiterleben|aufwachen)",
        r"ich (?:ware|waere) (?:lieber|besser) tot|ich wunschte,? ich (?:ware|waere) tot",
        r"(?:ich habe |habe )?(?:selbstmordgedanken|suizidgedanken|suizidale gedanken)|ich bin suizidal",
        r"ich (?:will|mochte|moechte) (?:morgen |einfach |nie )?nicht (?:mehr )?aufwachen",
        negatable=False,
    ),
    # the English lexicon's crisis-level statements without a word of death: others better off without the writer,
    # self-harm, a jump or a train to die by (its "better off without me", "hurt myself" and "jump to die" cues)
    _cue(
        "es",
        "mejor sin mi",
        r"(?:todos|todo el mundo|mi familia|mis hijos|los demas|el mundo) (?:estarian|estaria|vivirian|viviria) mejor"
        r" sin mi",
        negatable=False,
    ),
    _cue(
        "es",
        "me corto",
        r"(?:me volvi a cortar|me he vuelto a cortar|volvi a cortarme|me sigo cortando|me autolesiono|autolesionarme)",
        r"me corto (?:los brazos|las munecas|las piernas)",
        negatable=False,
    ),
    _cue(
        "es",
        "tirarme de un puente",
        rf"me (?:voy a|quiero|pienso) (?:tirar|lanzar|aventar) {_ES_FROM_HEIGHT}",
        rf"{_ES_WANT} (?:tirarme|lanzarme|aventarme) {_ES_FROM_HEIGHT}",
        rf"{_ES_WANT} (?:tirarme|lanzarme|aventarme) (?:a las vias|al tren|delante del (?:tren|metro))",
    ),
    _cue(
        "pt",
        "melhor sem mim",
        r"(?:todos|todo mundo|minha familia|meus filhos|os outros|o mundo) (?:estariam|estaria|ficariam|ficaria"
        r"|viveriam|viveria) melhor sem mim",
        negatable=False,
    ),
    _cue(
        "pt",
        "me corto",
        r"(?:me cortei de novo|me corto de novo|eu me corto|continuo me cortando|voltei a me cortar|me automutilo"
        r"|me mutilo)",
        negatable=False,
    ),
    _cue(
        "pt",
        "me jogar da ponte",
        rf"{_PT_WANT} (?:me jogar|pular|me atirar) (?:da|de uma|de um|do|de) " + _PT_HEIGHT,
        rf"{_PT_WANT} me (?:jogar|atirar) (?:na frente|embaixo|debaixo) d[oe] (?:trem|metro|onibus|caminhao)",
    ),
    _cue(
        "fr",
        "mieux sans moi",
        r"(?:tout le monde|ma famille|mes enfants|les autres) (?:serait|seraient|vivrait|vivraient) mieux sans moi",
        negatable=False,
    ),
    _cue(
        "fr",
        "je me scarifie",
        r"je me (?:scarifie|mutile|suis (?:encore |de nouveau )?(?:scarifiee?|mutilee?))",
        r"je me (?:coupe|suis (?:encore |de nouveau )?coupee?) (?:les bras|les poignets|les veines)",
        negatable=False,
    ),
    _cue(
        "fr",
        "sauter d un pont",
        rf"(?:je |j )?{_FR_WANT} (?:sauter|me jeter) (?:d un |d une |du |de la |de l |depuis (?:un |le |la ))"
        + _FR_HEIGHT,
        rf"(?:je |j )?{_FR_WANT} me jeter sous (?:un|le) (?:train|metro|bus|camion)",
    ),
    _cue(
        "de",
        "besser ohne mich",
        r"(?:waren|ware|waeren|waere) (?:ohne mich besser dran|besser dran ohne mich|besser ohne mich)",
        negatable=False,
    ),
    _cue(
        "de",
        "ich ritze mich",
        r"ich ritze mich|mich (?:\w+ ){0,3}geritzt|ich verletze mich selbst|ich schneide mich (?:wieder|selbst)",
        negatable=False,
    ),
    _cue(
        "de",
        "von einer brucke springen",
        r"(?:ich|mich) (?:\w+ ){0,3}von (?:einer|der|dem|einem) " + _DE_HEIGHT + r" (?:zu )?(?:springen|sturzen)",
        r"mich (?:\w+ ){0,2}vor (?:den|einen) (?:zug|u-bahn|u bahn|lkw) (?:zu )?werfen",
    ),
    # the English lexicon's weaker classes, at its cues' kinds and weights: "no reason to live" (indirect 0.8), "wish
    # I was dead" (its disappear / never born wishes, indirect 0.85), "took all the pills" (explicit 0.8), "cant go on"
    # (indirect 0.55), "burden" (indirect 0.45), "hopeless" (distress 0.2)
    _cue(
        "es",
        "no tengo razon para vivir",
        r"no (?:tengo|encuentro|veo|hay) (?:ninguna |ningun |una |mas |ya )?(?:razon|razones|motivo|motivos) para"
        r" (?:vivir|seguir viviendo|seguir viv[oa])",
        r"no tengo (?:nada|a nadie|nadie) por (?:lo que|quien|quienes|que) vivir",
        r"(?:mi vida|vivir) (?:ya )?no tiene (?:ningun |ya )?sentido",
        r"no (?:le )?(?:veo|encuentro) (?:ningun |el )?sentido a (?:la |mi )?vida",
        r"no (?:le )?(?:veo|encuentro) (?:ningun |el )?sentido a (?:vivir|seguir viviendo)(?= *$| ya| asi)",
        negatable=False,
        kind="indirect",
        weight=0.8,
    ),
    _cue(
        "es",
        "ojala no hubiera nacido",
        r"(?:ojala|quisiera|desearia) (?:pudiera |poder )?desaparecer(?: para siempre| del mundo)?"
        r"(?! (?:un|unos|unas|una|por|durante|de|del)\b)",
        r"(?:ojala|quisiera|desearia) (?:no|nunca) (?:haber nacido|hubiera nacido|existir|existiera)",
        negatable=False,
        kind="indirect",
        weight=0.85,
    ),
    _cue(
        "es",
        "me tome todas las pastillas",
        r"(?:me )?(?:tome|he tomado|trague|he tragado) (?:todas (?:las|mis)|un (?:frasco|bote|blister|monton|punado)"
        r" (?:entero )?de|muchisimas|demasiadas|\d{2,}) (?:\w+ )?(?:pastillas|pildoras|comprimidos|medicamentos"
        r"|medicinas|capsulas|somniferos|tranquilizantes)",
        weight=0.8,
    ),
    _cue(
        "es",
        "ya no puedo mas",
        r"ya no (?:puedo|aguanto|soporto) mas(?! (?:de|que)\b)",  # not "más de 5 km" (more than)
        r"no puedo (?:mas(?! (?:de|que)\b)|seguir (?:asi|adelante|viviendo asi))",
        r"no puedo (?:aguantar|soportar)(?:lo)? mas",
        negatable=False,
        kind="indirect",
        weight=0.55,
    ),
    _cue("es", "soy una carga", r"(?:soy|me siento) (?:solo |como )?una carga(?! de)", kind="indirect", weight=0.45),
    _cue(
        "es",
        "sin esperanza",
        r"(?:me siento|estoy) (?:tan |muy |totalmente )?(?:sin esperanzas?|desesperanzad[oa])",
        r"(?:he perdido|perdi) (?:toda )?(?:la )?esperanza",
        r"ya no tengo (?:ninguna )?esperanza",
        kind="distress",
        weight=0.2,
    ),
    _cue(
        "pt",
        "nao tenho motivo para viver",
        r"(?:nao|n) (?:tenho|vejo|encontro|ha) (?:nenhum |nenhuma |mais )?(?:motivo|motivos|razao|razoes) (?:para|pra)"
        r" (?:viver|continuar vivendo|continuar viv[oa]|estar viv[oa])",
        r"(?:nao|n) tenho (?:nada|ninguem) (?:pelo que|por quem|para que|pra que) viver",
        r"minha vida (?:ja )?(?:nao|n) (?:tem|faz) (?:mais |nenhum )?sentido",
        r"(?:nao|n) vejo (?:mais )?sentido (?:na|em|para a|pra) (?:minha )?vida",
        r"(?:nao|n) vejo (?:mais )?sentido em (?:viver|continuar vivendo)(?= *$| mais| assim)",
        negatable=False,
        kind="indirect",
        weight=0.8,
    ),
    _cue(
        "pt",
        "queria nunca ter nascido",
        r"(?:queria|gostaria de|quem dera) (?:poder )?(?:desaparecer|sumir)(?: para sempre| do mapa| do mundo)?"
        r"(?! (?:um|uns|uma|umas|por|durante|de|do|da)\b)",
        r"(?:queria|preferia|gostaria de) (?:nunca ter nascido|nao ter nascido|nao existir)",
        negatable=False,
        kind="indirect",
        weight=0.85,
    ),
    _cue(
        "pt",
        "tomei todos os comprimidos",
        r"(?:tomei|engoli) (?:todos (?:os )?(?:meus )?|todas (?:as )?(?:minhas )?|um (?:frasco|vidro|monte|punhado"
        r"|cartela) (?:inteir[oa] )?de |uma (?:caixa|cartela) (?:inteira )?de |muitos |muitas |\d{2,} )(?:\w+ )?"
        r"(?:comprimidos|remedios|pilulas|capsulas|medicamentos|calmantes)",
        weight=0.8,
    ),
    _cue(
        "pt",
        "nao aguento mais",
        r"(?:nao|n) (?:aguento|suporto) mais(?! (?:de|do que)\b)",
        r"(?:nao|n) consigo mais(?! \w)|(?:nao|n) consigo (?:mais )?continuar(?: assim| vivendo assim)?",
        negatable=False,
        kind="indirect",
        weight=0.55,
    ),
    _cue(
        "pt",
        "sou um fardo",
        r"(?:sou|me sinto) (?:so |como )?um (?:fardo|peso)(?! (?:pesado|leve|pena)\b)",
        kind="indirect",
        weight=0.45,
    ),
    _cue(
        "pt",
        "sem esperanca",
        r"(?:me sinto|estou|to|tou) (?:tao |muito |totalmente )?sem esperanca",
        r"perdi (?:toda )?(?:a )?esperanca",
        r"(?:nao|n) tenho mais esperanca",
        kind="distress",
        weight=0.2,
    ),
    _cue(
        "fr",
        "aucune raison de vivre",
        r"n ai (?:plus |aucune |plus aucune |pas de |plus de )raisons? de vivre",
        r"n ai plus (?:rien|personne) pour (?:qui |quoi )?vivre",
        r"ma vie n a (?:plus (?:de |aucun )?|aucun |pas de )sens",
        r"je ne vois (?:plus )?(?:aucun |pas le |plus le )?sens a (?:ma )?vie",
        r"je ne vois (?:pas|plus) (?:l interet|le sens|la raison) de vivre(?= *$| comme ca| encore)",
        negatable=False,
        kind="indirect",
        weight=0.8,
    ),
    _cue(
        "fr",
        "j aimerais disparaitre",
        r"(?:j aimerais|je voudrais|je souhaiterais) (?:tellement |juste |pouvoir |simplement )*disparaitre"
        r"(?: pour toujours| a jamais)?(?! (?:quelques|un|une|pendant|du|de|en)\b)",
        r"(?:j aurais (?:prefere|aime|voulu)|je voudrais) ne (?:jamais|pas) (?:etre nee?|naitre|exister)",
        r"je (?:voudrais|veux|aimerais) ne plus exister",
        negatable=False,
        kind="indirect",
        weight=0.85,
    ),
    _cue(
        "fr",
        "j ai pris toutes mes pilules",
        r"(?:j ai|je viens de) (?:pris|avale|prendre|avaler) (?:toutes (?:mes|les)|tous (?:mes|les)|une boite"
        r" (?:entiere )?de|une plaquette (?:entiere )?de|un tube de|plein de|trop de|\d{2,}) (?:\w+ )?(?:pilules"
        r"|cachets|comprimes|medicaments|somniferes|gelules|medocs)",
        weight=0.8,
    ),
    _cue(
        "fr",
        "je n en peux plus",
        r"je n en peux plus",
        r"je ne peux plus continuer(?: comme ca| ainsi)?(?! a\b)",
        r"je ne (?:tiens|supporte) plus(?! \w)",
        negatable=False,
        kind="indirect",
        weight=0.55,
    ),
    _cue(
        "fr",
        "je suis un fardeau",
        r"(?:je suis|je ne suis qu|je me sens (?:comme )?) ?(?:juste )?un (?:fardeau|poids)(?! (?:lourd|plume)\b)",
        r"je suis une charge pour",
        kind="indirect",
        weight=0.45,
    ),
    _cue(
        "fr",
        "desespere",
        r"(?:je me sens|je suis) (?:si |tellement |vraiment |completement |totalement )?(?:desesperee?|sans espoir)",
        r"j ai perdu (?:tout )?espoir",
        r"je n ai plus (?:aucun |d )espoir",
        kind="distress",
        weight=0.2,
    ),
    _cue(
        "de",
        "kein grund zu leben",
        r"keinen grund (?:mehr )?(?:zu leben|weiterzuleben|am leben zu bleiben)",
        r"(?:mein leben|das leben fur mich) (?:hat|macht) (?:einfach |fur mich )?keinen sinn",
        r"mein leben ist (?:so |total |vollig )?sinnlos",
        r"(?:ich )?sehe keinen sinn (?:mehr )?(?:im leben|darin,? zu leben|(?:mehr )?zu leben|weiterzuleben)(?= *$)",
        negatable=False,
        kind="indirect",
        weight=0.8,
    ),
    _cue(
        "de",
        "ware nie geboren",
        r"ich (?:wunschte|wuenschte),? ich (?:ware|waere) (?:nie|nicht) geboren",
        r"ich (?:ware|waere) (?:lieber )?nie geboren",
        r"ich (?:wunschte|wuenschte),? ich (?:konnte|koennte) (?:einfach )?(?:verschwinden|aufhoren zu existieren)",
        r"ich (?:mochte|moechte) (?:fur immer |einfach |nur |am liebsten )*verschwinden"
        r"(?! (?:aus|von|vom|nach|in|fur)\b)",
        r"ich (?:will|mochte|moechte) nicht mehr (?:da sein|hier sein|existieren)",
        negatable=False,
        kind="indirect",
        weight=0.85,
    ),
    _cue(
        "de",
        "alle tabletten genommen",
        r"(?:habe|hab) (?:alle (?:meine )?|eine (?:ganze )?(?:packung|schachtel|dose|flasche) |viel zu viele |zu viele "
        r"|\d{2,} )(?:\w+ )?(?:tabletten|pillen|medikamente|schlaftabletten|beruhigungsmittel) (?:\w+ ){0,3}"
        r"(?:genommen|geschluckt|eingenommen)",
        weight=0.8,
    ),
    _cue(
        "de",
        "ich kann nicht mehr",
        r"ich kann nicht mehr(?! \w)|ich kann (?:so )?nicht mehr weiter(?:machen)?",
        r"ich halte (?:es|das) (?:\w+ )?nicht mehr aus",
        negatable=False,
        kind="indirect",
        weight=0.55,
    ),
    _cue(
        "de",
        "ich bin eine last",
        r"ich bin (?:\w+ ){0,2}eine last\b",
        r"ich falle (?:\w+ ){0,2}zur last",
        kind="indirect",
        weight=0.45,
    ),
    _cue(
        "de",
        "hoffnungslos",
        r"(?:ich bin|ich fuhle mich|ich fuehle mich) (?:so |total |vollig |echt |sehr )?(?:hoffnungslos|verzweifelt)",
        r"ich habe (?:jede |alle |die )?hoffnung (?:verloren|aufgegeben)|ich habe keine hoffnung mehr",
        kind="distress",
        weight=0.2,
    ),
)
"""The non-English cues, by language; names are what :attr:`RiskAssessment.matched` reports."""

_APOSTROPHES = re.compile(r"['`\u2019\u2018]")
OTHER_LANGUAGE_PROBABILITY = 0.9
"""How sure py3langid's whole model must be that a text is in a language outside :data:`LANGUAGES` for
:func:`language_probability` to name none of the five. Not tuned (no labelled text in other languages here): a
high bar, so that it rarely takes an answer from the five; ``bench/languages.py`` measures what it costs them."""
MIN_LANGUAGE_PROBABILITY = 0.45
"""py3langid's probability (among :data:`LANGUAGES`) a text's likeliest language needs for
:func:`written_language` to name it. Chosen on the tune half of ``bench/languages.py`` (the catalogue's texts in five
languages and ESConv's English chat, whole and their first three words), maximising right minus twice wrong answers;
on the report half the shipped detector answers 3,089 texts: see the benchmark's table."""


def tag_language(tag: str | None) -> Language | None:
    """The language of a BCP 47 language tag ("es", "pt-BR", "de_AT": Telegram's ``language_code``) when it is
    one of :data:`LANGUAGES`, else ``None`` (another language, or no tag)."""
    primary = (tag or "").replace("_", "-").split("-")[0].lower()
    return next((language for language in LANGUAGES if language == primary), None)


def preferred_language(accept_language: str | None) -> Language | None:
    """The most preferred of :data:`LANGUAGES` in an HTTP ``Accept-Language`` header (RFC 9110 §12.5.4: the highest
    quality ``q``, then the order given; ``q=0`` or an unreadable ``q`` is no preference), each range read by its
    primary subtag (:func:`tag_language`: ``pt-BR`` is ``pt``); ``None`` when the header names none of them."""
    ranked: list[tuple[float, int, Language]] = []
    for position, item in enumerate((accept_language or "").split(",")):
        tag, *parameters = item.split(";")
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        language = tag_language(tag.strip())
        if language is not None and quality > 0:
            ranked.append((-quality, position, language))
    return min(ranked)[2] if ranked else None


def detection_text(normalised: str) -> str:
    """``normalised`` with apostrophes turned into spaces (``j'ai`` → ``j ai``), as :data:`CUES` expect."""
    return _APOSTROPHES.sub(" ", normalised)


@cache
def _identifier() -> LanguageIdentifier:
    """py3langid's identifier (langid.py, Lui & Baldwin 2012: a naive Bayes model over byte n-grams of 97
    languages) with probabilities; loaded once (about 0.7 s here: the web process does it in its start-up warm-up)."""
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def language_probability(normalised: str) -> tuple[Language | None, float]:
    """The likeliest of :data:`LANGUAGES` for a normalised text and its probability among them (0–1, the model's
    probabilities renormalised over the five); ``(None, 0.0)`` for a text with no letters, or one the whole model
    reads, with at least :data:`OTHER_LANGUAGE_PROBABILITY`, as another language (Italian, Dutch…: among the five
    alone, Italian reads as Spanish)."""
    text = detection_text(normalised)
    if not any(c.isalpha() for c in text):
        return None, 0.0
    ranked = _identifier().rank(text)
    top, top_probability = ranked[0]
    ours = [(language, probability) for language, probability in ranked if language in LANGUAGES]
    total = sum(probability for _, probability in ours)
    if (top not in LANGUAGES and top_probability >= OTHER_LANGUAGE_PROBABILITY) or total <= 0.0:
        return None, 0.0
    language, probability = ours[0]
    return language, float(probability / total)


def written_language(normalised: str) -> Language | None:
    """The language of ``en es fr de pt`` a normalised text is written in (:func:`language_probability`), or
    ``None`` when its probability is under :data:`MIN_LANGUAGE_PROBABILITY`: the text tells too little ("ok", "hi",
    ``/human``, nothing), and the caller falls back to the language the client's app is set to, or English."""
    language, probability = language_probability(normalised)
    return language if probability >= MIN_LANGUAGE_PROBABILITY else None


def detect_language(normalised: str) -> Language:
    """The likeliest of ``en es fr de pt`` for a normalised message (:func:`written_language`); ``en`` when the
    message gives too little evidence of any."""
    return written_language(normalised) or "en"


def match_cues(normalised: str) -> list[LanguageCue]:
    """The non-English cues found in a normalised message (each at most once), negated ones left out."""
    text = detection_text(normalised)
    found: list[LanguageCue] = []
    for cue in CUES:
        negator = _NEGATORS.get(cue.language)
        for match in cue.pattern.finditer(text):
            before = text[max(0, match.start() - 30) : match.start()]
            if cue.negatable and negator is not None and negator.search(before):
                continue
            found.append(cue)
            break
    return found
