"""What the client reads from the product (not the model, not the coach), in the language they write in: the one
catalogue of the crisis reply, the crisis acknowledgement, the handoff notice, the SLA holding message, the honest
AI's disclosure and correction (:mod:`app.chat.turn.honesty`), the widget's presence line, the default greeting,
the Telegram bot's own lines (``tg_*``, ``/tone``'s intensity names ``tone_intensity_*``), the web widget's own
texts (``widget_*``: its chat page and launcher, :func:`widget_texts`; ``tone_page_*``, ``memory_page_*``: its tone
and memory pages, :func:`page_texts`) and the refusals a client reads (``refused_*``, by a ``DomainError``'s
``code``: :func:`refusal`).

Each entry of :data:`CATALOGUE` maps ``en es fr de pt`` (:data:`app.handoff.languages.LANGUAGES`) to a
``str.format`` template. The language is the client's as :mod:`app.handoff.languages` detects it
(:attr:`app.handoff.risk.RiskAssessment.language` in a turn), that of the handoff's notice
(:func:`app.handoff.sla.notice_language`) or, in Telegram, the sender's ``language_code``
(:func:`app.channels.telegram.render.update_language`) or, for the widget's chat page, the conversation's when
it reads as another language than English, else the page's (:func:`app.channels.web.widget.page_language`);
:func:`say` fills the language's template, the
English one for a language the catalogue lacks. A time in the texts (``{back}``) is
:func:`app.accounts.availability.describe_return` in the same language. The texts speak to the client as the
crisis reply does: ``tú`` / ``tu`` / ``du`` / ``você``.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.accounts.disclosure import AI_DISCLOSURE_TEXT
from app.core.errors import DomainError

CATALOGUE: dict[str, dict[str, str]] = {
    # The crisis reply (:func:`app.handoff.crisis.crisis_reply`): ``{coach}``, ``{away}`` (empty, or
    # ``crisis_away``) and ``{lines}`` (the crisis resources).
    "crisis_reply": {
        "en": (
            "I'm really glad you told me, and I'm sorry you're going through this. You deserve support from a "
            "person right now: I've flagged our conversation for {coach} as urgent.{away} Please reach out "
            "to someone who can help straight away:\n{lines}\nYou don't have to go through this alone."
        ),
        "es": (
            "Me alegra mucho que me lo hayas contado, y siento que estés pasando por esto. Mereces el apoyo de una "
            "persona ahora mismo: he marcado nuestra conversación como urgente para {coach}.{away} Por favor, "
            "contacta ya con alguien que pueda ayudarte:\n{lines}\nNo tienes que pasar por esto a solas."
        ),
        "fr": (
            "Je suis vraiment content que tu me l'aies dit, et je suis désolé que tu traverses cela. Tu mérites "
            "le soutien d'une personne dès maintenant : j'ai signalé notre conversation comme urgente à {coach}.{away} "
            "Contacte tout de suite quelqu'un qui peut t'aider :\n{lines}\nTu n'as pas à traverser cela seul·e."
        ),
        "de": (
            "Ich bin wirklich froh, dass du es mir gesagt hast, und es tut mir leid, dass du das durchmachst. Du "
            "verdienst jetzt die Unterstützung eines Menschen: Ich habe unser Gespräch für {coach} als dringend "
            "markiert.{away} Bitte wende dich sofort an jemanden, der helfen kann:\n{lines}\nDu musst da nicht allein "
            "durch."
        ),
        "pt": (
            "Fico muito feliz por você ter me contado, e sinto muito que esteja passando por isso. Você merece o "
            "apoio de uma pessoa agora: marquei nossa conversa como urgente para {coach}.{away} Por favor, procure "
            "agora "
            "alguém que possa ajudar:\n{lines}\nVocê não precisa passar por isso sozinho."
        ),
    },
    # The sentence of the crisis texts saying when a coach outside their hours is back: ``{coach}``, ``{back}``.
    "crisis_away": {
        "en": " {coach} is away right now and back {back}.",
        "es": " {coach} no está disponible ahora mismo; vuelve: {back}.",
        "fr": " {coach} n'est pas disponible pour le moment ; de retour : {back}.",
        "de": " {coach} ist gerade nicht erreichbar; wieder da: {back}.",
        "pt": " {coach} está ausente agora; volta: {back}.",
    },
    # The crisis acknowledgement's sentence when the coach is within their hours: ``{coach}``.
    "crisis_soon": {
        "en": " {coach} will reply here as soon as they can.",
        "es": " {coach} responderá aquí en cuanto pueda.",
        "fr": " {coach} répondra ici dès que possible.",
        "de": " {coach} antwortet hier, so schnell es geht.",
        "pt": " {coach} vai responder aqui assim que puder.",
    },
    # The crisis acknowledgement (:func:`app.handoff.crisis.crisis_acknowledgement`): ``{coach}``, ``{when}``
    # (``crisis_soon`` or ``crisis_away``) and ``{lines}``.
    "crisis_still_here": {
        "en": (
            "Your message is saved and goes straight to {coach}.{when} If you feel unsafe or might act on these "
            "thoughts, please don't wait: reach out now:\n{lines}"
        ),
        "es": (
            "Tu mensaje está guardado y le llega directamente a {coach}.{when} Si no te sientes a salvo o crees que "
            "podrías actuar según estos pensamientos, no esperes: pide ayuda ahora:\n{lines}"
        ),
        "fr": (
            "Ton message est enregistré et va directement à {coach}.{when} Si tu ne te sens pas en sécurité ou que "
            "tu pourrais passer à l'acte, n'attends pas : demande de l'aide maintenant :\n{lines}"
        ),
        "de": (
            "Deine Nachricht ist gespeichert und geht direkt an {coach}.{when} Wenn du dich nicht sicher fühlst oder "
            "fürchtest, diesen Gedanken nachzugeben, warte bitte nicht: Hol dir jetzt Hilfe:\n{lines}"
        ),
        "pt": (
            "Sua mensagem está guardada e vai direto para {coach}.{when} Se você não se sentir seguro ou achar que "
            "pode agir com base nesses pensamentos, não espere: procure ajuda agora:\n{lines}"
        ),
    },
    # The handoff notice's opening when the client asked for a person: ``{coach}``.
    "notice_requested": {
        "en": "Of course — I've asked {coach} to join this conversation.",
        "es": "Claro: le he pedido a {coach} que se una a esta conversación.",
        "fr": "Bien sûr — j'ai demandé à {coach} de rejoindre cette conversation.",
        "de": "Natürlich – ich habe {coach} gebeten, zu diesem Gespräch dazuzukommen.",
        "pt": "Claro — pedi para {coach} participar desta conversa.",
    },
    # The handoff notice's opening for any other reason (a rule, low confidence): ``{coach}``.
    "notice_personal": {
        "en": "This is one for {coach} personally, so I've asked them to join this conversation.",
        "es": "Esto es algo para {coach} en persona, así que le he pedido que se una a esta conversación.",
        "fr": "C'est une question pour {coach} en personne, alors je lui ai demandé de rejoindre cette conversation.",
        "de": "Das ist etwas für {coach} persönlich, deshalb habe ich um die Teilnahme an diesem Gespräch gebeten.",
        "pt": "Isso é algo para {coach} pessoalmente, então pedi que participe desta conversa.",
    },
    # When the coach, within their hours, usually replies: ``{coach}``, ``{minutes}`` (their SLA, :func:`minutes`).
    "notice_within": {
        "en": "They usually reply here within {minutes}.",
        "es": "{coach} suele responder aquí en un plazo de {minutes}.",
        "fr": "{coach} répond généralement ici en moins de {minutes}.",
        "de": "{coach} antwortet hier meist innerhalb von {minutes}.",
        "pt": "{coach} costuma responder aqui em até {minutes}.",
    },
    # A number of minutes (:func:`minutes`): ``{n}``, one (``_one``) or another number.
    "minutes_one": {
        "en": "{n} minute",
        "es": "{n} minuto",
        "fr": "{n} minute",
        "de": "{n} Minute",
        "pt": "{n} minuto",
    },
    "minutes_other": {
        "en": "{n} minutes",
        "es": "{n} minutos",
        "fr": "{n} minutes",
        "de": "{n} Minuten",
        "pt": "{n} minutos",
    },
    # When the coach, outside their hours, is back: ``{coach}``, ``{back}``.
    "notice_away": {
        "en": "They're away right now and back {back}.",
        "es": "{coach} no está disponible ahora mismo; vuelve: {back}.",
        "fr": "{coach} n'est pas disponible pour le moment ; de retour : {back}.",
        "de": "{coach} ist gerade nicht erreichbar; wieder da: {back}.",
        "pt": "{coach} está ausente agora; volta: {back}.",
    },
    # The handoff notice's last sentence: nothing the client writes is lost. ``{coach}``.
    "notice_saved": {
        "en": "Your message is saved, and anything you add here goes straight to them.",
        "es": "Tu mensaje está guardado, y todo lo que añadas aquí le llega directamente a {coach}.",
        "fr": "Ton message est enregistré, et tout ce que tu ajoutes ici va directement à {coach}.",
        "de": "Deine Nachricht ist gespeichert, und alles, was du hier ergänzt, geht direkt an {coach}.",
        "pt": "Sua mensagem está guardada, e tudo o que você acrescentar aqui vai direto para {coach}.",
    },
    # The holding message of a handoff still open past the SLA: ``{coach}``, ``{when}`` (``holding_soon`` or
    # ``holding_back``).
    "holding_open": {
        "en": "Thank you for waiting — {coach} hasn't been able to join yet and will reply here {when}.",
        "es": "Gracias por esperar: {coach} aún no ha podido unirse y responderá aquí {when}.",
        "fr": "Merci de ta patience — {coach} n'a pas encore pu rejoindre la conversation et répondra ici {when}.",
        "de": "Danke fürs Warten – {coach} konnte noch nicht dazukommen und antwortet hier {when}.",
        "pt": "Obrigado por esperar — {coach} ainda não conseguiu entrar e vai responder aqui {when}.",
    },
    # The holding message when the coach took the conversation and has not replied within the SLA: as
    # ``holding_open``.
    "holding_joined": {
        "en": "Thank you for waiting — {coach} has been pulled away for a moment and will reply here {when}.",
        "es": "Gracias por esperar: {coach} ha tenido que ausentarse un momento y responderá aquí {when}.",
        "fr": "Merci de ta patience — {coach} a dû s'absenter un instant et répondra ici {when}.",
        "de": "Danke fürs Warten – {coach} wurde kurz aufgehalten und antwortet hier {when}.",
        "pt": "Obrigado por esperar — {coach} precisou se ausentar por um momento e vai responder aqui {when}.",
    },
    # The holding message's ``{when}`` while the coach is within their hours.
    "holding_soon": {
        "en": "as soon as they can",
        "es": "en cuanto pueda",
        "fr": "dès que possible",
        "de": "so schnell es geht",
        "pt": "assim que puder",
    },
    # The holding message's ``{when}`` while the coach is outside their hours: ``{back}``.
    "holding_back": {
        "en": "when they're back, {back}",
        "es": "cuando vuelva: {back}",
        "fr": "à son retour : {back}",
        "de": "nach der Rückkehr: {back}",
        "pt": "quando voltar: {back}",
    },
    # The holding message's last sentence, for a crisis handoff: ``{lines}`` (the crisis resources, as the crisis
    # reply listed them).
    "holding_crisis": {
        "en": "If you feel unsafe, please don't wait: reach out now:\n{lines}",
        "es": "Si no te sientes a salvo, no esperes: pide ayuda ahora:\n{lines}",
        "fr": "Si tu ne te sens pas en sécurité, n'attends pas : demande de l'aide maintenant :\n{lines}",
        "de": "Wenn du dich nicht sicher fühlst, warte bitte nicht: Hol dir jetzt Hilfe:\n{lines}",
        "pt": "Se você não se sentir seguro, não espere: procure ajuda agora:\n{lines}",
    },
    # The holding message's last sentence, for any other handoff.
    "holding_urgent": {
        "en": "If things feel urgent or unsafe, please contact your local emergency number or a crisis line.",
        "es": "Si es urgente o no te sientes a salvo, llama al número de emergencias local o a una línea de crisis.",
        "fr": (
            "Si c'est urgent ou si tu ne te sens pas en sécurité, appelle le numéro d'urgence local ou une ligne "
            "d'écoute."
        ),
        "de": (
            "Wenn es dringend ist oder du dich nicht sicher fühlst, ruf bitte den örtlichen Notruf oder eine "
            "Krisenhotline an."
        ),
        "pt": (
            "Se for urgente ou você não se sentir seguro, ligue para o número de emergência local ou para uma linha "
            "de apoio."
        ),
    },
    # The answer to "am I talking to a real person?" or "are you a bot?" (:func:`app.chat.turn.honesty.disclosure`):
    # ``{coach}``. It opens with what it is, not "no" or "yes": the question may ask either way.
    "disclosure": {
        "en": (
            "I'm {coach}'s AI assistant, not a person, and not {coach}. {coach} can read this conversation and "
            "can join it: ask for {coach} (or type /human) whenever you'd like to talk to them. Until then, I'm glad "
            "to keep helping — what's on your mind?"
        ),
        "es": (
            "Soy el asistente de IA de {coach}, no una persona, y no soy {coach}. {coach} puede leer esta "
            "conversación y unirse a ella: pide hablar con {coach} (o escribe /human) cuando quieras. Mientras tanto, "
            "con gusto sigo ayudándote. ¿Qué tienes en mente?"
        ),
        "fr": (
            "Je suis l'assistant IA de {coach}, pas une personne, et pas {coach}. {coach} peut lire cette "
            "conversation et la rejoindre : demande {coach} (ou tape /human) quand tu veux lui parler. En attendant, "
            "je suis là pour t'aider — qu'est-ce qui te préoccupe ?"
        ),
        "de": (
            "Ich bin der KI-Assistent von {coach}, kein Mensch und nicht {coach}. {coach} kann dieses Gespräch "
            "lesen und dazukommen: Frag nach {coach} (oder schreib /human), wann immer du mit {coach} sprechen "
            "möchtest. Bis dahin helfe ich dir gern weiter – was beschäftigt dich?"
        ),
        "pt": (
            "Sou o assistente de IA de {coach}, não uma pessoa, e não sou {coach}. {coach} pode ler esta "
            "conversa e entrar nela: peça por {coach} (ou digite /human) quando quiser falar com {coach}. Enquanto "
            "isso, fico feliz em continuar ajudando — o que está passando pela sua cabeça?"
        ),
    },
    # What replaces a generated reply that claimed to be human (:func:`app.chat.turn.honesty.correction`):
    # ``{coach}``.
    "correction": {
        "en": (
            "I need to correct that: I'm {coach}'s AI assistant, not a person. {coach} can join this conversation — "
            "ask for {coach} (or type /human) whenever you'd like to talk to them. Could you tell me again what "
            "you'd like help with?"
        ),
        "es": (
            "Tengo que corregir eso: soy el asistente de IA de {coach}, no una persona. {coach} puede unirse a esta "
            "conversación: pide hablar con {coach} (o escribe /human) cuando quieras. ¿Me cuentas otra vez en qué "
            "te puedo ayudar?"
        ),
        "fr": (
            "Je dois corriger ça : je suis l'assistant IA de {coach}, pas une personne. {coach} peut rejoindre cette "
            "conversation — demande {coach} (ou tape /human) quand tu veux lui parler. Tu peux me redire ce pour "
            "quoi tu aimerais de l'aide ?"
        ),
        "de": (
            "Das muss ich korrigieren: Ich bin der KI-Assistent von {coach}, kein Mensch. {coach} kann zu diesem "
            "Gespräch dazukommen – frag nach {coach} (oder schreib /human), wann immer du mit {coach} sprechen "
            "möchtest. Sagst du mir noch einmal, wobei ich dir helfen kann?"
        ),
        "pt": (
            "Preciso corrigir isso: sou o assistente de IA de {coach}, não uma pessoa. {coach} pode entrar nesta "
            "conversa — peça por {coach} (ou digite /human) quando quiser falar com {coach}. Pode me contar de novo "
            "no que você gostaria de ajuda?"
        ),
    },
    # The widget's presence line while the client waits for the coach: ``{coach}``, ``{minutes}`` (their SLA,
    # :func:`minutes`).
    "presence_waiting": {
        "en": "Waiting for {coach} (typically replies within {minutes})…",
        "es": "Esperando a {coach} (suele responder en {minutes})…",
        "fr": "En attente de {coach} (répond généralement en moins de {minutes})…",
        "de": "Warten auf {coach} (antwortet meist innerhalb von {minutes})…",
        "pt": "Aguardando {coach} (costuma responder em até {minutes})…",
    },
    # The same while the coach is outside their hours: ``{coach}``, ``{back}``.
    "presence_away": {
        "en": "Waiting for {coach}, who is away until {back}…",
        "es": "Esperando a {coach}, que vuelve: {back}…",
        "fr": "En attente de {coach}, de retour : {back}…",
        "de": "Warten auf {coach}, wieder da: {back}…",
        "pt": "Aguardando {coach}, que volta: {back}…",
    },
    # The presence line while the coach holds the conversation: ``{coach}``.
    "presence_joined": {
        "en": "{coach} is in the conversation",
        "es": "{coach} está en la conversación",
        "fr": "{coach} est dans la conversation",
        "de": "{coach} ist im Gespräch",
        "pt": "{coach} está na conversa",
    },
    # The presence line while the coach reviews a drafted reply: ``{coach}``.
    "presence_reviewing": {
        "en": "{coach} is reviewing the reply…",
        "es": "{coach} está revisando la respuesta…",
        "fr": "{coach} relit la réponse…",
        "de": "{coach} prüft die Antwort…",
        "pt": "{coach} está revisando a resposta…",
    },
    # Telegram (:mod:`app.channels.telegram`): the button under a reply that asks for the coach.
    "tg_human_button": {
        "en": "Talk to a human",
        "es": "Hablar con una persona",
        "fr": "Parler à un humain",
        "de": "Mit einem Menschen sprechen",
        "pt": "Falar com uma pessoa",
    },
    # Telegram: what its button press shows while the ask goes to the coach.
    "tg_asking_coach": {
        "en": "Asking your coach to join…",
        "es": "Pidiéndole a tu coach que se una…",
        "fr": "Je demande à ton coach de nous rejoindre…",
        "de": "Ich bitte deinen Coach dazuzukommen…",
        "pt": "Pedindo para o seu coach entrar…",
    },
    # Telegram: a 👍/👎 press recorded.
    "tg_feedback_thanks": {
        "en": "Thanks for the feedback!",
        "es": "¡Gracias por tu opinión!",
        "fr": "Merci pour ton retour !",
        "de": "Danke für dein Feedback!",
        "pt": "Obrigado pelo feedback!",
    },
    # Telegram: a photo, a sticker, a voice message… (nothing stored).
    "tg_non_text": {
        "en": "Thanks! I can read text messages for now — could you type it out?",
        "es": "¡Gracias! Por ahora solo puedo leer mensajes de texto: ¿me lo escribes?",
        "fr": "Merci ! Pour l'instant, je ne lis que les messages texte — tu peux me l'écrire ?",
        "de": "Danke! Ich kann bisher nur Textnachrichten lesen – kannst du es mir schreiben?",
        "pt": "Obrigado! Por enquanto só consigo ler mensagens de texto — pode escrever pra mim?",
    },
    # Telegram: ``/help``, the commands the bot offers (plain text).
    "tg_help": {
        "en": (
            "Just write to me as you would to your coach. You can also send:\n/tone – choose how I talk to you\n"
            "/forget – see what I remember about you, and delete it\n/human – ask your coach to join the chat\n"
            "/help – this list"
        ),
        "es": (
            "Escríbeme como le escribirías a tu coach. También puedes enviar:\n/tone – elige cómo te hablo\n"
            "/forget – mira lo que recuerdo de ti y bórralo\n/human – pide a tu coach que se una al chat\n"
            "/help – esta lista"
        ),
        "fr": (
            "Écris-moi comme tu écrirais à ton coach. Tu peux aussi envoyer :\n/tone – choisis comment je te parle\n"
            "/forget – vois ce dont je me souviens à ton sujet, et efface-le\n/human – demande à ton coach de "
            "rejoindre la discussion\n/help – cette liste"
        ),
        "de": (
            "Schreib mir einfach, wie du deinem Coach schreiben würdest. Du kannst auch senden:\n/tone – wähle, wie "
            "ich mit dir spreche\n/forget – sieh, was ich mir über dich merke, und lösche es\n/human – bitte deinen "
            "Coach dazu\n/help – diese Liste"
        ),
        "pt": (
            "É só me escrever como você escreveria para o seu coach. Você também pode enviar:\n/tone – escolha como "
            "eu falo com você\n/forget – veja o que eu lembro sobre você e apague\n/human – peça ao seu coach para "
            "entrar na conversa\n/help – esta lista"
        ),
    },
    # Telegram: a stranger writes to a bot closed to new clients.
    "tg_ask_for_invite": {
        "en": "Hello! To talk with your coach here, please ask them for an invite link.",
        "es": "¡Hola! Para hablar aquí con tu coach, pídele un enlace de invitación.",
        "fr": "Bonjour ! Pour parler ici avec ton coach, demande-lui un lien d'invitation.",
        "de": "Hallo! Um hier mit deinem Coach zu sprechen, bitte ihn oder sie um einen Einladungslink.",
        "pt": "Olá! Para falar com o seu coach aqui, peça a ele um link de convite.",
    },
    # Telegram: a stranger writes while open enrolment is at its limit (TELEGRAM_ENROLLMENT_LIMIT).
    "tg_enrollment_full": {
        "en": (
            "Hello! Your coach's assistant is not taking new clients here right now. Please try again later, or ask "
            "your coach for an invite link."
        ),
        "es": (
            "¡Hola! El asistente de tu coach no está aceptando clientes nuevos aquí ahora mismo. Vuelve a intentarlo "
            "más tarde o pídele a tu coach un enlace de invitación."
        ),
        "fr": (
            "Bonjour ! L'assistant de ton coach n'accepte pas de nouveaux clients ici pour le moment. Réessaie plus "
            "tard, ou demande un lien d'invitation à ton coach."
        ),
        "de": (
            "Hallo! Der Assistent deines Coachs nimmt hier gerade keine neuen Klienten an. Versuch es später noch "
            "einmal oder bitte deinen Coach um einen Einladungslink."
        ),
        "pt": (
            "Olá! O assistente do seu coach não está aceitando novos clientes aqui agora. Tente de novo mais tarde ou "
            "peça um link de convite ao seu coach."
        ),
    },
    # Telegram: an invite link used before or expired.
    "tg_bad_invite": {
        "en": (
            "This invite link is not valid any more (each link works once, for 7 days). Please ask your coach for a "
            "new one."
        ),
        "es": (
            "Este enlace de invitación ya no es válido (cada enlace funciona una vez, durante 7 días). Pídele uno "
            "nuevo a tu coach."
        ),
        "fr": (
            "Ce lien d'invitation n'est plus valable (chaque lien fonctionne une fois, pendant 7 jours). Demande-en un "
            "nouveau à ton coach."
        ),
        "de": (
            "Dieser Einladungslink ist nicht mehr gültig (jeder Link funktioniert einmal, 7 Tage lang). Bitte deinen "
            "Coach um einen neuen."
        ),
        "pt": (
            "Este link de convite não é mais válido (cada link funciona uma vez, por 7 dias). Peça um novo ao seu "
            "coach."
        ),
    },
    # Telegram: a reply kept for the coach's approval (draft mode): ``{coach}``.
    "tg_reviewing": {
        "en": "{coach} is reviewing the reply; it comes here once approved.",
        "es": "{coach} está revisando la respuesta; llegará aquí en cuanto la apruebe.",
        "fr": "{coach} relit la réponse ; elle arrivera ici une fois approuvée.",
        "de": "{coach} prüft die Antwort; sie kommt hierher, sobald sie freigegeben ist.",
        "pt": "{coach} está revisando a resposta; ela chega aqui assim que for aprovada.",
    },
    # Telegram ``/forget``: the list's first line.
    "tg_forget_intro": {
        "en": "Here is what I remember about you. Tap 🗑 under an item to make me forget it.",
        "es": "Esto es lo que recuerdo de ti. Toca 🗑 con el número de un elemento para que lo olvide.",
        "fr": "Voici ce dont je me souviens à ton sujet. Touche 🗑 avec le numéro d'un élément pour que je l'oublie.",
        "de": "Das weiß ich über dich. Tippe auf 🗑 mit der Nummer eines Eintrags, damit ich ihn vergesse.",
        "pt": "Isto é o que eu lembro sobre você. Toque em 🗑 com o número de um item para eu esquecê-lo.",
    },
    # Telegram ``/forget``: nothing to list.
    "tg_nothing_remembered": {
        "en": "I don't remember anything about you yet.",
        "es": "Todavía no recuerdo nada de ti.",
        "fr": "Je ne me souviens encore de rien à ton sujet.",
        "de": "Ich weiß noch nichts über dich.",
        "pt": "Ainda não lembro de nada sobre você.",
    },
    # Telegram ``/forget``: a session summary in the list: ``{day}`` (YYYY-MM-DD), ``{summary}``.
    "tg_forget_session": {
        "en": "Our session of {day}: {summary}",
        "es": "Nuestra sesión del {day}: {summary}",
        "fr": "Notre séance du {day} : {summary}",
        "de": "Unsere Sitzung vom {day}: {summary}",
        "pt": "Nossa sessão de {day}: {summary}",
    },
    # Telegram ``/forget``: an item's button pressed.
    "tg_forgotten": {
        "en": "Forgotten.",
        "es": "Olvidado.",
        "fr": "C'est oublié.",
        "de": "Vergessen.",
        "pt": "Esquecido.",
    },
    # Telegram ``/forget``: a button of an item forgotten before.
    "tg_already_forgotten": {
        "en": "That was already forgotten.",
        "es": "Eso ya estaba olvidado.",
        "fr": "C'était déjà oublié.",
        "de": "Das war schon vergessen.",
        "pt": "Isso já tinha sido esquecido.",
    },
    # Telegram: the chat line of a live event (:func:`app.channels.telegram.render.notice_text`): ``{coach}``.
    "tg_joined": {
        "en": "{coach} joined the conversation.",
        "es": "{coach} se unió a la conversación.",
        "fr": "{coach} a rejoint la conversation.",
        "de": "{coach} ist dem Gespräch beigetreten.",
        "pt": "{coach} entrou na conversa.",
    },
    "tg_left": {
        "en": "{coach} left the conversation; the AI assistant answers again.",
        "es": "{coach} dejó la conversación; el asistente de IA vuelve a responder.",
        "fr": "{coach} a quitté la conversation ; l'assistant IA répond de nouveau.",
        "de": "{coach} hat das Gespräch verlassen; der KI-Assistent antwortet wieder.",
        "pt": "{coach} saiu da conversa; o assistente de IA volta a responder.",
    },
    "tg_dismissed": {
        "en": "{coach} asked the AI assistant to carry on; it answers again.",
        "es": "{coach} pidió al asistente de IA que siga; vuelve a responder.",
        "fr": "{coach} a demandé à l'assistant IA de continuer ; il répond de nouveau.",
        "de": "{coach} hat den KI-Assistenten gebeten weiterzumachen; er antwortet wieder.",
        "pt": "{coach} pediu ao assistente de IA que continue; ele volta a responder.",
    },
    "tg_draft_discarded": {
        "en": "{coach} will not send the prepared reply to your last message. Write again any time.",
        "es": "{coach} no enviará la respuesta preparada a tu último mensaje. Escribe de nuevo cuando quieras.",
        "fr": "{coach} n'enverra pas la réponse préparée à ton dernier message. Écris de nouveau quand tu veux.",
        "de": (
            "{coach} schickt die vorbereitete Antwort auf deine letzte Nachricht nicht. Schreib gern jederzeit wieder."
        ),
        "pt": "{coach} não vai enviar a resposta preparada para a sua última mensagem. Escreva de novo quando quiser.",
    },
    # Telegram: the coach, in those lines, when the event names no one.
    "tg_your_coach": {"en": "Your coach", "es": "Tu coach", "fr": "Ton coach", "de": "Dein Coach", "pt": "Seu coach"},
    # Telegram ``/tone`` (:mod:`app.channels.telegram.tone`): the message's title.
    "tg_tone_title": {
        "en": "How the assistant talks to you",
        "es": "Cómo te habla el asistente",
        "fr": "Comment l'assistant te parle",
        "de": "Wie der Assistent mit dir spricht",
        "pt": "Como o assistente fala com você",
    },
    # ``/tone``: the intensity in use: ``{value}`` (its number and name), ``{whose}`` (``tg_tone_yours`` or
    # ``tg_tone_coachs``), ``{low}``, ``{high}`` (the coach's range).
    "tg_tone_intensity": {
        "en": "Intensity: {value} ({whose}; your coach allows {low} to {high})",
        "es": "Intensidad: {value} ({whose}; tu coach permite de {low} a {high})",
        "fr": "Intensité : {value} ({whose} ; ton coach autorise de {low} à {high})",
        "de": "Intensität: {value} ({whose}; dein Coach erlaubt {low} bis {high})",
        "pt": "Intensidade: {value} ({whose}; seu coach permite de {low} a {high})",
    },
    "tg_tone_yours": {
        "en": "your choice",
        "es": "tu elección",
        "fr": "ton choix",
        "de": "deine Wahl",
        "pt": "sua escolha",
    },
    "tg_tone_coachs": {
        "en": "your coach's default",
        "es": "lo predeterminado por tu coach",
        "fr": "le réglage par défaut de ton coach",
        "de": "Standard deines Coachs",
        "pt": "o padrão do seu coach",
    },
    # ``/tone``: the style in force: ``{style}`` (its label), ``{given}``, ``{until}`` (YYYY-MM-DD).
    "tg_tone_style": {
        "en": "Style: {style} (agreed on {given}, until {until})",
        "es": "Estilo: {style} (aceptado el {given}, hasta el {until})",
        "fr": "Style : {style} (accepté le {given}, jusqu'au {until})",
        "de": "Stil: {style} (zugestimmt am {given}, bis {until})",
        "pt": "Estilo: {style} (aceito em {given}, até {until})",
    },
    # ``/tone``: no style in force: ``{style}`` (``tg_tone_default``).
    "tg_tone_no_style": {
        "en": "Style: {style}",
        "es": "Estilo: {style}",
        "fr": "Style : {style}",
        "de": "Stil: {style}",
        "pt": "Estilo: {style}",
    },
    "tg_tone_default": {"en": "Default", "es": "Predeterminado", "fr": "Par défaut", "de": "Standard", "pt": "Padrão"},
    # ``/tone``: the client's chosen style is not in force (its agreement lapsed or the coach reworded it).
    "tg_tone_lapsed": {
        "en": "Your agreement to your chosen style has lapsed or its wording changed: agree again to use it.",
        "es": "Tu aceptación del estilo elegido caducó o su texto cambió: acéptalo de nuevo para usarlo.",
        "fr": "Ton accord pour le style choisi a expiré ou son texte a changé : donne-le à nouveau pour l'utiliser.",
        "de": (
            "Deine Zustimmung zum gewählten Stil ist abgelaufen oder sein Text hat sich geändert: Stimm erneut zu, "
            "um ihn zu nutzen."
        ),
        "pt": "Sua concordância com o estilo escolhido expirou ou o texto mudou: concorde de novo para usá-lo.",
    },
    # ``/tone``: the promise of the widget's tone page (:func:`app.chat.tone.gentle_reason`).
    "tg_tone_gentle": {
        "en": "When you seem to be having a hard time, the assistant is always gentle, whatever you choose here.",
        "es": "Cuando parezca que lo estás pasando mal, el asistente siempre será suave, elijas lo que elijas aquí.",
        "fr": (
            "Quand tu sembles traverser un moment difficile, l'assistant reste toujours doux, quoi que tu choisisses "
            "ici."
        ),
        "de": "Wenn es dir gerade schwer zu gehen scheint, ist der Assistent immer sanft, egal was du hier wählst.",
        "pt": (
            "Quando parecer que você está passando por um momento difícil, o assistente é sempre gentil, seja qual "
            "for a sua escolha aqui."
        ),
    },
    "tg_tone_tap": {
        "en": "Tap an intensity or a style.",
        "es": "Toca una intensidad o un estilo.",
        "fr": "Touche une intensité ou un style.",
        "de": "Tippe auf eine Intensität oder einen Stil.",
        "pt": "Toque em uma intensidade ou um estilo.",
    },
    # ``/tone``: the buttons of a style's consent screen and of the message.
    "tg_tone_agree": {
        "en": "I agree: use this style",
        "es": "Acepto: usar este estilo",
        "fr": "J'accepte : utiliser ce style",
        "de": "Ich stimme zu: diesen Stil nutzen",
        "pt": "Concordo: usar este estilo",
    },
    "tg_tone_agree_again": {
        "en": "Yes, I'm sure: confirm again",
        "es": "Sí, estoy seguro: confirmar otra vez",
        "fr": "Oui, j'en suis sûr : confirmer à nouveau",
        "de": "Ja, ich bin sicher: erneut bestätigen",
        "pt": "Sim, tenho certeza: confirmar de novo",
    },
    "tg_tone_cancel": {"en": "Cancel", "es": "Cancelar", "fr": "Annuler", "de": "Abbrechen", "pt": "Cancelar"},
    "tg_tone_withdraw": {
        "en": "Back to the default style",
        "es": "Volver al estilo predeterminado",
        "fr": "Revenir au style par défaut",
        "de": "Zurück zum Standardstil",
        "pt": "Voltar ao estilo padrão",
    },
    # ``/tone``: the consent screen of the coach's most intense style, before and after the first confirmation.
    "tg_tone_twice": {
        "en": "This is the most intense style: you will be asked to confirm twice.",
        "es": "Este es el estilo más intenso: tendrás que confirmarlo dos veces.",
        "fr": "C'est le style le plus intense : il te faudra confirmer deux fois.",
        "de": "Das ist der intensivste Stil: Du wirst zweimal um Bestätigung gebeten.",
        "pt": "Este é o estilo mais intenso: você vai precisar confirmar duas vezes.",
    },
    "tg_tone_second": {
        "en": "This is the most intense style: please confirm a second time.",
        "es": "Este es el estilo más intenso: confírmalo por segunda vez.",
        "fr": "C'est le style le plus intense : confirme une seconde fois.",
        "de": "Das ist der intensivste Stil: Bitte bestätige ein zweites Mal.",
        "pt": "Este é o estilo mais intenso: confirme uma segunda vez.",
    },
    # ``/tone``: what a press answers: the first of two confirmations, an intensity chosen (``{intensity}``,
    # ``{label}``: its name), a style agreed to (``{style}``, ``{until}``: YYYY-MM-DD).
    "tg_tone_confirm_again": {
        "en": "Please confirm a second time.",
        "es": "Confírmalo por segunda vez.",
        "fr": "Confirme une seconde fois.",
        "de": "Bitte bestätige ein zweites Mal.",
        "pt": "Confirme uma segunda vez.",
    },
    "tg_tone_chosen": {
        "en": "Intensity {intensity} — {label}.",
        "es": "Intensidad {intensity}: {label}.",
        "fr": "Intensité {intensity} — {label}.",
        "de": "Intensität {intensity} – {label}.",
        "pt": "Intensidade {intensity} — {label}.",
    },
    "tg_tone_agreed": {
        "en": "Style: {style}, until {until}.",
        "es": "Estilo: {style}, hasta el {until}.",
        "fr": "Style : {style}, jusqu'au {until}.",
        "de": "Stil: {style}, bis {until}.",
        "pt": "Estilo: {style}, até {until}.",
    },
    # The name of each tone intensity (:data:`app.accounts.tone.INTENSITY_NAMES` in English).
    "tone_intensity_1": {
        "en": "ultra gentle",
        "es": "ultrasuave",
        "fr": "ultra doux",
        "de": "ultrasanft",
        "pt": "ultrassuave",
    },
    "tone_intensity_2": {"en": "gentle", "es": "suave", "fr": "doux", "de": "sanft", "pt": "suave"},
    "tone_intensity_3": {
        "en": "balanced",
        "es": "equilibrado",
        "fr": "équilibré",
        "de": "ausgewogen",
        "pt": "equilibrado",
    },
    "tone_intensity_4": {"en": "direct", "es": "directo", "fr": "direct", "de": "direkt", "pt": "direto"},
    "tone_intensity_5": {
        "en": "very direct",
        "es": "muy directo",
        "fr": "très direct",
        "de": "sehr direkt",
        "pt": "muito direto",
    },
    "tone_intensity_6": {
        "en": "blunt",
        "es": "sin rodeos",
        "fr": "sans détour",
        "de": "unverblümt",
        "pt": "sem rodeios",
    },
    # The widget's chat page (``templates/widget/chat.html``, ``static/chat.js``): its title: ``{coach}``.
    "widget_title": {
        "en": "Chat with {coach}",
        "es": "Chat con {coach}",
        "fr": "Discussion avec {coach}",
        "de": "Chat mit {coach}",
        "pt": "Chat com {coach}",
    },
    # How the page names each sender (the assistant also in its header).
    "widget_ai": {
        "en": "AI assistant",
        "es": "Asistente de IA",
        "fr": "Assistant IA",
        "de": "KI-Assistent",
        "pt": "Assistente de IA",
    },
    "widget_you": {
        "en": "You",
        "es": "Tú",
        "fr": "Toi",
        "de": "Du",
        "pt": "Você",
    },
    "widget_coach": {
        "en": "Coach",
        "es": "Coach",
        "fr": "Coach",
        "de": "Coach",
        "pt": "Coach",
    },
    # The header's links to the tone page and the memory page, with their titles.
    "widget_tone": {
        "en": "Tone",
        "es": "Tono",
        "fr": "Ton",
        "de": "Ton",
        "pt": "Tom",
    },
    "widget_tone_title": {
        "en": "How the assistant talks to me",
        "es": "Cómo me habla el asistente",
        "fr": "Comment l'assistant me parle",
        "de": "Wie der Assistent mit mir spricht",
        "pt": "Como o assistente fala comigo",
    },
    "widget_memory": {
        "en": "What it remembers",
        "es": "Lo que recuerda",
        "fr": "Ce dont il se souvient",
        "de": "Was er sich merkt",
        "pt": "O que ele lembra",
    },
    "widget_memory_title": {
        "en": "What my coach's assistant remembers",
        "es": "Lo que recuerda el asistente de mi coach",
        "fr": "Ce dont l'assistant de mon coach se souvient",
        "de": "Was sich der Assistent meines Coachs merkt",
        "pt": "O que o assistente do meu coach lembra",
    },
    # The close button (the page's, framed, and the launcher's of ``static/widget.js``).
    "widget_close": {
        "en": "Close chat",
        "es": "Cerrar el chat",
        "fr": "Fermer la discussion",
        "de": "Chat schließen",
        "pt": "Fechar o chat",
    },
    # The AI disclosure above the conversation (its English text is the version the client accepts:
    # :data:`app.accounts.disclosure.AI_DISCLOSURE_TEXT`): ``{coach}``.
    "widget_disclosure": {
        "en": AI_DISCLOSURE_TEXT,
        "es": "Estás chateando con el asistente de IA de {coach}. {coach} puede unirse a la conversación.",
        "fr": "Tu discutes avec l'assistant IA de {coach}. {coach} peut rejoindre la conversation.",
        "de": "Du chattest mit dem KI-Assistenten von {coach}. {coach} kann dem Gespräch beitreten.",
        "pt": "Você está conversando com o assistente de IA de {coach}. {coach} pode entrar na conversa.",
    },
    # Accessible names of the transcript and of the suggested first questions.
    "widget_conversation": {
        "en": "Conversation",
        "es": "Conversación",
        "fr": "Conversation",
        "de": "Gespräch",
        "pt": "Conversa",
    },
    "widget_suggested": {
        "en": "Suggested questions",
        "es": "Preguntas sugeridas",
        "fr": "Questions suggérées",
        "de": "Vorgeschlagene Fragen",
        "pt": "Perguntas sugeridas",
    },
    # The button above the transcript that loads the page before, and after a failed try.
    "widget_earlier": {
        "en": "Earlier messages",
        "es": "Mensajes anteriores",
        "fr": "Messages précédents",
        "de": "Frühere Nachrichten",
        "pt": "Mensagens anteriores",
    },
    "widget_earlier_retry": {
        "en": "Earlier messages (try again)",
        "es": "Mensajes anteriores (inténtalo de nuevo)",
        "fr": "Messages précédents (réessaie)",
        "de": "Frühere Nachrichten (erneut versuchen)",
        "pt": "Mensagens anteriores (tente de novo)",
    },
    # The composer: the input's label (``{coach}``) and placeholder, the send button.
    "widget_message_to": {
        "en": "Message to {coach}'s assistant",
        "es": "Mensaje para el asistente de {coach}",
        "fr": "Message pour l'assistant de {coach}",
        "de": "Nachricht an den Assistenten von {coach}",
        "pt": "Mensagem para o assistente de {coach}",
    },
    "widget_placeholder": {
        "en": "Type your message…",
        "es": "Escribe tu mensaje…",
        "fr": "Écris ton message…",
        "de": "Schreib deine Nachricht…",
        "pt": "Digite sua mensagem…",
    },
    "widget_send": {
        "en": "Send",
        "es": "Enviar",
        "fr": "Envoyer",
        "de": "Senden",
        "pt": "Enviar",
    },
    # The session bar: ending the session, and asking for the coach (the button, its title: ``{coach}``, and the
    # message it sends, which :func:`app.handoff.signals.asks_for_human` reads as the ask in its language).
    "widget_end_session": {
        "en": "End session",
        "es": "Terminar la sesión",
        "fr": "Terminer la séance",
        "de": "Sitzung beenden",
        "pt": "Encerrar a sessão",
    },
    "widget_end_session_hint": {
        "en": "— the assistant sums it up for next time",
        "es": "— el asistente la resume para la próxima vez",
        "fr": "— l'assistant la résume pour la prochaine fois",
        "de": "— der Assistent fasst sie fürs nächste Mal zusammen",
        "pt": "— o assistente faz um resumo para a próxima vez",
    },
    "widget_human": {
        "en": "Talk to a human",
        "es": "Hablar con una persona",
        "fr": "Parler à un humain",
        "de": "Mit einem Menschen sprechen",
        "pt": "Falar com uma pessoa",
    },
    "widget_human_title": {
        "en": "Ask {coach} to join this conversation",
        "es": "Pedir a {coach} que se una a esta conversación",
        "fr": "Demander à {coach} de rejoindre cette conversation",
        "de": "{coach} bitten, zu diesem Gespräch dazuzukommen",
        "pt": "Pedir para {coach} entrar nesta conversa",
    },
    "widget_human_request": {
        "en": "I'd like to talk to my coach, please.",
        "es": "Me gustaría hablar con mi coach, por favor.",
        "fr": "J'aimerais parler à mon coach, s'il te plaît.",
        "de": "Ich möchte bitte mit meinem Coach sprechen.",
        "pt": "Eu gostaria de falar com o meu coach, por favor.",
    },
    # While a reply is on its way: the status line, the typing bubble's name, its note after a few seconds.
    "widget_thinking": {
        "en": "Thinking…",
        "es": "Pensando…",
        "fr": "Réflexion…",
        "de": "Denkt nach…",
        "pt": "Pensando…",
    },
    "widget_writing": {
        "en": "The assistant is writing",
        "es": "El asistente está escribiendo",
        "fr": "L'assistant écrit",
        "de": "Der Assistent schreibt",
        "pt": "O assistente está escrevendo",
    },
    "widget_still_working": {
        "en": "Still working on your answer…",
        "es": "Sigo trabajando en tu respuesta…",
        "fr": "Je travaille encore sur ta réponse…",
        "de": "Ich arbeite noch an deiner Antwort…",
        "pt": "Ainda estou trabalhando na sua resposta…",
    },
    # The feedback under a reply: the thumbs, the rating, the comment, the thanks, a failed save.
    "widget_helpful": {
        "en": "Helpful",
        "es": "Útil",
        "fr": "Utile",
        "de": "Hilfreich",
        "pt": "Útil",
    },
    "widget_not_helpful": {
        "en": "Not helpful",
        "es": "No fue útil",
        "fr": "Pas utile",
        "de": "Nicht hilfreich",
        "pt": "Não ajudou",
    },
    "widget_rating": {
        "en": "Rating from 1 to 5",
        "es": "Valoración del 1 al 5",
        "fr": "Note de 1 à 5",
        "de": "Bewertung von 1 bis 5",
        "pt": "Nota de 1 a 5",
    },
    "widget_rate": {
        "en": "Rate 1–5",
        "es": "Valora 1–5",
        "fr": "Note 1–5",
        "de": "Bewerte 1–5",
        "pt": "Nota 1–5",
    },
    "widget_comment": {
        "en": "Anything to add? (optional)",
        "es": "¿Algo que añadir? (opcional)",
        "fr": "Quelque chose à ajouter ? (facultatif)",
        "de": "Noch etwas hinzuzufügen? (optional)",
        "pt": "Algo a acrescentar? (opcional)",
    },
    "widget_thanks": {
        "en": "Thanks!",
        "es": "¡Gracias!",
        "fr": "Merci !",
        "de": "Danke!",
        "pt": "Obrigado!",
    },
    "widget_thanks_missing": {
        "en": "Thanks — what was missing?",
        "es": "Gracias. ¿Qué faltó?",
        "fr": "Merci — qu'est-ce qui manquait ?",
        "de": "Danke – was hat gefehlt?",
        "pt": "Obrigado — o que faltou?",
    },
    "widget_rating_cleared": {
        "en": "Changed. Your earlier rating and comment were cleared: rate it again if you like.",
        "es": "Cambiado. Tu valoración y tu comentario anteriores se borraron: vuelve a valorarla si quieres.",
        "fr": "C'est changé. Ta note et ton commentaire précédents ont été effacés : note-la à nouveau si tu veux.",
        "de": "Geändert. Deine frühere Bewertung und dein Kommentar wurden gelöscht: bewerte sie gern noch einmal.",
        "pt": "Alterado. Sua nota e seu comentário anteriores foram apagados: avalie de novo se quiser.",
    },
    "widget_feedback_saved": {
        "en": "Thanks for your feedback.",
        "es": "Gracias por tu opinión.",
        "fr": "Merci pour ton retour.",
        "de": "Danke für dein Feedback.",
        "pt": "Obrigado pelo feedback.",
    },
    "widget_feedback_failed": {
        "en": "Could not save your feedback; please try again.",
        "es": "No se pudo guardar tu opinión; inténtalo de nuevo.",
        "fr": "Impossible d'enregistrer ton retour ; réessaie.",
        "de": "Dein Feedback konnte nicht gespeichert werden; bitte versuch es noch einmal.",
        "pt": "Não foi possível salvar seu feedback; tente de novo.",
    },
    # A citation's passages loading, or failing to.
    "widget_loading_passage": {
        "en": "Loading the passage…",
        "es": "Cargando el pasaje…",
        "fr": "Chargement du passage…",
        "de": "Die Textstelle wird geladen…",
        "pt": "Carregando o trecho…",
    },
    "widget_loading_passages": {
        "en": "Loading the passages…",
        "es": "Cargando los pasajes…",
        "fr": "Chargement des passages…",
        "de": "Die Textstellen werden geladen…",
        "pt": "Carregando os trechos…",
    },
    "widget_passage_failed": {
        "en": "Could not open the passage; please try again.",
        "es": "No se pudo abrir el pasaje; inténtalo de nuevo.",
        "fr": "Impossible d'ouvrir le passage ; réessaie.",
        "de": "Die Textstelle konnte nicht geöffnet werden; bitte versuch es noch einmal.",
        "pt": "Não foi possível abrir o trecho; tente de novo.",
    },
    # The connection: dropped (reconnecting), or the session expired.
    "widget_reconnecting": {
        "en": "Reconnecting…",
        "es": "Reconectando…",
        "fr": "Reconnexion…",
        "de": "Verbindung wird wiederhergestellt…",
        "pt": "Reconectando…",
    },
    "widget_expired": {
        "en": "This chat has expired. Please open the link from your coach again.",
        "es": "Este chat ha caducado. Abre de nuevo el enlace de tu coach.",
        "fr": "Cette discussion a expiré. Ouvre à nouveau le lien de ton coach.",
        "de": "Dieser Chat ist abgelaufen. Öffne bitte den Link deines Coachs noch einmal.",
        "pt": "Este chat expirou. Abra de novo o link do seu coach.",
    },
    # The transcript's lines when the coach joins or hands back: ``{coach}``.
    "widget_joined": {
        "en": "{coach} joined the conversation",
        "es": "{coach} se unió a la conversación",
        "fr": "{coach} a rejoint la conversation",
        "de": "{coach} ist dem Gespräch beigetreten",
        "pt": "{coach} entrou na conversa",
    },
    "widget_dismissed": {
        "en": "{coach} asked the AI assistant to carry on",
        "es": "{coach} pidió al asistente de IA que siga",
        "fr": "{coach} a demandé à l'assistant IA de continuer",
        "de": "{coach} hat den KI-Assistenten gebeten weiterzumachen",
        "pt": "{coach} pediu ao assistente de IA que continue",
    },
    "widget_left": {
        "en": "{coach} handed the conversation back to the AI assistant",
        "es": "{coach} devolvió la conversación al asistente de IA",
        "fr": "{coach} a rendu la conversation à l'assistant IA",
        "de": "{coach} hat das Gespräch an den KI-Assistenten zurückgegeben",
        "pt": "{coach} devolveu a conversa ao assistente de IA",
    },
    # The message's length near and over the limit: ``{used}``, ``{max}`` and ``{over}`` (characters).
    "widget_count": {
        "en": "{used} / {max} characters",
        "es": "{used} / {max} caracteres",
        "fr": "{used} / {max} caractères",
        "de": "{used} / {max} Zeichen",
        "pt": "{used} / {max} caracteres",
    },
    "widget_too_long": {
        "en": "Too long to send: {used} / {max} characters. Shorten it by {over} or send it in parts.",
        "es": "Demasiado largo para enviarlo: {used} / {max} caracteres. Acórtalo en {over} o envíalo por partes.",
        "fr": (
            "Trop long pour être envoyé : {used} / {max} caractères. Raccourcis-le de {over} ou envoie-le en "
            "plusieurs parties."
        ),
        "de": "Zu lang zum Senden: {used} / {max} Zeichen. Kürze um {over} oder schick es in Teilen.",
        "pt": "Longo demais para enviar: {used} / {max} caracteres. Encurte em {over} ou envie em partes.",
    },
    # Ending the session: its outcome (``{memory}``: the memory link's text; ``{coach}``).
    "widget_no_session_yet": {
        "en": "No session to end yet.",
        "es": "Todavía no hay ninguna sesión que terminar.",
        "fr": "Aucune séance à terminer pour l'instant.",
        "de": "Noch keine Sitzung zum Beenden.",
        "pt": "Ainda não há sessão para encerrar.",
    },
    "widget_no_session": {
        "en": "No session in progress.",
        "es": "No hay ninguna sesión en curso.",
        "fr": "Aucune séance en cours.",
        "de": "Keine Sitzung im Gang.",
        "pt": "Nenhuma sessão em andamento.",
    },
    "widget_end_failed": {
        "en": "Could not end the session; check your connection.",
        "es": "No se pudo terminar la sesión; revisa tu conexión.",
        "fr": "Impossible de terminer la séance ; vérifie ta connexion.",
        "de": "Die Sitzung konnte nicht beendet werden; prüfe deine Verbindung.",
        "pt": "Não foi possível encerrar a sessão; verifique sua conexão.",
    },
    "widget_summary_pending": {
        "en": "Session ended. Summary pending…",
        "es": "Sesión terminada. Resumen en camino…",
        "fr": "Séance terminée. Résumé en cours…",
        "de": "Sitzung beendet. Zusammenfassung folgt…",
        "pt": "Sessão encerrada. Resumo a caminho…",
    },
    "widget_summary_ready": {
        "en": "Session ended. Summary ready: see “{memory}”.",
        "es": "Sesión terminada. Resumen listo: mira «{memory}».",
        "fr": "Séance terminée. Résumé prêt : vois « {memory} ».",
        "de": "Sitzung beendet. Zusammenfassung fertig: siehe „{memory}“.",
        "pt": "Sessão encerrada. Resumo pronto: veja “{memory}”.",
    },
    "widget_summary_failed": {
        "en": "Session ended. The summary could not be made ({coach} can see why).",
        "es": "Sesión terminada. No se pudo hacer el resumen ({coach} puede ver por qué).",
        "fr": "Séance terminée. Le résumé n'a pas pu être fait ({coach} peut voir pourquoi).",
        "de": "Sitzung beendet. Die Zusammenfassung konnte nicht erstellt werden ({coach} sieht, warum).",
        "pt": "Sessão encerrada. Não foi possível fazer o resumo ({coach} pode ver o motivo).",
    },
    # The launcher on the coach's site (``static/widget.js``, told by the framed page): its label, the count of
    # replies that came while closed (``{count}``), the frame's title.
    "widget_launcher": {
        "en": "Chat with your coach",
        "es": "Habla con tu coach",
        "fr": "Discute avec ton coach",
        "de": "Chatte mit deinem Coach",
        "pt": "Converse com seu coach",
    },
    "widget_unread": {
        "en": "{count} unread",
        "es": "{count} sin leer",
        "fr": "{count} non lu(s)",
        "de": "{count} ungelesen",
        "pt": "{count} não lida(s)",
    },
    "widget_frame": {
        "en": "Coaching chat",
        "es": "Chat de coaching",
        "fr": "Discussion de coaching",
        "de": "Coaching-Chat",
        "pt": "Chat de coaching",
    },
    # A refusal the client reads (:func:`refusal`: a ``DomainError``'s ``code``; the widget's scripts map an error
    # event's or an API error's ``code`` to these, given as ``refused_<code>``): too many requests
    # (``{retry_after}``: seconds), an empty message, one over ``{max}`` characters, one holding a NUL character,
    # an answer that failed (a job answers it later, or it could not even be queued).
    "refused_rate_limited": {
        "en": "Too many requests: try again in {retry_after} s.",
        "es": "Demasiadas solicitudes: inténtalo de nuevo en {retry_after} s.",
        "fr": "Trop de demandes : réessaie dans {retry_after} s.",
        "de": "Zu viele Anfragen: Versuch es in {retry_after} s noch einmal.",
        "pt": "Solicitações demais: tente de novo em {retry_after} s.",
    },
    "refused_empty": {
        "en": "The message is empty.",
        "es": "El mensaje está vacío.",
        "fr": "Le message est vide.",
        "de": "Die Nachricht ist leer.",
        "pt": "A mensagem está vazia.",
    },
    "refused_too_long": {
        "en": "The message is longer than {max} characters.",
        "es": "El mensaje tiene más de {max} caracteres.",
        "fr": "Le message dépasse {max} caractères.",
        "de": "Die Nachricht ist länger als {max} Zeichen.",
        "pt": "A mensagem tem mais de {max} caracteres.",
    },
    "refused_nul": {
        "en": "The message contains a NUL character (U+0000), which cannot be sent: remove it and try again.",
        "es": "El mensaje contiene un carácter NUL (U+0000), que no se puede enviar: quítalo e inténtalo de nuevo.",
        "fr": "Le message contient un caractère NUL (U+0000), qui ne peut pas être envoyé : retire-le et réessaie.",
        "de": (
            "Die Nachricht enthält ein NUL-Zeichen (U+0000), das sich nicht senden lässt: Entferne es und versuch "
            "es noch einmal."
        ),
        "pt": "A mensagem contém um caractere NUL (U+0000), que não pode ser enviado: remova-o e tente de novo.",
    },
    # The reply when the model failed (an error, a timeout, a reply it did not finish): ``app.chat.turn.generate``.
    "turn_apology": {
        "en": (
            "I'm sorry — I couldn't put together an answer just now. Your message is saved and your coach can "
            "see it. Please try again in a moment."
        ),
        "es": (
            "Lo siento, no he podido preparar una respuesta ahora mismo. Tu mensaje está guardado y tu coach puede "
            "verlo. Vuelve a intentarlo en un momento."
        ),
        "fr": (
            "Désolé, je n'ai pas pu préparer de réponse pour l'instant. Ton message est enregistré et ton coach "
            "peut le voir. Réessaie dans un instant."
        ),
        "de": (
            "Entschuldige, ich konnte gerade keine Antwort formulieren. Deine Nachricht ist gespeichert und dein "
            "Coach kann sie sehen. Versuch es bitte gleich noch einmal."
        ),
        "pt": (
            "Desculpe, não consegui preparar uma resposta agora. Sua mensagem está salva e seu coach pode vê-la. "
            "Tente de novo daqui a pouco."
        ),
    },
    "refused_answer_later": {
        "en": "Could not answer this message yet; it is saved and will be answered shortly.",
        "es": "Todavía no se pudo responder a este mensaje; está guardado y se responderá en breve.",
        "fr": "Impossible de répondre à ce message pour l'instant ; il est enregistré et recevra bientôt une réponse.",
        "de": (
            "Auf diese Nachricht konnte noch nicht geantwortet werden; sie ist gespeichert und wird bald beantwortet."
        ),
        "pt": "Ainda não foi possível responder a esta mensagem; ela está salva e será respondida em breve.",
    },
    "refused_not_answered": {
        "en": "Could not answer this message; it is saved.",
        "es": "No se pudo responder a este mensaje; está guardado.",
        "fr": "Impossible de répondre à ce message ; il est enregistré.",
        "de": "Auf diese Nachricht konnte nicht geantwortet werden; sie ist gespeichert.",
        "pt": "Não foi possível responder a esta mensagem; ela está salva.",
    },
    # A 👍/👎 on a reply that is not the client's (any more): in Telegram, a button under a reply the chat still
    # shows from before the client was erased and the chat enrolled again, or bound to another client.
    "refused_message_gone": {
        "en": "This message no longer exists.",
        "es": "Este mensaje ya no existe.",
        "fr": "Ce message n'existe plus.",
        "de": "Diese Nachricht gibt es nicht mehr.",
        "pt": "Esta mensagem não existe mais.",
    },
    # A cited passage the client opens that is gone: its document was deleted or replaced since the reply, or it
    # is no passage this client was shown (:func:`app.rag.passages.cited_passage`).
    "refused_passage_gone": {
        "en": "This passage is no longer available.",
        "es": "Este pasaje ya no está disponible.",
        "fr": "Ce passage n'est plus disponible.",
        "de": "Diese Textstelle ist nicht mehr verfügbar.",
        "pt": "Este trecho não está mais disponível.",
    },
    # The tone service's refusals (:class:`app.accounts.tone.ToneService`): a style the coach no longer offers
    # (``{offered}``: the labels of the coach's styles now; ``_none``: only the default is left), an intensity
    # outside the coach's range (``{low}``, ``{high}``), a style without the client's agreement, a consent text the
    # coach reworded, a confirmation other than 1 (or 2), a second confirmation without a recent first
    # (``{minutes}``).
    "refused_tone_mode_unknown": {
        "en": "Your coach no longer offers this style: your coach's styles now are {offered}",
        "es": "Tu coach ya no ofrece este estilo: sus estilos ahora son {offered}",
        "fr": "Ton coach ne propose plus ce style : ses styles sont maintenant {offered}",
        "de": "Dein Coach bietet diesen Stil nicht mehr an: Seine Stile sind jetzt {offered}",
        "pt": "Seu coach não oferece mais este estilo: os estilos dele agora são {offered}",
    },
    "refused_tone_mode_none": {
        "en": "Your coach no longer offers this style: only the default style is left.",
        "es": "Tu coach ya no ofrece este estilo: solo queda el estilo predeterminado.",
        "fr": "Ton coach ne propose plus ce style : il ne reste que le style par défaut.",
        "de": "Dein Coach bietet diesen Stil nicht mehr an: Nur der Standardstil bleibt.",
        "pt": "Seu coach não oferece mais este estilo: só resta o estilo padrão.",
    },
    "refused_tone_intensity_range": {
        "en": "Intensity must be from {low} to {high} (what your coach allows)",
        "es": "La intensidad debe estar entre {low} y {high} (lo que permite tu coach)",
        "fr": "L'intensité doit aller de {low} à {high} (ce que ton coach autorise)",
        "de": "Die Intensität muss zwischen {low} und {high} liegen (was dein Coach erlaubt)",
        "pt": "A intensidade deve ser de {low} a {high} (o que seu coach permite)",
    },
    "refused_tone_consent_needed": {
        "en": "This style needs your agreement first.",
        "es": "Este estilo necesita primero tu aceptación.",
        "fr": "Ce style a d'abord besoin de ton accord.",
        "de": "Dieser Stil braucht zuerst deine Zustimmung.",
        "pt": "Este estilo precisa primeiro da sua concordância.",
    },
    "refused_tone_consent_changed": {
        "en": "The consent text of this style changed: read it again and agree to the new text.",
        "es": "El texto de aceptación de este estilo cambió: léelo de nuevo y acepta el texto nuevo.",
        "fr": "Le texte d'accord de ce style a changé : relis-le et accepte le nouveau texte.",
        "de": "Der Zustimmungstext dieses Stils hat sich geändert: Lies ihn noch einmal und stimm dem neuen Text zu.",
        "pt": "O texto de concordância deste estilo mudou: leia de novo e concorde com o novo texto.",
    },
    "refused_tone_confirmation": {
        "en": "This confirmation is not valid: start again.",
        "es": "Esta confirmación no es válida: empieza de nuevo.",
        "fr": "Cette confirmation n'est pas valable : recommence.",
        "de": "Diese Bestätigung ist ungültig: Fang noch einmal an.",
        "pt": "Esta confirmação não é válida: comece de novo.",
    },
    "refused_tone_confirm_first": {
        "en": "Confirm once first: the second confirmation must follow within {minutes} minutes.",
        "es": "Confirma una vez primero: la segunda confirmación debe llegar en menos de {minutes} minutos.",
        "fr": "Confirme d'abord une fois : la seconde confirmation doit suivre dans les {minutes} minutes.",
        "de": "Bestätige zuerst einmal: Die zweite Bestätigung muss innerhalb von {minutes} Minuten folgen.",
        "pt": "Confirme uma vez primeiro: a segunda confirmação deve vir em até {minutes} minutos.",
    },
    # The widget's tone page (``templates/widget/tone.html``, ``static/tone.js``; its other lines are the
    # ``tg_tone_*`` ones): its title (``{coach}``), the link back to the chat (the memory page's too), the
    # intensity's legend (``{low}``, ``{high}``), its button, the style's heading, the current style's lead, until
    # when a style is agreed (``{until}``: YYYY-MM-DD), no styles, saving and its failures.
    "tone_page_title": {
        "en": "How {coach}'s assistant talks to you",
        "es": "Cómo te habla el asistente de {coach}",
        "fr": "Comment l'assistant de {coach} te parle",
        "de": "Wie der Assistent von {coach} mit dir spricht",
        "pt": "Como o assistente de {coach} fala com você",
    },
    "tone_page_back": {
        "en": "← Back to chat",
        "es": "← Volver al chat",
        "fr": "← Retour à la discussion",
        "de": "← Zurück zum Chat",
        "pt": "← Voltar ao chat",
    },
    "tone_page_legend": {
        "en": "Intensity (your coach allows {low} to {high})",
        "es": "Intensidad (tu coach permite de {low} a {high})",
        "fr": "Intensité (ton coach autorise de {low} à {high})",
        "de": "Intensität (dein Coach erlaubt {low} bis {high})",
        "pt": "Intensidade (seu coach permite de {low} a {high})",
    },
    "tone_page_save": {
        "en": "Save intensity",
        "es": "Guardar intensidad",
        "fr": "Enregistrer l'intensité",
        "de": "Intensität speichern",
        "pt": "Salvar intensidade",
    },
    "tone_page_style": {"en": "Style", "es": "Estilo", "fr": "Style", "de": "Stil", "pt": "Estilo"},
    "tone_page_current": {
        "en": "Current style:",
        "es": "Estilo actual:",
        "fr": "Style actuel :",
        "de": "Aktueller Stil:",
        "pt": "Estilo atual:",
    },
    "tone_page_agreed_until": {
        "en": "Agreed until {until}",
        "es": "Aceptado hasta el {until}",
        "fr": "Accepté jusqu'au {until}",
        "de": "Zugestimmt bis {until}",
        "pt": "Aceito até {until}",
    },
    "tone_page_no_styles": {
        "en": "Your coach has not set up other styles.",
        "es": "Tu coach no ha configurado otros estilos.",
        "fr": "Ton coach n'a pas prévu d'autres styles.",
        "de": "Dein Coach hat keine anderen Stile eingerichtet.",
        "pt": "Seu coach não configurou outros estilos.",
    },
    "tone_page_saving": {
        "en": "Saving…",
        "es": "Guardando…",
        "fr": "Enregistrement…",
        "de": "Wird gespeichert…",
        "pt": "Salvando…",
    },
    "tone_page_failed": {
        "en": "Could not save; try again.",
        "es": "No se pudo guardar; inténtalo de nuevo.",
        "fr": "Impossible d'enregistrer ; réessaie.",
        "de": "Speichern fehlgeschlagen; versuch es noch einmal.",
        "pt": "Não foi possível salvar; tente de novo.",
    },
    "tone_page_offline": {
        "en": "Could not save; check your connection and try again.",
        "es": "No se pudo guardar; revisa tu conexión e inténtalo de nuevo.",
        "fr": "Impossible d'enregistrer ; vérifie ta connexion et réessaie.",
        "de": "Speichern fehlgeschlagen; prüfe deine Verbindung und versuch es noch einmal.",
        "pt": "Não foi possível salvar; verifique sua conexão e tente de novo.",
    },
    # The widget's memory page (``templates/widget/memory.html``, ``static/memory.js``): its title (``{coach}``),
    # heading, lead, the data export's link and hint, the insights' heading, the delete button, no insights, the
    # sessions' heading, the newest and earlier sessions' links, a summary's next steps and topics (``{items}``),
    # no summaries, the question before a deletion, its outcome and failures.
    "memory_page_title": {
        "en": "What {coach}'s assistant remembers",
        "es": "Lo que recuerda el asistente de {coach}",
        "fr": "Ce dont se souvient l'assistant de {coach}",
        "de": "Woran sich der Assistent von {coach} erinnert",
        "pt": "O que o assistente de {coach} lembra",
    },
    "memory_page_heading": {
        "en": "What my coach's assistant remembers",
        "es": "Lo que recuerda el asistente de mi coach",
        "fr": "Ce dont se souvient l'assistant de mon coach",
        "de": "Woran sich der Assistent meines Coachs erinnert",
        "pt": "O que o assistente do meu coach lembra",
    },
    "memory_page_lead": {
        "en": (
            "The assistant uses these notes to pick up where you left off. Delete anything you do not want it to "
            "remember: it will not come back. What a session taught it about how to talk with you goes with that "
            "session; your coach's own notes are in “Download my data”."
        ),
        "es": (
            "El asistente usa estas notas para retomar donde lo dejaste. Borra lo que no quieras que recuerde: no "
            "volverá. Lo que una sesión le enseñó sobre cómo hablarte se borra con esa sesión; las notas de tu coach "
            "están en «Descargar mis datos»."
        ),
        "fr": (
            "L'assistant se sert de ces notes pour reprendre là où tu t'étais arrêté. Supprime ce que tu ne veux pas "
            "qu'il retienne : cela ne reviendra pas. Ce qu'une séance lui a appris sur la façon de te parler part avec "
            "cette séance ; les notes de ton coach sont dans « Télécharger mes données »."
        ),
        "de": (
            "Der Assistent nutzt diese Notizen, um dort weiterzumachen, wo du aufgehört hast. Lösche, woran er sich "
            "nicht erinnern soll: Es kommt nicht zurück. Was er in einer Sitzung darüber gelernt hat, wie er mit dir "
            "spricht, verschwindet mit dieser Sitzung; die Notizen deines Coachs stehen unter „Meine Daten "
            "herunterladen“."
        ),
        "pt": (
            "O assistente usa estas notas para continuar de onde você parou. Apague o que não quiser que ele lembre: "
            "não voltará. O que uma sessão lhe ensinou sobre como falar com você some com essa sessão; as notas do "
            "seu coach estão em “Baixar meus dados”."
        ),
    },
    "memory_page_download": {
        "en": "Download my data",
        "es": "Descargar mis datos",
        "fr": "Télécharger mes données",
        "de": "Meine Daten herunterladen",
        "pt": "Baixar meus dados",
    },
    "memory_page_download_hint": {
        "en": "— every message, what the assistant remembers, and your feedback, as JSON",
        "es": "— cada mensaje, lo que recuerda el asistente y tus valoraciones, en JSON",
        "fr": "— chaque message, ce dont se souvient l'assistant et tes avis, en JSON",
        "de": "— jede Nachricht, woran sich der Assistent erinnert, und deine Rückmeldungen, als JSON",
        "pt": "— cada mensagem, o que o assistente lembra e suas avaliações, em JSON",
    },
    "memory_page_insights": {
        "en": "Things it has learnt about you",
        "es": "Lo que ha aprendido sobre ti",
        "fr": "Ce qu'il a appris sur toi",
        "de": "Was er über dich gelernt hat",
        "pt": "O que ele aprendeu sobre você",
    },
    "memory_page_delete": {"en": "Delete", "es": "Borrar", "fr": "Supprimer", "de": "Löschen", "pt": "Apagar"},
    "memory_page_nothing": {
        "en": "Nothing yet.",
        "es": "Nada todavía.",
        "fr": "Rien pour l'instant.",
        "de": "Noch nichts.",
        "pt": "Nada ainda.",
    },
    "memory_page_sessions": {
        "en": "Past sessions",
        "es": "Sesiones anteriores",
        "fr": "Séances passées",
        "de": "Frühere Sitzungen",
        "pt": "Sessões anteriores",
    },
    "memory_page_newest": {
        "en": "Newest sessions",
        "es": "Sesiones más recientes",
        "fr": "Séances les plus récentes",
        "de": "Neueste Sitzungen",
        "pt": "Sessões mais recentes",
    },
    "memory_page_earlier": {
        "en": "Earlier sessions",
        "es": "Sesiones más antiguas",
        "fr": "Séances plus anciennes",
        "de": "Ältere Sitzungen",
        "pt": "Sessões mais antigas",
    },
    "memory_page_next_steps": {
        "en": "Next steps: {items}",
        "es": "Próximos pasos: {items}",
        "fr": "Prochaines étapes : {items}",
        "de": "Nächste Schritte: {items}",
        "pt": "Próximos passos: {items}",
    },
    "memory_page_topics": {
        "en": "Topics: {items}",
        "es": "Temas: {items}",
        "fr": "Sujets : {items}",
        "de": "Themen: {items}",
        "pt": "Temas: {items}",
    },
    "memory_page_no_summaries": {
        "en": "No session summaries yet.",
        "es": "Todavía no hay resúmenes de sesiones.",
        "fr": "Pas encore de résumé de séance.",
        "de": "Noch keine Zusammenfassungen von Sitzungen.",
        "pt": "Ainda não há resumos de sessões.",
    },
    "memory_page_confirm": {
        "en": "Delete this? The assistant will not remember it again.",
        "es": "¿Borrar esto? El asistente no volverá a recordarlo.",
        "fr": "Supprimer ceci ? L'assistant ne s'en souviendra plus.",
        "de": "Das löschen? Der Assistent wird sich nicht wieder daran erinnern.",
        "pt": "Apagar isto? O assistente não vai lembrar disso de novo.",
    },
    "memory_page_deleted": {"en": "Deleted.", "es": "Borrado.", "fr": "Supprimé.", "de": "Gelöscht.", "pt": "Apagado."},
    "memory_page_failed": {
        "en": "Could not delete it; try again.",
        "es": "No se pudo borrar; inténtalo de nuevo.",
        "fr": "Impossible de le supprimer ; réessaie.",
        "de": "Löschen fehlgeschlagen; versuch es noch einmal.",
        "pt": "Não foi possível apagar; tente de novo.",
    },
    "memory_page_offline": {
        "en": "Could not delete it; check your connection and try again.",
        "es": "No se pudo borrar; revisa tu conexión e inténtalo de nuevo.",
        "fr": "Impossible de le supprimer ; vérifie ta connexion et réessaie.",
        "de": "Löschen fehlgeschlagen; prüfe deine Verbindung und versuch es noch einmal.",
        "pt": "Não foi possível apagar; verifique sua conexão e tente de novo.",
    },
    # The memory page's badge of an insight's kind (app.memory.models.InsightKind) and of a status other than
    # active (InsightStatus): no fields.
    "memory_page_kind_goal": {"en": "goal", "es": "objetivo", "fr": "objectif", "de": "Ziel", "pt": "objetivo"},
    "memory_page_kind_blocker": {
        "en": "blocker",
        "es": "obstáculo",
        "fr": "blocage",
        "de": "Hindernis",
        "pt": "obstáculo",
    },
    "memory_page_kind_breakthrough": {
        "en": "breakthrough",
        "es": "avance",
        "fr": "déclic",
        "de": "Durchbruch",
        "pt": "avanço",
    },
    "memory_page_kind_preference": {
        "en": "preference",
        "es": "preferencia",
        "fr": "préférence",
        "de": "Vorliebe",
        "pt": "preferência",
    },
    "memory_page_kind_achievement": {
        "en": "achievement",
        "es": "logro",
        "fr": "réussite",
        "de": "Erfolg",
        "pt": "conquista",
    },
    "memory_page_kind_pattern": {"en": "pattern", "es": "patrón", "fr": "schéma", "de": "Muster", "pt": "padrão"},
    "memory_page_kind_milestone": {
        "en": "milestone",
        "es": "hito",
        "fr": "étape clé",
        "de": "Meilenstein",
        "pt": "marco",
    },
    "memory_page_kind_commitment": {
        "en": "commitment",
        "es": "compromiso",
        "fr": "engagement",
        "de": "Vorhaben",
        "pt": "compromisso",
    },
    "memory_page_status_achieved": {
        "en": "achieved",
        "es": "logrado",
        "fr": "atteint",
        "de": "erreicht",
        "pt": "alcançado",
    },
    "memory_page_status_dropped": {
        "en": "dropped",
        "es": "abandonado",
        "fr": "abandonné",
        "de": "aufgegeben",
        "pt": "abandonado",
    },
    # The widget's page for a chat link that is not valid or a widget session that has ended: no fields.
    "invalid_page_title": {
        "en": "Chat unavailable",
        "es": "Chat no disponible",
        "fr": "Chat indisponible",
        "de": "Chat nicht verfügbar",
        "pt": "Chat indisponível",
    },
    "invalid_page_text": {
        "en": (
            "This chat link is not valid, or your chat session has ended. Open the link your coach gave you again, "
            "or ask your coach for a new one."
        ),
        "es": (
            "Este enlace de chat no es válido o tu sesión de chat ha terminado. Vuelve a abrir el enlace que te dio "
            "tu coach o pídele uno nuevo."
        ),
        "fr": (
            "Ce lien de chat n'est pas valide, ou ta session de chat est terminée. Ouvre à nouveau le lien que ton "
            "coach t'a donné, ou demande-lui-en un nouveau."
        ),
        "de": (
            "Dieser Chat-Link ist ungültig, oder deine Chat-Sitzung ist abgelaufen. Öffne den Link, den dir dein "
            "Coach gegeben hat, noch einmal, oder bitte deinen Coach um einen neuen."
        ),
        "pt": (
            "Este link de chat não é válido ou sua sessão de chat terminou. Abra de novo o link que seu coach lhe "
            "deu ou peça um novo a ele."
        ),
    },
    # The first words of an empty conversation when the coach set no ``widget_greeting`` (:func:`greeting`):
    # ``{coach}``.
    "greeting": {
        "en": "Hi, I'm {coach}'s AI assistant. What would you like to talk about today?",
        "es": "Hola, soy el asistente de IA de {coach}. ¿De qué te gustaría hablar hoy?",
        "fr": "Salut, je suis l'assistant IA de {coach}. De quoi aimerais-tu parler aujourd'hui ?",
        "de": "Hallo, ich bin der KI-Assistent von {coach}. Worüber möchtest du heute sprechen?",
        "pt": "Oi, eu sou o assistente de IA de {coach}. Sobre o que você gostaria de conversar hoje?",
    },
}
"""Message name → language → template (the comment above each entry names its fields)."""


def say(name: str, language: str, **fields: object) -> str:
    """The ``name`` entry of :data:`CATALOGUE` in ``language`` (``en es fr de pt``; anything else → English),
    filled with ``fields``. ``KeyError`` for a name the catalogue lacks."""
    entry = CATALOGUE[name]
    return entry.get(language, entry["en"]).format(**fields)


def greeting(custom: str | None, coach_name: str, language: str = "en") -> str:
    """The first words a client sees in an empty conversation (the widget, Telegram's ``/start``): the coach's own
    ``custom`` greeting (``Coach.widget_greeting``, in the coach's words), else the default naming the coach, in
    ``language``."""
    return custom or say("greeting", language, coach=coach_name)


def page_texts(prefix: str, language: str, **shared: str) -> dict[str, str]:
    """A widget page's own texts in ``language`` (``en es fr de pt``; anything else → English), their fields
    (``{coach}``, ``{used}``…) left for the page or its script to fill: every entry named ``prefix…`` by its name
    without the prefix (``"placeholder"``, ``"send"``…), the entries ``shared`` names under their keys there
    (``heading="tg_tone_title"``), and every refusal (``refused_*``, :func:`refusal`) under its full name, for the
    script to show an error event's or an API error's ``code`` (``refused_<code>``)."""
    names = {name.removeprefix(prefix): name for name in CATALOGUE if name.startswith(prefix)}
    names |= shared | {name: name for name in CATALOGUE if name.startswith("refused_")}
    return {key: CATALOGUE[name].get(language, CATALOGUE[name]["en"]) for key, name in names.items()}


def widget_texts(language: str) -> dict[str, str]:
    """The chat page's own texts (:func:`page_texts` of ``widget_*``: ``templates/widget/chat.html``,
    ``static/chat.js``, ``static/widget.js``; the coach's name can change while the page is open)."""
    return page_texts("widget_", language)


def refusal(error: DomainError, language: str) -> str:
    """What a client reads of a refusal: its ``refused_<code>`` entry in ``language`` filled with its ``fields``,
    else (no code, or one the catalogue lacks) its English ``message``."""
    name = f"refused_{error.code}"
    return say(name, language, **error.fields) if error.code and name in CATALOGUE else error.message


def minutes(n: int, language: str) -> str:
    """``n`` minutes in ``language`` as the texts say a coach's SLA: "1 minute", "15 minutes" (``minutes_one``,
    ``minutes_other``; "1 minutes" read wrong in every language)."""
    return say("minutes_one" if n == 1 else "minutes_other", language, n=n)


def handoff_notice(coach_name: str, language: str, *, requested: bool, sla_minutes: int, back: str | None) -> str:
    """What the client reads when the conversation is handed to the coach (not for a crisis, which gets the crisis
    reply), in ``language``: the coach was asked to join (``requested``: the client asked for a person), when they
    usually reply (``sla_minutes``) or, outside their hours, when they are back (``back``:
    :func:`app.accounts.availability.away_until` in ``language``), and that nothing the client writes is lost."""
    opening = say("notice_requested" if requested else "notice_personal", language, coach=coach_name)
    if back is None:
        timing = say("notice_within", language, coach=coach_name, minutes=minutes(sla_minutes, language))
    else:
        timing = say("notice_away", language, coach=coach_name, back=back)
    return f"{opening} {timing} {say('notice_saved', language, coach=coach_name)}"


def holding_message(
    coach_name: str, language: str, *, joined: bool, back: str | None, resources: Sequence[str] = ()
) -> str:
    """The SLA holding message in ``language``: the coach has not taken over within the SLA, or (``joined``) took
    over and has not replied within it; they reply as soon as they can or, outside their hours, once back
    (``back`` as :func:`handoff_notice`); then where to turn if it is urgent. For a crisis handoff ``resources``
    are the crisis lines (:func:`app.handoff.crisis.resources_for`, those of the crisis reply) and the message
    lists them (``holding_crisis``), not a number it does not give; for any other handoff (no ``resources``) it
    points to the local emergency number or a crisis line (``holding_urgent``)."""
    when = say("holding_soon", language) if back is None else say("holding_back", language, back=back)
    waiting = say("holding_joined" if joined else "holding_open", language, coach=coach_name, when=when)
    if resources:
        return f"{waiting} {say('holding_crisis', language, lines=resource_lines(resources))}"
    return f"{waiting} {say('holding_urgent', language)}"


def resource_lines(resources: Sequence[str]) -> str:
    """Crisis resource lines as the client reads them in the crisis texts' ``{lines}``: ``"- <line>"`` each, one
    per text line (``\\n``-separated)."""
    return "\n".join(f"- {line}" for line in resources)


def presence_lines(language: str, sla_minutes: int) -> dict[str, str]:
    """The widget's presence lines in ``language`` (``waiting``, ``away``, ``joined``, ``reviewing``: the
    ``presence_*`` entries), ``sla_minutes`` filled in and ``{coach}`` / ``{back}`` left for the page to fill
    (``static/chat.js``: the coach's name can change while the page is open, the return time too)."""
    keep = {"coach": "{coach}", "back": "{back}"}
    return {
        name: say(f"presence_{name}", language, minutes=minutes(sla_minutes, language), **keep)
        for name in ("waiting", "away", "joined", "reviewing")
    }
