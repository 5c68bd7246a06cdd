"""Crisis detection beyond the English lexicon: normalisation of obfuscated text, explicit ideation in
Spanish, French, German and Portuguese, the learned component's arithmetic, the combined detector and the
conversation-level risk (:mod:`app.handoff.normalise`, :mod:`app.handoff.languages`,
:mod:`app.handoff.crisis_model`, :mod:`app.handoff.detector`). Pure: no database, and no MiniLM — the
learned component runs on a stub embedder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from app.handoff.brief import why_line
from app.handoff.crisis import (
    DEFAULT_CRISIS_RESOURCES,
    LANGUAGE_DEFAULT_RESOURCES,
    crisis_acknowledgement,
    crisis_detail,
    crisis_reasons,
    crisis_reasons_text,
    crisis_reply,
    needs_crisis_protocol,
    resources_for,
    risk_from_metadata,
    risk_metadata,
)
from app.handoff.crisis_model import (
    FEATURE_DIMENSIONS,
    LEXICON_SCALE,
    TARGET_RECALL,
    CrisisModel,
    default_model,
    features,
    fit,
    pronoun_rates,
    recall_threshold,
    windows,
)
from app.handoff.detector import CONVERSATION_WINDOW, CrisisDetector, conversation_risk, screen_flag
from app.handoff.languages import CUES, detect_language, written_language
from app.handoff.normalise import normalise
from app.handoff.risk import RiskAssessment, RiskDetector

lexicon = RiskDetector()


# --- normalisation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("k i l l  m y s e l f", "kill myself"),
        ("k i l l m y s e l f", "kill myself"),
        ("k.i.l.l m.y.s.e.l.f", "kill myself"),
        ("s-u-i-c-i-d-e", "suicide"),
        ("k1ll mys3lf", "kill myself"),
        ("I want to unal1ve myself", "i want to kill myself"),
        ("unalive", "kill"),
        ("kms", "kill myself"),
        ("su1cide", "suicide"),
        ("$uicide", "suicide"),
        ("sewer slide", "suicide"),
        ("ki\u200bll my\u00adself", "kill myself"),  # zero-width space, soft hyphen (category Cf)
        ("k\u2060ill\ufeff myself", "kill myself"),  # word joiner, BOM
        ("ｋｉｌｌ ｍｙｓｅｌｆ", "kill myself"),  # fullwidth (NFKC)
        ("𝐤𝐢𝐥𝐥 𝐦𝐲𝐬𝐞𝐥𝐟", "kill myself"),  # mathematical bold (NFKC)
        ("kіll mysеlf", "kill myself"),  # Cyrillic і and е inside Latin words
        ("z̴a̵l̶g̷o", "zalgo"),  # combining marks
        ("I want 2 die", "i want to die"),
    ],
)
def test_normalise_undoes_obfuscation(text: str, expected: str) -> None:
    assert normalise(text) == expected
    assert normalise(normalise(text)) == normalise(text)


@pytest.mark.parametrize(
    "text",
    ["I have an mp3 and 2nd b4 10am", "I am a b c", "h3ll0 w0rld", "Привет, как дела", "Ça va très bien"],
)
def test_normalise_leaves_ordinary_text_alone_apart_from_case_and_accents(text: str) -> None:
    expected = {"Ça va très bien": "ca va tres bien"}.get(text, text.lower())
    assert normalise(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "k i l l  m y s e l f",
        "I'm going to k1ll mys3lf",
        "i want to unal1ve myself tonight",
        "kms",
        "thinking about su1cide, I want to end my l1fe",
        "I want to ki\u200bll my\u200bself",
        "ｉ ｗａｎｔ ｔｏ ｄｉｅ",
    ],
)
def test_obfuscated_ideation_reaches_the_crisis_protocol(text: str) -> None:
    risk = lexicon.assess(text)
    assert needs_crisis_protocol(risk), (text, risk)


# --- other languages -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("quiero matarme", "es"),
        ("Me quiero morir", "es"),
        ("Ya no quiero vivir", "es"),
        ("voy a suicidarme esta noche", "es"),
        ("Estoy pensando en quitarme la vida", "es"),
        ("je veux me suicider", "fr"),
        ("J'ai envie de mourir", "fr"),
        ("Je ne veux plus vivre", "fr"),
        ("je vais mettre fin à mes jours", "fr"),
        ("ich will mich umbringen", "de"),
        ("Ich bringe mich um", "de"),
        ("Ich will nicht mehr leben", "de"),
        ("ich möchte sterben", "de"),
        ("quero me matar", "pt"),
        ("Vou me matar", "pt"),
        ("Não quero mais viver", "pt"),
        ("eu quero morrer", "pt"),
        ("Q U I E R O  M A T A R M E", "es"),
        # thinking about suicide, as English's "thinking about suicide" (it was level none in these four languages)
        ("Pienso en el suicidio todos los días", "es"),
        ("He pensado en quitarme la vida", "es"),
        ("Je pense souvent au suicide", "fr"),
        ("J'ai pensé au suicide", "fr"),
        ("Ich denke jeden Tag an Selbstmord", "de"),
        ("Ich denke über Suizid nach", "de"),
        ("Penso em suicídio", "pt"),
        ("Tenho pensado no suicídio", "pt"),
        # the English lexicon's crisis-level statements with no word of death (level none in these languages before)
        ("Todos estarían mejor sin mí", "es"),
        ("Anoche me volví a cortar", "es"),
        ("Me voy a tirar de un puente", "es"),
        ("Minha família ficaria melhor sem mim", "pt"),
        ("Me cortei de novo ontem", "pt"),
        ("Vou me jogar da ponte", "pt"),
        ("Tout le monde serait mieux sans moi", "fr"),
        ("Je me suis encore scarifiée hier", "fr"),
        ("Je vais sauter d'un pont", "fr"),
        ("Je voudrais ne plus jamais me réveiller", "fr"),
        ("Alle wären besser dran ohne mich", "de"),
        ("Ich habe mich gestern wieder geritzt", "de"),
        ("Ich werde von einer Brücke springen", "de"),
        ("Ich will morgen nicht aufwachen", "de"),
        # an elision: the detector's English normalisation glued "j'aimerais" into "jaimerais", which no cue read
        ("J'aimerais être morte", "fr"),
    ],
)
def test_explicit_ideation_in_other_languages_triggers_the_protocol(text: str, language: str) -> None:
    risk = lexicon.assess(text)
    assert risk.level == "crisis" and needs_crisis_protocol(risk), (text, risk)
    assert risk.explicit
    assert risk.language == language
    assert any(name.startswith(f"{language}: ") for name in risk.matched)
    assert risk_metadata(risk)["language"] == language


@pytest.mark.parametrize(
    "text",
    [
        "No quiero matarme, solo estoy cansado",
        "Je ne veux pas mourir",
        "Ich will nicht sterben",
        "Não quero morrer, só preciso de ajuda",
        "Quiero mejorar mi rutina de ejercicio",
        "Ich möchte besser schlafen",
        # someone else's suicide (grief), and thinking about it negated
        "Pienso en el suicidio de mi padre",
        "No pienso en el suicidio",
        "Penso no suicídio do meu irmão",
        "Não penso em suicídio",
        "Je pense au suicide de mon ami",
        "Ich denke an den Selbstmord meines Vaters",
        "Ich denke nicht an Selbstmord",
        # the same words in everyday sense: a cut while cooking, a haircut, children jumping into a river, waking early
        "Me corté el dedo cocinando",
        "Me corto el pelo mañana",
        "Mi familia estaría mejor con más dinero",
        "Me cortei fazendo o jantar",
        "As crianças pulam da ponte no rio",
        "Je vais sauter de joie",
        "Les enfants sautent du pont dans la rivière",
        "Je veux me réveiller tôt demain",
        "Die Kinder springen von der Brücke ins Wasser",
        "Ich will morgen nicht früh aufwachen",
    ],
)
def test_negated_and_ordinary_non_english_messages_do_not(text: str) -> None:
    assert not needs_crisis_protocol(lexicon.assess(text))


@pytest.mark.parametrize(
    ("text", "level", "kind"),
    [
        # no reason to live, a wish to disappear or never to have been born: English's indirect cues, crisis level
        ("No tengo ninguna razón para vivir", "crisis", "indirect"),
        ("Mi vida ya no tiene sentido", "crisis", "indirect"),
        ("Ojalá pudiera desaparecer para siempre", "crisis", "indirect"),
        ("Je n'ai aucune raison de vivre", "crisis", "indirect"),
        ("J'aurais préféré ne jamais être née", "crisis", "indirect"),
        ("Mein Leben hat keinen Sinn mehr", "crisis", "indirect"),
        ("Ich wünschte, ich wäre nie geboren", "crisis", "indirect"),
        ("Não tenho motivo para viver", "crisis", "indirect"),
        ("Queria sumir para sempre", "crisis", "indirect"),
        # an overdose taken: English's "took all the pills", explicit
        ("Me tomé todas las pastillas", "crisis", "explicit"),
        ("J'ai pris toutes mes pilules", "crisis", "explicit"),
        ("Ich habe eine ganze Packung Schlaftabletten geschluckt", "crisis", "explicit"),
        ("Engoli uma cartela inteira de remédios", "crisis", "explicit"),
        # can't go on (indirect 0.55), a burden (indirect 0.45), hopeless (distress): concern, as in English
        ("Ya no puedo más", "concern", "indirect"),
        ("Je n'en peux plus", "concern", "indirect"),
        ("Ich kann nicht mehr.", "concern", "indirect"),
        ("Não aguento mais", "concern", "indirect"),
        ("Soy una carga para todos", "concern", "indirect"),
        ("Je ne suis qu'un fardeau", "concern", "indirect"),
        ("Ich falle allen nur zur Last", "concern", "indirect"),
        ("Sou um fardo para todos", "concern", "indirect"),
        ("Me siento sin esperanza", "concern", "distress"),
        ("Je me sens désespérée", "concern", "distress"),
        ("Ich fühle mich hoffnungslos", "concern", "distress"),
        ("Me sinto sem esperança", "concern", "distress"),
    ],
)
def test_the_english_lexicons_weaker_classes_have_counterparts_in_other_languages(
    text: str, level: str, kind: str
) -> None:
    """Level ``none`` before: only wanting to die, to kill oneself and the like were read in these languages."""
    risk = lexicon.assess(text)
    assert risk.level == level, (text, risk)
    [name] = risk.matched
    language = name[:2]
    assert language in ("es", "fr", "de", "pt") and risk.language == language
    assert risk.explicit is (kind == "explicit")
    assert [cue.kind for cue in CUES if cue.name == name] == [kind]


def test_two_messages_in_a_row_that_cannot_go_on_reach_the_protocol() -> None:
    """As "I can't go on" twice in English: a run of concerning messages is a crisis for the conversation."""
    risk = conversation_risk([lexicon.assess("Ya no puedo más"), lexicon.assess("De verdad, ya no puedo más")])
    assert needs_crisis_protocol(risk) and "conversation" in risk.matched


@pytest.mark.parametrize(
    "text",
    [
        "No me tomé todas las pastillas, tranquila",
        "Me tomé todas las vitaminas",
        "Quisiera desaparecer unos días de la oficina",
        "No soy una carga",
        "Tengo una carga de trabajo enorme",
        "Ya no puedo más de cinco kilómetros corriendo",
        "Je n'ai pas pris mes pilules",
        "J'aimerais disparaître quelques jours en vacances",
        "Je ne suis pas désespéré",
        "Ich kann nicht mehr schlafen",
        "Ich habe meine Tabletten genommen",
        "Ich möchte aus dem Büro verschwinden",
        "Ich bin nicht verzweifelt",
        "Não consigo mais dormir",
        "Tomei meus remédios",
        "Queria sumir uns dias do trabalho",
        "Sou um peso pesado",
        "Não sou um fardo",
    ],
)
def test_the_same_words_in_everyday_sense_stay_out(text: str) -> None:
    assert lexicon.assess(text).level == "none", text


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Hola, ¿cómo estás? Estoy muy cansado y no sé qué hacer", "es"),
        ("Bonjour, je suis très fatigué et je ne sais pas quoi faire", "fr"),
        ("Ich bin sehr müde und weiß nicht mehr weiter", "de"),
        ("Estou muito cansado e não sei o que fazer", "pt"),
        ("I am tired and I don't know what to do", "en"),
        ("ok", "en"),
    ],
)
def test_detect_language(text: str, language: str) -> None:
    assert detect_language(normalise(text)) == language


@pytest.mark.parametrize(
    ("text", "language"),
    [
        # a vote of about twenty function words a language read these as Portuguese ("a"), and switched an English
        # client's notices and widget to Portuguese
        ("had a rough day", "en"),
        ("need a plan for a calmer week", "en"),
        ("a question about a habit", "en"),
        ("got a promotion, a big one!", "en"),
        ("A1 from tab A", "en"),
        # short messages it had no answer for, or a wrong one
        ("Necesito ayuda", "es"),
        ("Preciso de ajuda", "pt"),
        ("és um robô?", "pt"),
        ("Ich möchte mit einem Menschen sprechen", "de"),
        ("Je veux parler à quelqu'un", "fr"),
        # too little to tell: the caller falls back to the client's app language
        ("ok", None),
        ("hi", None),
        ("/human", None),
        ("", None),
    ],
)
def test_written_language(text: str, language: str | None) -> None:
    assert written_language(normalise(text)) == language


# --- learned component: arithmetic --------------------------------------------------------------------------


def test_windows_cut_long_text_and_normalise() -> None:
    assert windows("K1ll MYSELF") == ["kill myself"]
    assert windows("") == [""]
    long = " ".join(f"w{i}" for i in range(300))
    assert [len(w.split()) for w in windows(long)] == [128, 128, 44]


def test_pronoun_rates_and_features() -> None:
    first, second, ratio = pronoun_rates("I'm sure you know my story")
    assert (first, second) == (pytest.approx(2 / 6), pytest.approx(1 / 6)) and ratio == pytest.approx(2 / 4)
    assert pronoun_rates("") == (0.0, 0.0, 0.0)
    posts = [np.ones((2, 384)), np.zeros((1, 384))]
    x = features(posts, ["I hate my life", "you will be fine"], 0.5)
    assert x.shape == (FEATURE_DIMENSIONS,)
    assert np.allclose(x[:384], 2 / 3)  # mean over the three windows
    assert np.allclose(x[390:774], 1.0)  # max over the posts of each post's mean window
    assert x[-1] == pytest.approx(0.5 * LEXICON_SCALE)
    assert features([], [], 0.0).shape == (FEATURE_DIMENSIONS,)


def test_fit_threshold_counts_lexicon_flagged_users_as_caught() -> None:
    rng = np.random.default_rng(0)
    positive = [True] * 20 + [False] * 20
    x = rng.normal(size=(40, FEATURE_DIMENSIONS))
    x[:, 0] += np.where(positive, 1.0, -1.0)
    alone = fit(x, positive, target=1.0)
    # every positive already flagged by the lexicon: the model need not catch any, so its threshold is 1
    screen = fit(x, positive, sure=positive, target=1.0)
    assert alone.threshold < 1.0 and screen.threshold == 1.0
    assert screen.meta["threshold_for"] == "lexicon crisis OR model" and alone.meta["threshold_for"] == "model"


def test_recall_threshold_is_the_highest_that_keeps_the_target() -> None:
    scores = [0.9, 0.8, 0.7, 0.6, 0.1, 0.95]
    positive = [True, True, True, True, True, False]
    assert recall_threshold(scores, positive, 0.8) == 0.6  # 4 of 5 positives at ≥ 0.6
    assert recall_threshold(scores, positive, 1.0) == 0.1
    assert recall_threshold([0.3], [False]) == 0.0


def test_model_round_trips_and_calibrates(tmp_path: Path) -> None:
    coef = np.zeros(FEATURE_DIMENSIONS)
    coef[0] = 1.0
    model = CrisisModel(coef, 0.0, a=-4.0, b=0.0, threshold=0.6, meta={"users": 3})
    x = np.zeros((2, FEATURE_DIMENSIONS))
    x[0, 0], x[1, 0] = 1.0, -1.0
    p = model.probabilities(x)
    assert p[0] == pytest.approx(1 / (1 + np.exp(-4.0))) and p[1] < 0.5
    model.save(tmp_path / "m.npz")
    loaded = CrisisModel.load(tmp_path / "m.npz")
    assert (loaded.threshold, loaded.meta) == (0.6, {"users": 3})
    assert np.allclose(loaded.probabilities(x), p, atol=1e-6)


# --- combined detector (stub embedder: axis 0 = "how alarming") ----------------------------------------------


def _stub_model() -> CrisisModel:
    coef = np.zeros(FEATURE_DIMENSIONS)
    coef[0] = 1.0
    return CrisisModel(coef, 0.0, a=-10.0, b=0.0, threshold=0.7)


def _stub_embed(texts: Sequence[str]) -> np.ndarray:
    x = np.zeros((len(texts), 384))
    for i, text in enumerate(texts):
        x[i, 0] = 1.0 if "disappear" in text else -1.0
    return x


def test_learned_component_raises_a_message_the_lexicon_misses_to_concern_only() -> None:
    detector = CrisisDetector(model=_stub_model(), embed=_stub_embed)
    text = "I just want to quietly disappear from everyone"
    assert lexicon.assess(text).level == "none"
    risk = detector.assess(text)
    assert risk.level == "concern" and "learned" in risk.matched
    assert risk.learned is not None and risk.learned > 0.7
    assert not needs_crisis_protocol(risk)
    calm = detector.assess("Work went well today")
    assert calm.level == "none" and calm.learned is not None and calm.learned < 0.01


def test_learned_component_uses_a_given_embedding_and_skips_other_languages() -> None:
    calls: list[Sequence[str]] = []

    def counting(texts: Sequence[str]) -> np.ndarray:
        calls.append(texts)
        return _stub_embed(texts)

    detector = CrisisDetector(model=_stub_model(), embed=counting)
    given = np.zeros(384)
    given[0] = 1.0
    assert detector.assess("anything at all", embedding=given).level == "concern"
    assert detector.assess("Quiero desaparecer de mi vida y de todo").learned is None
    assert calls == []
    assert CrisisDetector(model=None).assess("I want to kill myself").level == "crisis"


def test_learned_component_reads_the_lexicon_score() -> None:
    coef = np.zeros(FEATURE_DIMENSIONS)
    coef[-1] = 1.0
    detector = CrisisDetector(model=CrisisModel(coef, -1.0, a=-10.0, b=0.0, threshold=0.7), embed=_stub_embed)
    calm, cue = detector.learned_probability(["hello"], 0.0), detector.learned_probability(["hello"], 1.0)
    assert calm is not None and cue is not None and calm < 0.01 < 0.99 < cue
    assert "learned" in detector.assess("I want to kill myself").matched  # lexicon score ≥ 0.9
    assert "learned" not in detector.assess("I feel hopeless").matched  # 0.2: 3 × 0.2 - 1 < 0


# --- conversation-level risk -------------------------------------------------------------------------------


MODERATE = [
    "Honestly I've been feeling hopeless for weeks.",
    "I'm just a burden to everyone around me.",
    "What's the point of any of it.",
]


def test_several_moderate_messages_in_a_row_raise_the_conversation_to_crisis() -> None:
    each = [lexicon.assess(text) for text in MODERATE]
    assert all(risk.level == "concern" and not needs_crisis_protocol(risk) for risk in each)
    conversation = conversation_risk(each)
    assert conversation.level == "crisis" and needs_crisis_protocol(conversation)
    assert "conversation" in conversation.matched
    assert {"hopeless", "burden", "whats the point"} <= set(conversation.matched)
    # two of them are still below the protocol: it takes the third
    assert not needs_crisis_protocol(conversation_risk(each[:1]))


def test_a_calm_message_in_between_breaks_the_run() -> None:
    calm = lexicon.assess("Anyway, thanks, the breathing exercise helped a bit.")
    assert calm.level == "none"
    first, second, third = (lexicon.assess(text) for text in MODERATE)
    broken = conversation_risk([first, second, calm, third])
    assert broken == third and not needs_crisis_protocol(broken)
    assert conversation_risk([first, second, third, calm]) == calm


def test_conversation_risk_edges() -> None:
    assert conversation_risk([]) == RiskAssessment("none", 0.0)
    crisis = lexicon.assess("I want to kill myself")
    assert conversation_risk([crisis]) == crisis
    distress = lexicon.assess("I feel so alone")
    # only the latest CONVERSATION_WINDOW messages count
    long = conversation_risk([distress] * 50)
    short = conversation_risk([distress] * CONVERSATION_WINDOW)
    assert long == short
    spanish = lexicon.assess("quiero matarme")
    assert conversation_risk([distress, spanish]).language == "es"


def test_shipped_weights_load_lazily_and_fit_the_features() -> None:
    model = default_model()
    assert model is not None and model.coef.shape == (FEATURE_DIMENSIONS,)
    assert 0.0 < model.threshold < 1.0
    assert model.meta["positive_users"] == 151 and model.meta["target_recall"] == TARGET_RECALL == 0.98


def test_screen_flag_and_user_level_assessment() -> None:
    detector = CrisisDetector(model=_stub_model(), embed=_stub_embed)
    flagged = detector.assess_user(["I want to disappear for good", "To disappear is all I think about"])
    assert screen_flag(flagged) and "learned" in flagged.matched
    calm = detector.assess_user(["Nice weather.", "Work was fine."])
    assert not screen_flag(calm) and calm.learned is not None
    assert screen_flag(lexicon.assess("I want to kill myself"))
    assert not screen_flag(lexicon.assess("I feel so alone"))  # concern from weak words alone


def test_risk_metadata_round_trips_for_the_conversation() -> None:
    risk = lexicon.assess("quiero matarme")
    assert risk_from_metadata(risk_metadata(risk)) == replace(risk, score=round(risk.score, 3))
    assert risk_from_metadata({}) == RiskAssessment("none", 0.0)


@pytest.mark.parametrize(
    ("text", "fragment", "line"),
    [
        ("quiero matarme", "No tienes que pasar por esto a solas", "024"),
        ("je veux me suicider", "Tu n'as pas à traverser cela", "3114"),
        ("ich will mich umbringen", "Du musst da nicht allein", "0800 111 0 111"),
        ("quero me matar", "Você não precisa passar por isso", "188"),
        ("I want to kill myself", "You don't have to go through this alone", "988"),
    ],
)
def test_the_crisis_reply_speaks_the_clients_language(text: str, fragment: str, line: str) -> None:
    risk = lexicon.assess(text)
    reply = crisis_reply("Dana", resources_for(risk.language), risk.language)
    assert fragment in reply and line in reply and "Dana" in reply


US_LINE = "US 988 Suicide & Crisis Lifeline"
GERMAN_LINE = "TelefonSeelsorge: 0800 111 0 111 (kostenlos, rund um die Uhr)."


@pytest.mark.parametrize(
    ("language", "configured", "by_language", "expected"),
    [
        # a coach's lines that name no language no longer hide the client's own: a German client reads both
        ("de", (US_LINE,), None, (US_LINE, *LANGUAGE_DEFAULT_RESOURCES["de"])),
        ("pt", (US_LINE,), {"de": (GERMAN_LINE,)}, (US_LINE, *LANGUAGE_DEFAULT_RESOURCES["pt"])),
        # the coach's lines for the client's language override the rest
        ("de", (US_LINE,), {"de": (GERMAN_LINE,)}, (GERMAN_LINE,)),
        ("de", (), {"de": (GERMAN_LINE,)}, (GERMAN_LINE,)),
        ("es", ("Call me at 555",), {"es": ("Llámame al 555",)}, ("Llámame al 555",)),
        # English has no built-in line of one country to add: the coach's lines alone
        ("en", (US_LINE,), {"de": (GERMAN_LINE,)}, (US_LINE,)),
        # no lines of the coach: the built-in ones
        ("de", (), None, LANGUAGE_DEFAULT_RESOURCES["de"]),
        ("en", (), {}, DEFAULT_CRISIS_RESOURCES),
        ("it", (), None, DEFAULT_CRISIS_RESOURCES),
        ("it", (US_LINE,), None, (US_LINE,)),
        # a built-in line the coach listed too is shown once
        (
            "de",
            (LANGUAGE_DEFAULT_RESOURCES["de"][1], US_LINE),
            None,
            (
                LANGUAGE_DEFAULT_RESOURCES["de"][1],
                US_LINE,
                LANGUAGE_DEFAULT_RESOURCES["de"][0],
                LANGUAGE_DEFAULT_RESOURCES["de"][2],
            ),
        ),
    ],
)
def test_the_crisis_lines_follow_the_clients_language(
    language: str,
    configured: tuple[str, ...],
    by_language: dict[str, tuple[str, ...]] | None,
    expected: tuple[str, ...],
) -> None:
    """A coach listed "US 988 Suicide & Crisis Lifeline" (no language) and a German client in crisis read only
    that: the coach's lines won over the built-in German ones. Now the coach's general lines come first, then the
    built-in lines for the client's language; the coach's lines for that language still replace both."""
    assert resources_for(language, configured, by_language) == expected


def test_the_old_crisis_reply_signature_still_works() -> None:
    assert "988" in crisis_reply("Dana")


@pytest.mark.parametrize("language", ["en", "es", "fr", "de", "pt", "it"])
def test_the_crisis_reply_and_acknowledgement_say_when_an_away_coach_is_back(language: str) -> None:
    """Outside the coach's hours both say when the coach is back (``back``), and list the resources; within them
    the crisis reply is unchanged and the acknowledgement promises a reply (any other language: English)."""
    back = "Monday at 09:00 (Europe/Berlin)"
    resources = resources_for(language)
    away, within = crisis_reply("Dana", resources, language, back), crisis_reply("Dana", resources, language)
    assert back in away and back not in within and away.replace(back, "") != within
    assert all(line in away for line in resources)
    noted, soon = (
        crisis_acknowledgement("Dana", resources, language, back),
        crisis_acknowledgement("Dana", resources, language),
    )
    assert back in noted and back not in soon and noted != soon
    assert all(line in noted and line in soon for line in resources) and "Dana" in soon


@pytest.mark.parametrize(
    ("detail", "reasons"),
    [
        ("crisis: end my life, rope", [("Suicidal intent or self-harm stated", "end my life"),
                                      ("Mentions a means of harm", "rope")]),
        ("crisis: es: quiero matarme", [("Crisis statement in another language (es)", "es: quiero matarme")]),
        ("crisis: de: ich kann nicht mehr, conversation", [
            ("Indirect sign of suicidal thinking (de)", "de: ich kann nicht mehr"),
            ("Several concerning messages in a row", "conversation")]),
        ("crisis: a cue renamed since", [("Crisis cue", "a cue renamed since")]),
        ("crisis: ", []),  # the learned component alone
        ("Client asked for a human", None),
        (None, None),
    ],
)  # fmt: skip
def test_a_crisis_detail_reads_back_as_labelled_reasons(
    detail: str | None, reasons: list[tuple[str, str]] | None
) -> None:
    found = crisis_reasons(detail)
    assert (None if found is None else [(r.label, r.cue) for r in found]) == reasons


def test_alerts_word_a_crisis_detail_as_the_dashboard_labels_it() -> None:
    """The webhook and e-mail alerts said "crisis: end my life, rope": the detector's cue names, with no labels."""
    assert crisis_reasons_text("crisis: end my life, rope") == (
        "Crisis signals: Suicidal intent or self-harm stated (detector cue: end my life); "
        "Mentions a means of harm (detector cue: rope)"
    )
    assert crisis_reasons_text("crisis: ") == "Crisis signals: flagged by the learned detector (no lexicon cue)"
    assert crisis_reasons_text("Client asked for a human") is None and crisis_reasons_text(None) is None


def test_the_brief_names_crisis_cues_as_the_detectors() -> None:
    assert why_line("crisis", crisis_detail(["kill myself", "burden", "pills", "rope"])) == (
        "Why: Crisis risk (detector cues: kill myself, burden, pills)"
    )
    assert why_line("crisis", crisis_detail([])) == "Why: Crisis risk (the learned detector)"
    assert why_line("human_request", "asked") == "Why: Client asked for a human (asked)"
