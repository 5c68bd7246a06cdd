"""An explicit ask for a human in Spanish, French, German and Portuguese (app.handoff.signals.asks_for_human,
rules in app.handoff.human_request): the requests fire, mentions, negations, "I'm only human", reported
speech and quotes ("mi coach dijo que…") do not — the same kinds of cases as the English list in test_signals."""

from __future__ import annotations

import pytest

from app.handoff.signals import asks_for_human, human_request_language

ASKS: dict[str, list[str]] = {
    "es": [
        "Quiero hablar con una persona",
        "¿Puedo hablar con mi coach?",
        "¿Puedo hablar con una persona real, por favor?",
        "Me gustaría hablar con un humano",
        "prefiero hablar directamente con mi entrenadora",
        "Pásame con una persona de verdad",
        "Quiero una persona real",
        "necesito un humano ya",
        "¿Hay alguien real ahí?",
        "¿Puede mi coach responder esto?",
        "Ya no quiero hablar con un bot",
        "Una persona, por favor",
        "No, quiero hablar con una persona",
        "QUIERO HABLAR CON UNA PERSONA!!!",
        "quiero que me atienda una persona",
        "¿Me pasas con una persona?",
        "¿Me puede atender un humano?",
        "Mi coach dijo que no. Quiero hablar con una persona.",  # the verb of saying is in another sentence
        "Lo que dice mi coach es útil, pero quiero hablar con una persona",  # "pero": the client's own words
    ],
    "fr": [
        "Je veux parler à un humain",
        "Je voudrais parler à une vraie personne",
        "Est-ce que je peux parler à mon coach ?",
        "Puis-je parler avec quelqu'un de réel ?",
        "J'aimerais parler au coach",
        "j'ai besoin de parler à un être humain",
        "Passez-moi un humain",
        "Mettez-moi en relation avec un conseiller",
        "Je veux un vrai humain",
        "Y a-t-il une vraie personne ici ?",
        "Mon coach peut-il me répondre ?",
        "Je ne veux plus parler à un robot",
        "Un humain svp",
        "Pouvez-vous me passer un conseiller ?",
        "Je te l'ai dit : je veux parler à un humain",  # the client restates their ask
    ],
    "de": [
        "Ich möchte mit einem Menschen sprechen",
        "Kann ich bitte mit einem echten Menschen reden?",
        "Ich will mit meinem Coach sprechen",
        "Ich würde gerne mit einer echten Person sprechen",
        "Darf ich meinen Coach sprechen?",
        "Verbinden Sie mich bitte mit einem Mitarbeiter",
        "Hol mir einen echten Menschen",
        "Ich will einen echten Menschen!",
        "Gibt es hier einen echten Menschen?",
        "Kann mein Coach mir selbst antworten?",
        "Ich will nicht mehr mit einem Bot reden",
        "Einen Menschen bitte",
        "Können Sie mich mit einem Menschen verbinden?",
        "ICH MOECHTE MIT EINEM MENSCHEN SPRECHEN",
        "Ich habe doch gesagt, ich will mit einem Menschen sprechen",
        "Mein Coach sagt, das sei normal, aber ich will mit einem Menschen sprechen",
    ],
    "pt": [
        "Quero falar com uma pessoa",
        "Posso falar com o meu coach?",
        "Gostaria de falar com um humano de verdade",
        "Queria conversar com minha treinadora",
        "Me passa pra um atendente",
        "Me transfira para uma pessoa real",
        "Quero uma pessoa real",
        "Preciso de um humano agora",
        "Tem alguém de verdade aí?",
        "Meu coach pode me responder?",
        "Não quero mais falar com um robô",
        "Uma pessoa, por favor",
        "Pode me passar para um atendente?",
        "Não, quero falar com uma pessoa",
        "Eu já disse, quero falar com uma pessoa",
    ],
}

