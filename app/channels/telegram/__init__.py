"""The Telegram channel: a coach's clone as a Telegram bot, on the channel-neutral turn (see
:mod:`app.channels.telegram.adapter`)."""
