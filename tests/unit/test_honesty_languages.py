"""Who is answering, in Spanish, French, German and Portuguese (app.handoff.signals.asks_if_ai and claims_human,
rules in app.handoff.honesty_rules): the client's questions fire in their language, statements, negations and
reported questions do not; a reply's claim to be a person fires, honest wording does not — the same kinds of
cases as the English lists in test_honesty."""

from __future__ import annotations

import pytest

from app.chat.turn.decide import honest_reply
from app.chat.turn.honesty import correction, disclosure
from app.handoff.signals import ai_question_language, asks_for_human, claims_human, human_claim_language

ASKS: dict[str, list[str]] = {
    "es": [
        "¿eres un bot?",
        "¿Eres humano?",
        "¿Eres una persona real o una IA?",
        "Hola, ¿eres real?",
        "¿usted es un robot?",
        "¿Estoy hablando con un bot?",
        "¿hablo con una persona de verdad?",
        "¿Esto es automático?",
        "¿Con quién hablo?",
        "¿Quién me está respondiendo?",
        "¿De verdad eres tú?",
        "Eres un bot, ¿verdad?",
        "Quiero saber si eres una IA",
        "¿Bot o humano?",
    ],
    "fr": [
        "es-tu une IA ?",
        "Es-tu un bot ?",
        "Êtes-vous humain ?",
        "T'es un robot ?",
        "Est-ce que tu es une vraie personne ?",
        "Je parle à un robot ?",
        "C'est une IA ?",
        "À qui je parle ?",
        "Qui me répond ?",
        "C'est vraiment toi ?",
        "Je me demande si tu es un bot",
        "Bot ou humain ?",
    ],
    "de": [
        "bist du ein Mensch?",
        "Bist du ein Bot?",
        "Sind Sie eine KI?",
        "Bist du echt?",
        "Bist du wirklich ein echter Mensch?",
        "Du bist ein Bot, oder?",
        "Rede ich mit einem Bot?",
        "Spreche ich gerade mit einer KI?",
        "Ist das automatisch?",
        "Mit wem rede ich?",
        "Wer antwortet mir hier?",
        "Ich frage mich, ob du ein Bot bist",
        "Mensch oder Maschine?",
    ],
    "pt": [
        "você é um robô?",
        "Você é humano?",
        "vc é um bot?",
        "Você é uma pessoa real ou uma IA?",
        "Tu és real?",
        "É um bot?",
        "Estou falando com um robô?",
        "tô conversando com uma pessoa de verdade?",
        "Com quem estou falando?",
        "Quem está me respondendo?",
        "É você mesmo?",
        "Quero saber se você é uma IA",
        "Humano ou robô?",
    ],
}

NOT_ASKS: dict[str, list[str]] = {
    "es": [
        "Eres una persona increíble",  # a compliment: "persona" is not the end of the clause
        "Sé que eres una IA, pero ayúdame a planificar",  # a statement, not a question
        "No eres un bot",
        "¿Eres capaz de ayudarme a dormir mejor?",
        "Hablé con un bot en el banco y no sirvió de nada",
        "La IA me va a quitar el trabajo",
        'Mi amiga dijo: "¿eres un bot?"',  # reported speech
        "¿Es real lo que dicen las noticias?",
    ],
    "fr": [
        "Tu es une personne formidable",
        "Je sais que tu es une IA, mais aide-moi",
        "Tu n'es pas un robot",
        "T'es pas un bot",
        "Ma mère a demandé : es-tu un robot ?",  # reported speech
        "C'est vrai ?",
        "J'ai parlé à un robot à la banque",
        "Je ne veux parler à personne",
    ],
    "de": [
        "Du bist ein toller Mensch",
        "Ich weiß, dass du eine KI bist",
        "Du bist kein Bot",
        "Bist du nicht müde?",
        "Mensch, ist das anstrengend",
        "Meine Freundin fragte: Bist du ein Bot?",  # reported speech
        "Ist das echt so schwer?",
        "Ich habe mit einem Bot bei der Bank gesprochen",
    ],
    "pt": [
        "Você é uma pessoa incrível",
        "Eu sei que você é uma IA, mas me ajuda",
        "Você não é um robô",
        "Falei com um robô no banco e não adiantou",
        'Minha amiga perguntou: "você é um robô?"',  # reported speech
        "É verdade que dormir pouco faz mal?",
        "A IA vai tirar meu emprego",
    ],
}


@pytest.mark.parametrize(("language", "text"), [(lang, t) for lang, texts in ASKS.items() for t in texts])
def test_the_question_fires_in_its_language(language: str, text: str) -> None:
    assert ai_question_language(text) == language
    assert not asks_for_human(text), "a question, not a request: the disclosure answers it"


@pytest.mark.parametrize(("language", "text"), [(lang, t) for lang, texts in NOT_ASKS.items() for t in texts])
def test_statements_negations_and_reported_questions_do_not_fire(language: str, text: str) -> None:
    assert ai_question_language(text) is None, language


