"""Issue 17: the coach's welcome in the widget: greeting text, suggested first questions and avatar, set through
``PATCH /api/v1/settings``, ``PUT /api/v1/settings/widget-avatar`` and the dashboard's settings page; bad input
is a 400 (413 for an over-large body) with a JSON message and leaves what was stored."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable

import httpx
import pytest
from PIL import Image

from app.accounts.widget_settings import AVATAR_MAX_BYTES
from tests.conftest import Coach, make_client, widget_page
from tests.integration.web.test_dashboard import csrf, sign_up

MakeCoach = Callable[..., Awaitable[Coach]]
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script><circle r="4"/></svg>'


def image(fmt: str, size: tuple[int, int] = (600, 300), mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, (200, 30, 90) if mode == "RGB" else 0).save(out, format=fmt)
    return out.getvalue()


async def put_avatar(http: httpx.AsyncClient, coach: Coach, name: str, data: bytes, kind: str) -> httpx.Response:
    return await http.put("/api/v1/settings/widget-avatar", headers=coach.headers, files={"file": (name, data, kind)})


async def test_greeting_and_suggestions_are_set_shown_in_the_widget_and_restored(
    http: httpx.AsyncClient, base_url: str, make_coach: MakeCoach
) -> None:
    coach = await make_coach("Coach Maya")
    client = await make_client(http, coach, "Ari")
    default = (await http.get("/api/v1/settings", headers=coach.headers)).json()
    assert default["widget_greeting"].startswith("Hi, I'm Coach Maya's AI assistant")
    assert len(default["widget_suggestions"]) == 3 and default["widget_avatar_url"] is None
    body = {
        "widget_greeting": "  Welcome <b>friend</b>!  ",
        "widget_suggestions": ["Plan my week", "Plan my week", "Sleep"],
    }
    response = await http.patch("/api/v1/settings", headers=coach.headers, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["widget_greeting"] == "Welcome <b>friend</b>!"
    assert response.json()["widget_suggestions"] == ["Plan my week", "Sleep"]
    page = (await widget_page(base_url, client["widget_token"])).text
    assert "Welcome &lt;b&gt;friend&lt;/b&gt;!" in page and "<b>friend" not in page  # escaped, never markup
    assert ">Plan my week</button>" in page and ">Sleep</button>" in page and "work on a habit" not in page
    response = await http.patch(
        "/api/v1/settings", headers=coach.headers, json={"widget_greeting": "", "widget_suggestions": []}
    )
    assert (
        response.json()["widget_greeting"].startswith("Hi, I'm Coach Maya's")
        and response.json()["widget_suggestions"] == []
    )
    assert 'class="suggestions"' not in (await widget_page(base_url, client["widget_token"])).text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"widget_greeting": "x" * 501}, "widget_greeting must be at most 500 characters"),
        ({"widget_suggestions": ["a", "b", "c", "d", "e", "f"]}, "at most 5 questions"),
        ({"widget_suggestions": ["fine", "   "]}, "each question must be 1–120 characters"),
        ({"widget_suggestions": ["y" * 121]}, "each question must be 1–120 characters"),
        ({"widget_suggestions": "Plan my week"}, "widget_suggestions"),
        ({"widget_greeting": 42}, "widget_greeting"),
    ],
)
async def test_a_bad_greeting_or_suggestion_is_a_400_and_changes_nothing(
    http: httpx.AsyncClient, make_coach: MakeCoach, body: dict, message: str
) -> None:
    coach = await make_coach("Coach Bad Input")
    kept = {"widget_greeting": "Hello there", "widget_suggestions": ["One"]}
    assert (await http.patch("/api/v1/settings", headers=coach.headers, json=kept)).status_code == 200
    response = await http.patch("/api/v1/settings", headers=coach.headers, json=body | {"name": "Renamed"})
    assert response.status_code == 400, response.text
    assert message in response.text and "Traceback" not in response.text
    after = (await http.get("/api/v1/settings", headers=coach.headers)).json()
    assert after["name"] == "Coach Bad Input"
    assert (after["widget_greeting"], after["widget_suggestions"]) == ("Hello there", ["One"])


async def test_an_avatar_is_sniffed_re_encoded_as_png_and_served_safely(
    http: httpx.AsyncClient, base_url: str, make_coach: MakeCoach
) -> None:
    coach = await make_coach("Coach Avatar")
    client = await make_client(http, coach, "Ari")
    # a JPEG with a misleading name and type, and a script appended after the image data
    upload = image("JPEG") + b"<script>alert(1)</script>"
    response = await put_avatar(http, coach, "me.svg", upload, "image/svg+xml")
    assert response.status_code == 200, response.text
    url = response.json()["widget_avatar_url"]
    assert url.startswith(f"/w/avatar/{coach.coach_id}?v=")
    served = await http.get(url)
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/png" and served.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in served.headers["content-security-policy"]
    assert served.content.startswith(b"\x89PNG") and b"<script" not in served.content
    assert Image.open(io.BytesIO(served.content)).size == (256, 128)  # fits 256 px, aspect kept
    page = (await widget_page(base_url, client["widget_token"])).text
    assert f'<img class="avatar" src="{url}"' in page
    removed = await http.delete("/api/v1/settings/widget-avatar", headers=coach.headers)
    assert removed.status_code == 200 and removed.json()["widget_avatar_url"] is None
    gone = await http.get(url)
    assert gone.status_code == 404 and gone.json()["detail"] == "this coach has no avatar"


@pytest.mark.parametrize(
    ("name", "data", "kind", "message"),
    [
        ("evil.svg", SVG, "image/svg+xml", "avatar must be a PNG, JPEG, WebP or GIF image"),
        ("evil.png", SVG, "image/png", "avatar must be a PNG, JPEG, WebP or GIF image"),
        ("page.png", b"<html><script>alert(1)</script></html>", "image/png", "avatar must be a PNG"),
        ("broken.png", image("PNG")[:60], "image/png", "avatar must be a PNG"),
        ("empty.png", b"", "image/png", "avatar: the file is empty"),
        ("bomb.png", image("PNG", (5000, 5000), mode="L"), "image/png", "avatar: the image is over"),
        ("big.png", b"\x89PNG" + b"\0" * (2 * 1024 * 1024), "image/png", "avatar: the file is over 2 MB"),
    ],
)
async def test_a_bad_avatar_is_a_400_and_keeps_the_stored_one(
    http: httpx.AsyncClient, make_coach: MakeCoach, name: str, data: bytes, kind: str, message: str
) -> None:
    coach = await make_coach("Coach Bad Avatar")
    first = await put_avatar(http, coach, "ok.png", image("PNG", (64, 64)), "image/png")
    assert first.status_code == 200
    response = await put_avatar(http, coach, name, data, kind)
    assert response.status_code == 400, response.text
    assert message in response.json()["detail"]
    after = (await http.get("/api/v1/settings", headers=coach.headers)).json()
    assert after["widget_avatar_url"] == first.json()["widget_avatar_url"]


async def test_an_avatar_without_a_file_or_over_the_body_limit_is_refused(
    http: httpx.AsyncClient, make_coach: MakeCoach
) -> None:
    coach = await make_coach("Coach No File")
    response = await http.put("/api/v1/settings/widget-avatar", headers=coach.headers, json={"file": "x"})
    assert response.status_code == 400 and "multipart/form-data" in response.json()["detail"]
    huge = await put_avatar(http, coach, "huge.png", b"\0" * (3 * 1024 * 1024), "image/png")
    assert huge.status_code == 413
    assert (await http.get("/w/avatar/00000000-0000-0000-0000-000000000000")).status_code == 404


async def test_the_dashboard_settings_page_sets_the_welcome_and_the_avatar(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as browser:
        await sign_up(browser, "Coach Dash Welcome")
        token = await csrf(browser, "/dashboard/settings")
        form = {
            "_csrf_token": token,
            "section": "widget",
            "widget_greeting": "Hello from the form",
            "widget_suggestions": "First question\n\nSecond question\n",
        }
        response = await browser.post("/dashboard/settings", data=form)
        assert response.status_code == 200 and "Saved." in response.text
        assert "Hello from the form" in response.text and "First question\nSecond question" in response.text
        bad = await browser.post("/dashboard/settings", data=form | {"widget_suggestions": "\n".join("abcdef")})
        assert bad.status_code == 400 and "at most 5 questions" in bad.text
        assert "First question\nSecond question" in bad.text  # the stored value, unchanged
        avatar = await browser.post(
            "/dashboard/settings/widget-avatar",
            data={"_csrf_token": token},
            files={"file": ("me.png", image("PNG", (80, 80)), "image/png")},
        )
        assert avatar.status_code == 200 and '<img class="avatar-preview" src="/w/avatar/' in avatar.text
        svg = await browser.post(
            "/dashboard/settings/widget-avatar",
            data={"_csrf_token": token},
            files={"file": ("me.svg", SVG, "image/svg+xml")},
        )
        assert svg.status_code == 400 and "avatar must be a PNG, JPEG, WebP or GIF image" in svg.text
        assert '<img class="avatar-preview"' in svg.text  # the stored avatar is still there
        photo = await browser.post(  # a phone photo, over the form's body limit: a page, not raw JSON
            "/dashboard/settings/widget-avatar",
            data={"_csrf_token": token},
            files={"file": ("photo.jpg", b"\xff" * (AVATAR_MAX_BYTES + 200 * 1024), "image/jpeg")},
            headers={"Accept": "text/html", "Referer": f"{base_url}/dashboard/settings"},
        )
        assert photo.status_code == 413 and "The file is too large" in photo.text
        assert 'href="/dashboard/settings"' in photo.text
        page = await browser.get("/dashboard/settings")
        assert '<img class="avatar-preview"' in page.text, "the stored avatar is still there"
