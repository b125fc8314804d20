"""The text filter on a generated clip with burned-in subtitles, after the real ingest -> shots -> pairs."""
import json

import av
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from datagen.video.synthetic import Segment, write_video
from schemas import columns as C
from stages.ingest import IngestStage
from stages.pairs import PairsStage
from stages.shots import ShotsStage
from stages.text import TextStage

pytestmark = pytest.mark.slow
LINES = ["Where are you going tonight?", "Home.", "Why would you do that to me?", "Because."]
FRAMES_PER_LINE = 24  # one line of dialogue a second


def burn_subtitles(src: str, dst: str) -> None:
    """Re-encode `src` with a subtitle line at the bottom, a new line every FRAMES_PER_LINE frames."""
    font = ImageFont.load_default(size=20)
    with av.open(src) as inp, av.open(dst, "w") as out:
        src_stream = inp.streams.video[0]
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = src_stream.width, src_stream.height, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for i, frame in enumerate(inp.decode(video=0)):
            img = frame.to_image()
            draw = ImageDraw.Draw(img)
            line = LINES[(i // FRAMES_PER_LINE) % len(LINES)]
            w = draw.textlength(line, font=font)
            draw.text(((img.width - w) / 2, img.height - 30), line, font=font, fill=(255, 255, 255),
                      stroke_width=2, stroke_fill=(0, 0, 0))
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.asarray(img), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def pairs_through_text(path: str) -> list[dict]:
    batch = C.rows_to_batch([{C.VIDEO_URI: path}])
    for stage in (IngestStage(), ShotsStage(), PairsStage(), TextStage()):
        batch = stage(batch)
    return C.batch_to_rows(batch)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("subtitles")
    clean = str(d / "clean.mp4")
    write_video(clean, [Segment("pan", 120, speed_px=1.5, seed=3)], width=384, height=216)
    burn_subtitles(clean, str(d / "subtitled.mp4"))
    return clean, str(d / "subtitled.mp4")


def test_changing_burned_in_subtitles_are_rejected(clips):
    rows = pairs_through_text(clips[1])
    judged = [r for r in rows if r[C.FAILED_STAGE] in (None, "text")]
    assert judged, [r[C.FAILED_REASON] for r in rows]
    for r in judged:
        same_line = r[C.FRAME_A] // FRAMES_PER_LINE == r[C.FRAME_B] // FRAMES_PER_LINE
        assert r[C.FAILED_REASON] == (None if same_line else "text_changes"), (r[C.FRAME_A], r[C.FRAME_B], r[C.FACTS])
        assert json.loads(r[C.FACTS])["text_area_frac"] > 0.01  # the subtitle is found on every frame
    assert any(r[C.FAILED_REASON] == "text_changes" for r in judged)


def test_the_same_clip_without_subtitles_is_kept(clips):
    rows = pairs_through_text(clips[0])
    assert rows and all(r[C.FAILED_STAGE] is None for r in rows), [r[C.FAILED_DETAIL] for r in rows]
    assert all(json.loads(r[C.FACTS])["text_area_frac"] == 0 for r in rows)
