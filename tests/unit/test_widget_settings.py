"""The widget's welcome settings (issue 17): the avatar check sniffs the format from the data and re-encodes it
as a PNG; greeting and suggestions are checked and defaulted."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from app.accounts.models import Coach
from app.accounts.widget_settings import (
    AVATAR_MAX_PIXELS,
    DEFAULT_SUGGESTIONS,
    apply_widget_settings,
    avatar_png,
    suggestions,
)
from app.core.errors import InvalidInput
from app.handoff.catalogue import greeting


def encoded(fmt: str, size: tuple[int, int] = (40, 20), mode: str = "RGB", **options: object) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, "red" if mode != "P" else 1).save(out, format=fmt, **options)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_each_accepted_format_becomes_a_png_of_the_same_shape(fmt: str) -> None:
    png = avatar_png(encoded(fmt))
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.size == (40, 20)


def test_an_animated_gif_keeps_its_first_frame_and_transparency_survives() -> None:
    frames = [Image.new("RGBA", (10, 10), (0, 0, 255, 0)), Image.new("RGBA", (10, 10), (255, 0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], transparency=0)
    with Image.open(io.BytesIO(avatar_png(out.getvalue()))) as image:
        assert image.mode == "RGBA" and image.getpixel((5, 5))[3] == 0


@pytest.mark.parametrize("fmt", ["TIFF", "BMP", "ICO"])
def test_formats_pillow_reads_but_the_avatar_does_not_accept_are_refused(fmt: str) -> None:
    with pytest.raises(InvalidInput, match="must be a PNG, JPEG, WebP or GIF image"):
        avatar_png(encoded(fmt, (16, 16)))


@pytest.mark.parametrize("side", [5_000, 20_000])
def test_an_image_over_the_pixel_limit_is_refused_naming_the_limit(side: int) -> None:
    """Under Pillow's decompression-bomb threshold the size check refuses it; over it (20,000 px a side, a
    388 KB PNG) Pillow refuses while opening, which read "must be a PNG, JPEG, WebP or GIF image" before."""
    with pytest.raises(InvalidInput, match=f"over {AVATAR_MAX_PIXELS:,} pixels"):
        avatar_png(encoded("PNG", (side, side), mode="1"))


def test_trailing_data_and_metadata_do_not_survive() -> None:
    upload = encoded("PNG", pnginfo=None) + b"<script>alert(1)</script>"
    assert b"<script" not in avatar_png(upload)


def test_greeting_and_suggestions_default_and_are_checked() -> None:
    coach = Coach(name="Maya", widget_greeting=None, widget_suggestions=None)
    assert greeting(coach.widget_greeting, coach.name).startswith("Hi, I'm Maya's AI assistant")
    assert suggestions(coach) == list(DEFAULT_SUGGESTIONS)
    assert greeting(coach.widget_greeting, coach.name, "es").startswith("Hola, soy el asistente de IA de Maya")
    apply_widget_settings(coach, widget_greeting="  Hello!  ", widget_suggestions=[" A ", "A", "B"])
    assert (greeting(coach.widget_greeting, coach.name, "de"), suggestions(coach)) == ("Hello!", ["A", "B"])
    apply_widget_settings(coach, widget_suggestions=[])
    assert suggestions(coach) == []
    with pytest.raises(InvalidInput, match="unknown settings: colour"):
        apply_widget_settings(coach, colour="red")