NOT_ASKS: dict[str, list[str]] = {
    "es": [
        "Hoy hablé con una persona en el trabajo",
        "Mi coach dijo que las personas son complicadas",
        "Solo soy humano",
        "Es de humanos procrastinar",
        "Quiero ser una mejor persona",
        "No necesito un humano, tú me ayudas bien",
        "No quiero hablar con una persona ahora, solo contigo",
        "Quiero hablar con mi jefe sobre un aumento",
        "Mi coach es una persona real que se preocupa",
        "Mi coach quiere que hable con más gente",
        "Cuando hablo con una persona me pongo nervioso",
        "Conocí a una persona real del foro",
        "Necesito un agente para mi libro",
        "Siempre me pasa con una persona del trabajo",  # "me pasa": it happens to me
        "¿Eres un bot?",
        "Mi coach dijo que necesito una persona de confianza",
        'Mi amiga me dijo: "quiero hablar con una persona"',
        "El libro dice «quiero hablar con una persona»",
    ],
    "fr": [
        "J'ai parlé à une personne au travail aujourd'hui",
        "Mon coach a dit que les gens sont compliqués",
        "Je ne suis qu'un humain",
        "C'est humain de procrastiner",
        "Je veux être une meilleure personne",
        "Je n'ai pas besoin d'un humain",
        "Je ne veux pas parler à un humain, juste à toi",
        "Je ne veux parler à personne aujourd'hui",
        "Personne",
        "Je veux parler à mon patron d'une augmentation",
        "Il y a une personne au travail qui m'énerve",
        "Mon coach veut que je parle plus aux gens",
        "Tu es un robot ?",
        "Mon coach a dit : je veux un humain",
        "Il m'a dit « un humain svp »",
        "Ma sœur m'a dit « je veux parler à un vrai humain »",
    ],
    "de": [
        "Ich habe heute mit einem Menschen bei der Arbeit gesprochen",
        "Mein Coach hat gesagt, Menschen sind kompliziert",
        "Ich bin auch nur ein Mensch",
        "Mensch, ist das anstrengend!",
        "Ich will ein besserer Mensch werden",
        "Ich will nicht mit einem Menschen sprechen, nur mit dir",
        "Ich brauche keinen Menschen, du reichst mir",
        "Ich möchte mit meinem Chef über eine Gehaltserhöhung sprechen",
        "Mein Coach ist ein echter Mensch",
        "Ich brauche einen Menschen in meinem Leben",
        "Wenn ich mit einem Menschen spreche, werde ich nervös",
        "Bist du ein Bot?",
        "Er will mit einem Menschen sprechen",
        "Meine Therapeutin meinte, ich brauche einen Menschen",
        "Mein Coach sagte: „Ich will mit einem echten Menschen sprechen“",
    ],
    "pt": [
        "Hoje falei com uma pessoa no trabalho",
        "Meu coach disse que as pessoas são complicadas",
        "Sou só humano",
        "Quero ser uma pessoa melhor",
        "Não preciso de um humano, você está ótimo",
        "Não quero falar com uma pessoa agora, só com você",
        "Quero falar com meu chefe sobre um aumento",
        "Meu coach é uma pessoa real",
        "Meu coach quer que eu fale com mais pessoas",
        "Quando falo com uma pessoa fico nervoso",
        "Você é um robô?",
        "Minha coach falou que eu preciso de uma pessoa",
        'Ele disse: "quero falar com uma pessoa"',
    ],
}


@pytest.mark.parametrize(("language", "text"), [(lang, t) for lang, texts in ASKS.items() for t in texts])
def test_asks_for_human_fires_on_requests_in_other_languages(language: str, text: str) -> None:
    assert asks_for_human(text) is True, language
    assert human_request_language(text) == language


def test_human_request_language_is_english_for_the_command_and_english_wording() -> None:
    assert human_request_language("/human quiero hablar con una persona") == "en"
    assert human_request_language("can I talk to a real person?") == "en"
    assert human_request_language("¿Puedo hablar con María?", coach_name="María de la Cruz") == "es"
    assert human_request_language("Hola, ¿qué tal?") is None


@pytest.mark.parametrize(("language", "text"), [(lang, t) for lang, texts in NOT_ASKS.items() for t in texts])
def test_asks_for_human_ignores_mentions_and_negations_in_other_languages(language: str, text: str) -> None:
    assert asks_for_human(text) is False, language


def test_asks_for_human_by_the_coachs_name_in_other_languages() -> None:
    """With the coach's name (accents as written or not), "quiero hablar con <name>" counts; other names and
    mentions still don't."""
    assert asks_for_human("¿Puedo hablar con María?", coach_name="María de la Cruz") is True
    assert asks_for_human("quiero hablar con maria", coach_name="María de la Cruz") is True
    assert asks_for_human("Ich möchte mit Jörg sprechen", coach_name="Jörg Weber") is True
    assert asks_for_human("Je voudrais parler à Hélène", coach_name="Hélène Martin") is True
    assert asks_for_human("Posso falar com a Ana?", coach_name="Ana Souza") is True
    assert asks_for_human("¿Puedo hablar con María?") is False
    assert asks_for_human("quiero hablar con la psicóloga", coach_name="María de la Cruz") is False
    assert asks_for_human("¿Puedo hablar con Pedro?", coach_name="María de la Cruz") is False
    assert asks_for_human("María dijo hola", coach_name="María de la Cruz") is False
