"""The dashboard's Tone section (Settings page): the coach sets the range, the default and a style; a refused
change says why with a 400 and changes nothing."""

from __future__ import annotations

import html
import re

import httpx

from tests.integration.web.test_dashboard import browser, csrf, sign_up

__all__ = ["browser"]  # fixture used by name below


async def test_the_coach_sets_tone_on_the_settings_page(browser: httpx.AsyncClient) -> None:
    await sign_up(browser, "Tone Page Coach")
    page = await browser.get("/dashboard/settings")
    assert page.status_code == 200 and 'id="tone"' in page.text and 'action="/dashboard/settings/tone"' in page.text
    key = re.search(r'<pre class="snippet">([^<]+)</pre>', page.text)
    assert key, "the new API key is shown after sign-up"
    auth = {"Authorization": f"Bearer {key.group(1)}"}
    token = await csrf(browser, "/dashboard/settings")
    form = {
        "_csrf_token": token,
        "tone_min": "2",
        "tone_max": "6",
        "tone_default": "3",
        "mode_key_0": "roast",
        "mode_label_0": "Tough love",
        "mode_description_0": "Excuses get called out.",
        "mode_instruction_0": "Roast the excuses, then give one step.",
        "mode_most_intense_0": "on",
    }
    saved = await browser.post("/dashboard/settings/tone", data=form)
    assert saved.status_code == 200 and "Tone saved." in saved.text, saved.text
    api = await browser.get("/api/v1/tone", headers=auth)
    assert api.status_code == 200, api.text
    assert api.json() == {
        "min": 2,
        "max": 6,
        "default": 3,
        "modes": [
            {
                "key": "roast",
                "label": "Tough love",
                "description": "Excuses get called out.",
                "instruction": "Roast the excuses, then give one step.",
                "most_intense": True,
            }
        ],
    }
    assert 'name="mode_key_0" value="roast"' in saved.text and 'name="mode_most_intense_0" checked' in saved.text

    refused = await browser.post("/dashboard/settings/tone", data=form | {"tone_min": "5", "tone_max": "3"})
    assert refused.status_code == 400 and "min must not be above max" in html.unescape(refused.text)
    not_a_number = await browser.post("/dashboard/settings/tone", data=form | {"tone_max": "lots"})
    assert not_a_number.status_code == 400 and "tone_max must be a whole number" in not_a_number.text
    assert (await browser.get("/api/v1/tone", headers=auth)).json()["max"] == 6  # nothing changed
