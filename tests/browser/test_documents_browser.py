"""The documents page in a real browser: a transcript dropped on the drop zone is uploaded (with its progress
bar) and, once ingested, offers the "try it" link."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from playwright.async_api import Browser, expect

from tests.browser.conftest import WAIT_MS, log_in
from tests.browser.test_handoff_browser import browser
from tests.conftest import Coach

__all__ = ["browser"]  # a fixture used by name below
pytestmark = pytest.mark.browser

VTT = "WEBVTT\n\n00:00:02.000 --> 00:00:05.000\n<v Coach>Welcome back, how was the week?\n"


async def test_a_dropped_transcript_uploads_with_progress_and_becomes_ready(
    base_url: str,
    browser: Browser,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    coach = await make_coach("Dropping Coach")
    context = await browser.new_context(base_url=base_url)
    page = await context.new_page()
    await log_in(page, coach, "/dashboard/documents")
    # the progress row appears while the upload runs; the page then reloads onto the status table
    await page.evaluate("""() => new MutationObserver((changes, observer) => {
        if (document.querySelector('#upload-progress progress')) {
            window.sessionStorage.setItem('sawProgress', 'true');
            observer.disconnect();
        }
    }).observe(document.getElementById('upload-progress'), {childList: true, subtree: true})""")
    posted = page.expect_response(lambda r: r.url.endswith("/dashboard/documents") and r.request.method == "POST")
    async with posted, page.expect_event("framenavigated"):
        await page.evaluate(
            """(text) => {
                    const files = new DataTransfer();
                    files.items.add(new File([text], 'session.vtt', {type: 'text/vtt'}));
                    const zone = document.getElementById('dropzone');
                    zone.dispatchEvent(new DragEvent('drop', {dataTransfer: files, bubbles: true, cancelable: true}));
                }""",
            VTT,
        )
    assert await page.evaluate("() => window.sessionStorage.getItem('sawProgress')") == "true"
    await expect(page.locator("#documents")).to_contain_text("session.vtt", timeout=WAIT_MS)
    await run_jobs()
    await page.reload()
    await expect(page.get_by_role("link", name="try it")).to_be_visible(timeout=WAIT_MS)
    await context.close()


async def test_a_dropped_file_the_server_refuses_shows_why_and_the_others_still_upload(
    base_url: str, browser: Browser, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """Dropping skips the file picker's type filter: a .pptx is refused by the server, and its row says why
    (the page used to reload at once, showing nothing of it); the transcript dropped with it is in the table."""
    coach = await make_coach("Refused Coach")
    context = await browser.new_context(base_url=base_url)
    page = await context.new_page()
    await log_in(page, coach, "/dashboard/documents")
    await page.evaluate(
        """(text) => {
                const files = new DataTransfer();
                files.items.add(new File(['not a deck'], 'slides.pptx', {type: 'application/octet-stream'}));
                files.items.add(new File([text], 'session.vtt', {type: 'text/vtt'}));
                const zone = document.getElementById('dropzone');
                zone.dispatchEvent(new DragEvent('drop', {dataTransfer: files, bubbles: true, cancelable: true}));
            }""",
        VTT,
    )
    refused = page.locator("#upload-progress li.error")
    await expect(refused).to_contain_text("slides.pptx — not uploaded: unsupported file type", timeout=WAIT_MS)
    await expect(page.locator("#documents")).to_contain_text("session.vtt", timeout=WAIT_MS)
    await expect(refused).to_be_visible()  # not reloaded away
    await context.close()
