"""The accessibility check of the browser tests: axe-core (vendored from the npm registry, see
``tests/browser/vendor/README.md``) run in the page, WCAG 2.x A/AA rules plus best practices.

Playwright evaluates the script through the DevTools protocol, so the pages' strict Content-Security-Policy
(no inline scripts) stays in force for the page's own code."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from playwright.async_api import Page

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
BLOCKING = frozenset({"serious", "critical"})
"""Impacts that fail a test."""


@cache
def _source() -> str:
    return AXE.read_text(encoding="utf-8")


async def serious_violations(page: Page) -> list[str]:
    """axe-core's violations of impact serious or critical on the page as it is now, one line each:
    ``rule (impact): help — target, target…``; ``[]`` when none."""
    return await violations(page, BLOCKING)


async def violations(page: Page, impacts: frozenset[str] | None = None) -> list[str]:
    """axe-core's violations on the page as it is now of the given ``impacts`` (``None``: every impact, minor
    to critical), one line each as :func:`serious_violations` gives them; ``[]`` when none."""
    if not await page.evaluate("() => typeof window.axe === 'object'"):
        await page.evaluate(_source())
    result = await page.evaluate(
        """async () => {
          const r = await axe.run(document, {resultTypes: ['violations']});
          return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                          targets: v.nodes.map(n => n.target.join(' '))}));
        }"""
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} — {', '.join(v['targets'][:5])}"
        for v in result
        if impacts is None or v["impact"] in impacts
    ]