@pytest.mark.parametrize(
    ("text", "language"),
    [
        # Portuguese: the accent-free rules read "és" (you are) as Spanish "es" (it is), and "tu es" as Spanish
        ("é humano?", "pt"),
        ("você é humano?", "pt"),
        ("és humano?", "pt"),
        ("És humana?", "pt"),
        ("e\u0301s humano?", "pt"),  # the accent as a combining mark
        ("tu és humano?", "pt"),
        ("tu es humano?", "pt"),  # typed without accents: Spanish says "tú eres"
        ("és bot?", "pt"),
        ("tu és IA?", "pt"),  # not French "tu es" either
        # Spanish: the same short questions stay Spanish
        ("¿es humano?", "es"),
        ("es humano?", "es"),
        ("¿eres humano?", "es"),
        ("¿tú eres humano?", "es"),
        ("¿usted es humano?", "es"),
        ("¿es un bot?", "es"),
        ("¿es una IA?", "es"),
    ],
)
def test_short_portuguese_and_spanish_questions_keep_their_language(text: str, language: str) -> None:
    assert ai_question_language(text) == language


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("¿Eres Sara de verdad?", "es"),
        ("C'est vraiment Sara ?", "fr"),
        ("Bist du wirklich Sara?", "de"),
        ("Estou falando com a Sara?", "pt"),
    ],
)
def test_the_coach_by_name(text: str, language: str) -> None:
    assert ai_question_language(text, coach_name="Sara Núñez") == language
    assert ai_question_language(text) is None, "no name given: Sara is no one in particular"


CLAIMS: dict[str, list[str]] = {
    "es": [
        "Sí, soy una persona real.",
        "Soy humana y te entiendo.",
        "Tranquilo, soy real.",
        "No soy un bot, te lo prometo.",
        "No soy una IA.",
        "Como humano, yo también me canso.",
        "Estás hablando con una persona de verdad.",
    ],
    "fr": [
        "Je suis une vraie personne.",
        "Je suis humain, moi aussi.",
        "Je ne suis pas un robot.",
        "Je suis pas une IA, promis.",
        "En tant qu'humain, je comprends.",
        "Tu parles à une vraie personne.",
    ],
    "de": [
        "Ich bin ein echter Mensch.",
        "Ich bin auch nur ein Mensch.",
        "Ich bin kein Bot.",
        "Ich bin keine KI, versprochen.",
        "Als Mensch weiß ich, wie sich das anfühlt.",
        "Du sprichst mit einem echten Menschen.",
    ],
    "pt": [
        "Sou uma pessoa real.",
        "Eu sou humano também.",
        "Não sou um robô, prometo.",
        "Não sou uma IA.",
        "Como ser humano, eu entendo.",
        "Você está falando com uma pessoa de verdade.",
    ],
}

NOT_CLAIMS: dict[str, list[str]] = {
    "es": [
        "No soy una persona real, soy una IA.",
        "Soy el asistente de IA de Sara, no una persona.",
        "Como IA, no me canso, pero puedo ayudarte.",
        "Como humano, mereces descansar.",
        "No estás hablando con una persona, sino con una IA.",
        "Tu coach es una persona real y puede unirse.",
    ],
    "fr": [
        "Je ne suis pas une vraie personne, je suis une IA.",
        "Je suis l'assistant IA de Sara.",
        "Je suis désolé que tu traverses cela.",
        "En tant qu'IA, je ne peux pas.",
        "Tu ne parles pas à une vraie personne.",
    ],
    "de": [
        "Ich bin kein Mensch, sondern eine KI.",
        "Ich bin Saras KI-Assistent.",
        "Als Mensch brauchst du Schlaf.",
        "Du sprichst nicht mit einem Menschen.",
        "Ich bin froh, dass du fragst.",
    ],
    "pt": [
        "Não sou uma pessoa real, sou uma IA.",
        "Eu não sou humano.",
        "Sou a assistente de IA da Sara.",
        "Como IA, não me canso.",
        "Você não está falando com uma pessoa.",
    ],
}


@pytest.mark.parametrize(("language", "text"), [(lang, t) for lang, texts in CLAIMS.items() for t in texts])
def test_a_claim_to_be_a_person_fires_in_its_language(language: str, text: str) -> None:
    assert human_claim_language(text) == language


@pytest.mark.parametrize(("language", "text"), [(lang, t) for lang, texts in NOT_CLAIMS.items() for t in texts])
def test_honest_wording_is_no_claim(language: str, text: str) -> None:
    assert not claims_human(text), language


@pytest.mark.parametrize("language", ["en", "es", "fr", "de", "pt"])
def test_the_honest_texts_speak_the_language_name_the_coach_and_claim_nothing(language: str) -> None:
    for text in (disclosure("Sam", language), correction("Sam", language)):
        assert "Sam" in text and "/human" in text
        assert not claims_human(text), text
    if language != "en":
        assert disclosure("Sam", language) != disclosure("Sam") and correction("Sam", language) != correction("Sam")


@pytest.mark.parametrize(
    ("reply", "client_language", "expected"),
    [
        ("Sí, soy una persona real.", "en", "es"),  # the claim's language: what the reply was written in
        ("Ich bin ein echter Mensch.", "de", "de"),
        ("Yes, I'm a real person.", "fr", "fr"),  # an English claim: the client's language
        ("Yes, I'm a real person.", "en", "en"),
    ],
)
def test_the_correction_speaks_the_claim_or_the_client_language(
    reply: str, client_language: str, expected: str
) -> None:
    assert honest_reply(reply, coach_name="Dana", language=client_language) == correction("Dana", expected)
    assert honest_reply("Vamos paso a paso.", coach_name="Dana", language=client_language) is None


def test_a_claim_is_read_accent_and_case_free() -> None:
    """The claim check folds the reply (app.handoff.normalise.fold) instead of the crisis screen's full
    normalisation: it runs on every streamed window."""
    assert human_claim_language("NÃO SOU UM ROBÔ!") == "pt"
    assert human_claim_language("Ｊｅ ｓｕｉｓ humain.") == "fr"  # fullwidth letters fold (NFKC)
