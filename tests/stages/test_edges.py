import json

import numpy as np
import pytest

from datagen import UserError
from datagen.config import from_dict
from datagen.media import decode_image, encode_image
from schemas.columns import EDGES_A, EDGES_B, FAILED_REASON, IMAGE_A, IMAGE_B, provenance_column
from schemas.tasks import ImageKind
from stages.edges import EdgesConfig, EdgesStage, canny_thresholds, edge_map
from tests.stages.vision_inputs import batch, pair_row


def _square(brightness: int) -> np.ndarray:
    img = np.full((48, 64, 3), 20, np.uint8)
    img[12:36, 16:48] = brightness
    return img


def test_edges_binary_at_frame_size_on_the_square_border_and_deterministic():
    stage = EdgesStage(EdgesConfig())
    row = pair_row(64, 48)
    row[IMAGE_A] = encode_image(_square(200), rgb_ext="png")
    row[IMAGE_B] = encode_image(_square(200), rgb_ext="png")
    out, again = stage(batch([row])), stage(batch([row]))
    e = decode_image(out[EDGES_A][0], ImageKind.edge)
    assert e.shape == (48, 64) and e.dtype == np.uint8 and set(np.unique(e)) == {0, 255}
    ys, xs = np.nonzero(e)
    assert 10 <= ys.min() and ys.max() <= 37 and 14 <= xs.min() and xs.max() <= 49  # around the square
    assert e[20:28, 24:40].max() == 0  # flat inside: no edges
    assert out[EDGES_A] == again[EDGES_A] and out[EDGES_B] == again[EDGES_B]


def test_thresholds_follow_the_median_unless_fixed():
    gray = np.full((10, 10), 100, np.uint8)
    assert canny_thresholds(gray, EdgesConfig(sigma=0.33)) == pytest.approx((67.0, 133.0))
    assert canny_thresholds(gray, EdgesConfig(low_threshold=10, high_threshold=50)) == (10, 50)
    # a fixed low threshold above the high one is not allowed to invert the band
    assert canny_thresholds(gray, EdgesConfig(low_threshold=150)) == (150, 150)


def test_dark_and_bright_frames_get_comparable_edges():
    dark, bright = edge_map(_square(60), EdgesConfig()), edge_map(_square(250), EdgesConfig())
    assert (dark > 0).sum() > 0 and abs(int((dark > 0).sum()) - int((bright > 0).sum())) < 0.3 * (bright > 0).sum()


def test_bad_image_marked_and_provenance_recorded():
    bad = pair_row()
    bad[IMAGE_B] = b""
    out = EdgesStage(EdgesConfig(frames=["a"]))(batch([pair_row(), bad]))
    assert out[FAILED_REASON] == [None, "bad_image"] and EDGES_B not in out
    prov = json.loads(out[provenance_column("edges")][0])
    assert prov["model_id"] == "opencv-canny" and prov["revision"].startswith("opencv-")
    assert prov["params"]["sigma"] == 0.33 and prov["params"]["blur_ksize"] == 5


def test_even_blur_kernel_is_a_user_error():
    with pytest.raises(UserError, match="blur_ksize"):
        from_dict(EdgesConfig, {"blur_ksize": 4})
