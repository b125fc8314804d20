"""The pair store: a labelled pair row round-trips through its record; byte ranges read back the
records the index names; `datagen validate` catches a broken record or a stray tar. Also the
label graph relabel plans from."""
from __future__ import annotations

import json

import numpy as np

from datagen.io.pair_store import (PairStoreLimits, PairStoreWriter, decode_pair, encode_pair, iter_pairs, read_chunks,
                                   read_pair_index, read_pair_range)
from datagen.io.storage import Location
from datagen.io.validate import check_pair_store
from datagen.media import encode_image
from schemas import columns as C
from schemas.labels import relabel_plan, tasks_depending_on
from schemas.tasks import ImageKind

W, H = 32, 24


def pair_row(pair: int) -> dict:
    rng = np.random.default_rng(pair)
    rgb = lambda: encode_image(rng.integers(0, 255, (H, W, 3), dtype=np.uint8))  # noqa: E731
    mask = encode_image((rng.random((H, W)) > 0.5).astype(np.uint8) * 255, ImageKind.mask)
    prov = json.dumps({"model_id": "m", "revision": "r", "params": {"p": pair}}, sort_keys=True)
    return {C.VIDEO_URI: "/v.mp4", C.VIDEO_ID: "vid", C.SHOT: 0, C.PAIR: pair, C.FRAME_A: 1, C.FRAME_B: 9,
            C.T_A_S: 0.1, C.T_B_S: 0.5, C.WIDTH: W, C.HEIGHT: H, "pairs_in_video": 3,
            C.IMAGE_A: rgb(), C.IMAGE_B: rgb(), C.FACTS: json.dumps({"gap_s": 0.4}),
            C.CAPTION: json.dumps({"caption_a": "a", "objects": [{"name": "cup", "box": [1, 2, 9, 9]}]}),
            C.SEGMENTS: json.dumps([{"name": "cup", "box_a": [1, 2, 9, 9]}]), C.MASKS_A: [mask], C.MASKS_B: [mask],
            C.DEPTH_A: encode_image(rng.integers(0, 65535, (H, W), dtype=np.uint16), ImageKind.depth16),
            C.DEPTH_B: None, C.EDGES_A: mask, C.EDGES_B: mask,
            **{C.provenance_column(s): prov for s in ("caption", "segment", "depth", "edges")}}


def write_store(loc: Location, n: int) -> None:
    with PairStoreWriter(loc, "001abcd-00000-w0000000a-", PairStoreLimits(max_pairs=2)) as w:
        for p in range(n):
            w.add(encode_pair(pair_row(p), [f"vid_s0000_p{p:04d}_t00"]))


def test_a_labelled_row_round_trips_through_its_record():
    row = pair_row(0)
    back, doc = decode_pair(encode_pair(row, ["k_t00"]))
    for col, value in row.items():  # JSON columns are kept as data: equal as data, not as strings
        assert (json.loads(back[col]) == json.loads(value)) if col.endswith("_json") else back[col] == value, col
    assert doc["caption"]["objects"][0]["name"] == "cup" and doc["facts"] == {"gap_s": 0.4}


def test_byte_ranges_read_the_records_the_index_names(tmp_path):
    loc = Location.parse(str(tmp_path))
    write_store(loc, 5)
    index = read_pair_index(loc)
    assert index.num_rows == 5 and len(set(index.column("shard").to_pylist())) == 3  # 2 pairs a tar
    chunks = read_chunks(loc, 2)
    got = [json.loads(m["json"])["pair_key"] for c in chunks for m in read_pair_range(loc, c["tar"], c["offset"], c["span"])]
    want = [json.loads(m["json"])["pair_key"] for t in sorted(set(index.column("shard").to_pylist()))
            for m in iter_pairs(loc, t)]
    assert got == want and len(got) == 5
    assert check_pair_store(loc, {f"vid_s0000_p{p:04d}_t00" for p in range(5)}) == []


def test_validate_catches_a_broken_record_and_a_stray_tar(tmp_path):
    loc = Location.parse(str(tmp_path))
    write_store(loc, 2)
    tar = tmp_path / read_pair_index(loc).column("shard")[0].as_py()
    data = tar.read_bytes()
    start = data.index(b"\x89PNG")  # the first mask member: corrupt its bytes, keep its size
    tar.write_bytes(data[:start + 8] + b"\0" * 32 + data[start + 40:])
    (tmp_path / "pairs" / "stray.tar").write_bytes(data)
    problems = check_pair_store(loc, {"vid_s0000_p0000_t00", "vid_s0000_p0001_t00", "vid_s0000_p0009_t00"})
    assert any("does not decode" in p for p in problems)
    assert any("stray.tar" in p and "not in the pair index" in p for p in problems)
    assert any("pair vid_s0000_p0009, which has no pair-store record" in p for p in problems)


def test_caption_cascades_to_segment_and_its_tasks():
    assert relabel_plan(["caption"]) == ["caption", "verify", "segment"]  # the judge scores the new instruction
    assert relabel_plan(["depth"]) == ["depth"]
    assert set(tasks_depending_on(["segment"])) == {"multi_object_customization", "object_insertion",
                                                    "referring_segmentation"}
    assert "depth_estimation" not in tasks_depending_on(["caption", "segment"])
    # a new judge alone re-scores every sample whose record carries a caption, and nothing else
    assert relabel_plan(["verify"]) == ["verify"]
    assert set(tasks_depending_on(["verify"])) == set(tasks_depending_on(["caption"]))
    assert "edge_detection" not in tasks_depending_on(["verify"])
