"""Resume on a synthetic 100k-sample directory: the state is found exactly, and what a
task receives for resume does not grow with the dataset (it asks about its own rows)."""
from __future__ import annotations

from ray import cloudpickle
import pytest

from datagen.io.storage import Location
from datagen.pipeline import cpu_tasks as R
from datagen.pipeline.progress import ResumeClient, ResumeState
from datagen.pipeline.synthetic import video_id, video_uri, write_committed
from schemas import columns as C
from schemas.members import pair_key


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    loc = Location.parse(str(tmp_path_factory.mktemp("resume") / "ds100k"))
    return loc, write_committed(loc, 100_000, pending_videos=2)


def test_state_of_100k_samples_is_found_exactly(big):
    loc, want = big
    state = ResumeState.load(loc)
    assert state.samples_committed == want["samples"] == 100_000
    assert len(state.done_pairs) == want["pairs_done"]
    assert len(state.done_videos) == want["videos_done"] == want["videos"] - 2
    last = want["videos"] - 1
    assert state.videos_done([video_uri(0), video_uri(last)], [video_id(0), video_id(last)]) == [True, False]
    assert state.pairs_done([pair_key(video_id(0), 0, 3), pair_key(video_id(last), 0, 0)]) == [True, False]


def test_tasks_receive_resume_data_for_their_own_rows_only(big, tmp_path, ray_local):
    loc, want = big
    small = Location.parse(str(tmp_path / "ds1k"))
    write_committed(small, 1_000)
    sizes = {}
    for name, where in (("1k", small), ("100k", loc)):
        client = ResumeClient.start(where.url)
        assert client.summary()["samples_committed"] == (1_000 if name == "1k" else 100_000)
        sizes[name] = len(cloudpickle.dumps({"resume": client}))  # what every task's fn_kwargs carry
        if name == "100k":
            last = want["videos"] - 1
            sources = {C.VIDEO_URI: [video_uri(last), video_uri(0), video_uri(last)], "source_pos": ["0:0", "0:1", "0:2"]}
            kept = R.drop_done_sources(sources, client)
            assert kept[C.VIDEO_URI] == [video_uri(last), video_uri(0)]  # the repeated listing goes, not the done video
            ingested = {C.VIDEO_URI: kept[C.VIDEO_URI], C.VIDEO_ID: [video_id(last), video_id(0)]}
            assert R.drop_done_videos(ingested, client)[C.VIDEO_ID] == [video_id(last)]  # done by content id
            pairs = {C.VIDEO_URI: [video_uri(last)] * 2, C.VIDEO_ID: [video_id(last)] * 2, C.SHOT: [0, 0],
                     C.PAIR: [0, 1], C.FAILED_STAGE: [None, None]}
            assert R.stamp_pairs_and_drop_done(pairs, client)[C.PAIR] == [0, 1]  # pending pairs are redone
    assert sizes["100k"] == sizes["1k"] < 2048, sizes


def test_list_files_stream_into_ray_data_in_blocks(tmp_path, ray_local):
    """(Beside the resume test: one Ray start serves both.) Entries arrive in blocks of one
    ingest batch with their listing position; relative entries resolve to the list's folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from datagen.video.sources import SOURCE_POS, check_sources
    from stages.ingest import source_dataset

    (tmp_path / "list.txt").write_text("# corpus\n" + "".join(f"v/{i}.mp4\n" for i in range(150)))
    pq.write_table(pa.table({"uri": [f"s3://b/{i}.mp4" for i in range(70)]}), tmp_path / "list.parquet")
    sources = check_sources([str(tmp_path / "list.txt"), str(tmp_path / "list.parquet")], {})
    blocks = list(source_dataset(sources, 8).iter_batches(batch_size=None, batch_format="pyarrow"))
    rows = [r for b in blocks for r in b.to_pylist()]
    assert max(b.num_rows for b in blocks) == 8 and len(blocks) >= 220 // 8
    by_pos = {r[SOURCE_POS]: r["video_uri"] for r in rows}
    assert len(rows) == len(by_pos) == 220
    assert by_pos["0:0"] == str(tmp_path / "v" / "0.mp4") and by_pos["0:149"] == str(tmp_path / "v" / "149.mp4")
    assert by_pos["1:69"] == "s3://b/69.mp4"
