"""The text filter with RapidOCR's real detector on frames with PIL-rendered text."""
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from datagen.media import encode_image
from schemas import columns as C
from stages.text import TextConfig, TextStage

W, H = 640, 360


def scene(shift_px: int = 0) -> Image.Image:
    """A smooth random scene (no text-like texture), shifted to mimic a pan between A and B."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 255, (H // 8, W // 8 + 8, 3)).astype(np.uint8)
    big = np.asarray(Image.fromarray(coarse).resize((W + 64, H), Image.BICUBIC))
    return Image.fromarray(np.ascontiguousarray(big[:, shift_px:shift_px + W]))


def draw(im: Image.Image, text: str, xy: tuple[int, int], size_px: int) -> Image.Image:
    ImageDraw.Draw(im).text(xy, text, font=ImageFont.load_default(size=size_px), fill=(255, 255, 255),
                            stroke_width=max(1, size_px // 14), stroke_fill=(0, 0, 0))
    return im


def pair_row(a: Image.Image, b: Image.Image) -> dict:
    return {C.IMAGE_A: encode_image(np.asarray(a)), C.IMAGE_B: encode_image(np.asarray(b)), C.WIDTH: W, C.HEIGHT: H,
            C.FACTS: json.dumps({"gap_s": 1.0})}


@pytest.fixture(scope="module")
def stage():
    return TextStage(TextConfig())


@pytest.fixture(scope="module")
def out(stage):
    rows = [
        # burned-in subtitles that change between A and B (a new line of dialogue)
        pair_row(draw(scene(), "Where are you going tonight?", (110, 300), 30),
                 draw(scene(8), "Home.", (280, 300), 30)),
        # a small static watermark over a panning scene
        pair_row(draw(scene(), "TV5", (590, 12), 14), draw(scene(8), "TV5", (590, 12), 14)),
        # no text at all
        pair_row(scene(), scene(8)),
        # a title card: text is most of the frame
        pair_row(draw(draw(scene(), "CHAPTER", (60, 60), 110), "ONE", (200, 200), 110),
                 draw(draw(scene(8), "CHAPTER", (60, 60), 110), "ONE", (200, 200), 110)),
    ]
    return stage({k: [r[k] for r in rows] for k in rows[0]})


def test_changing_subtitle_is_rejected(out):
    assert out[C.FAILED_STAGE][0] == "text" and out[C.FAILED_REASON][0] == "text_changes", out[C.FAILED_DETAIL]
    facts = json.loads(out[C.FACTS][0])
    assert facts["text_change_frac"] > TextConfig().max_change and facts["text_area_frac"] > 0.02


def test_static_watermark_and_clean_frames_are_kept_with_their_text_area_in_the_facts(out):
    assert out[C.FAILED_REASON][1:3] == [None, None], out[C.FAILED_DETAIL]
    watermark, clean = json.loads(out[C.FACTS][1]), json.loads(out[C.FACTS][2])
    assert watermark["text_area_frac"] < 0.01  # a logo is small (at 360 px the detector may not even see it)
    assert clean["text_area_frac"] == 0 and clean["text_change_frac"] == 0
    assert watermark["gap_s"] == 1.0  # earlier facts are kept


def test_title_card_is_text_heavy(out):
    assert out[C.FAILED_REASON][3] == "text_heavy", out[C.FAILED_DETAIL]


def test_the_same_clip_without_subtitles_is_kept(stage):
    row = pair_row(scene(), scene(8))
    assert stage({k: [v] for k, v in row.items()})[C.FAILED_REASON] == [None]


def test_bad_threshold_is_refused():
    with pytest.raises(ValueError, match="max_area"):
        TextConfig(max_area=1.5)
