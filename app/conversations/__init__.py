"""Conversations: Conversation and Message (and a conversation's handoffs and drafts), reply metadata and what of
it a client may see, API shapes of transcripts."""
