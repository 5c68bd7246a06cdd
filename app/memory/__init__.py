"""Client memory in four layers, and the jobs that keep it.

- L1 recent turns: the conversation's last ``Coach.recent_messages`` messages (read by the chat turn).
- L2 sessions: a message joins the conversation's open session; after ``Coach.session_idle_minutes`` of
  silence (next message or the minute sweep) or on request the session ends and ``summarize_session`` writes
  a schema-checked summary. Invalid model output is retried with fresh samples, then the session is marked
  ``failed`` with the reason — never stored half-valid.
- L3 insights: ``extract_insights`` reads unread messages in windows, asks the model for typed insights and
  reconciles each against the client's stored items (see :mod:`app.memory.insights`).
- L4 profile: ``update_profile`` merges what a summarised session says about how to work with the client.
- Episodes, under the extracted layers: every client and coach message recallable on its own, whatever the
  model made of it (:mod:`.episodes`: the turn stores its client message's query vector, ``embed_messages``
  embeds AI and coach messages). Recall (:mod:`.retrieval`) ranks episodes, summaries and insights in one
  list: dense + BM25 fused by RRF, a light recency prior, each item dated.

Jobs are idempotent (arq runs a job at least once): summaries skip finished sessions, extraction keeps a
per-conversation watermark under a short Redis lease, profile updates are keyed by session. Model calls happen
outside database transactions.

Modules: :mod:`.sessions` (L2 boundaries: track, end, idle sweep), :mod:`.summaries` (L2 job),
:mod:`.insights` (L3 job and reconciliation), :mod:`.profile` (L4 job, the locked get-or-create),
:mod:`.episodes` (the episodic layer), :mod:`.retrieval` (recall for the turn's prompt), :mod:`.controls`
(the coach's and client's view and edits), :mod:`.prompts` and :mod:`.schemas` (what the jobs ask the model
and what it must answer), :mod:`.messages` (storing a message into its session), :mod:`.transcript` (windows and
grounding).
"""
