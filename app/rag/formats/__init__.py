"""Extractors for the upload kinds beyond PDF and plain text: Markdown, DOCX, EPUB, HTML and transcripts
(SRT/VTT).

Each module turns the bytes of one kind into :class:`app.rag.extract.Page` objects and raises
:class:`app.rag.extract.ExtractionError` with a reason for the coach. They run only inside the isolated child
of :mod:`app.rag.isolation` (through :func:`app.rag.extract.extract_pages`), under its memory and CPU limits
and the :class:`app.rag.extract.Caps`.
"""
