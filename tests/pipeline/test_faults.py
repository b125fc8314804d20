"""Faults during real runs: the final key set equals an uninterrupted run's, 0 lost, 0 duplicated.

One Ray instance and one caption service (a real HTTP server speaking the OpenAI chat API,
tests/caption/fake_openai.py) for the module; the caption stage runs on the `vllm-server`
backend. Events are ordered by state, never by sleeps: the service's own request counter,
the pid behind a connection, marker files, the objects in the store.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from functools import partial

import pytest
from datagen.config import from_dict, to_dict
from datagen.io.storage import Location
from datagen.io.tables import read_manifest
from datagen.io.validate import validate
from datagen.pipeline.config import PipelineConfig, load_config
from datagen.pipeline.run import run_pipeline
from tests.caption.fake_openai import DROP, HANG, FakeOpenAI
from tests.conftest import free_port
from tests.pipeline.conftest import REAL_VIDEOS
from tests.pipeline.dying import DyingSink, pid_of_client
from tests.pipeline.outage import Outage

pytestmark = pytest.mark.slow

ANSWER = json.dumps({"caption_a": "a scene", "caption_b": "the scene later", "differences": ["time passed"],
                     "instruction": "let time pass", "edit_type": "other", "objects": []})
CAPTION_TASKS = ("text_to_image", "instruction_edit")


class CaptionService:
    """What the service does with request number n (its own counter, over the whole module)."""

    def __init__(self):
        self.faults: dict[int, int] = {}  # request number -> 500, DROP or HANG
        self.kill_at: int | None = None  # SIGKILL the process that sends this request
        self.killed: list[int] = []
        self.server = FakeOpenAI(self.script, lambda body: "all")
        self.server.on_request = self.on_request

    def script(self, body: dict, n: int) -> tuple[int, str]:
        status = self.faults.get(n, 200)
        return status, ANSWER if status == 200 else "injected fault"

    def on_request(self, n: int, client_port: int) -> None:
        if n == self.kill_at:
            pid = pid_of_client(client_port)
            assert pid is not None and pid != os.getpid()
            os.kill(pid, signal.SIGKILL)
            self.killed.append(pid)

    def fail_next(self, count: int) -> range:
        """The next `count` requests fail, cycling through HTTP 500, a timeout and a dropped connection."""
        start = self.server.requests + 1
        window = range(start, start + count)
        self.faults = {n: (500, HANG, DROP)[i % 3] for i, n in enumerate(window)}
        return window


@pytest.fixture(scope="module")
def service():
    svc = CaptionService()
    with svc.server:
        yield svc


@pytest.fixture(scope="module")
def store():
    """A real S3 API server (moto) behind an Outage proxy; the run's workers talk to the
    proxy, the test looks at the bucket directly."""
    pytest.importorskip("moto.server")
    import boto3

    moto_port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = Outage(moto_port, free_port())
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}", "AWS_MAX_ATTEMPTS": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # before Ray starts: its workers inherit them
    try:
        direct = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{moto_port}")
        deadline = time.monotonic() + 30
        while True:  # until the server answers
            try:
                direct.create_bucket(Bucket="faults")
                break
            except Exception:
                assert proc.poll() is None and time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.1)
        proxy.start()
        yield proxy
    finally:
        proxy.stop()
        proc.terminate()
        proc.wait(10)
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()  # its instances point at this proxy, gone now


@pytest.fixture(scope="module")
def cluster(store):
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def config_dict(service: CaptionService, **sections) -> dict:
    """The CPU profile, caption only (on the service), two caption tasks, small frames."""
    cfg = to_dict(load_config("cpu"))
    cfg["labels"] = ["caption"]
    cfg["caption"].update(backend="vllm-server", endpoints=[service.server.url], model="tiny-vlm", revision="r1",
                          max_image_side_px=112, max_objects=0, max_retries=2, retry_backoff_s=0.05,
                          request_timeout_s=1.0)
    cfg["pairs"].update(short_side_px=128, max_long_side_px=256)
    cfg["pairs"]["pairing"].update(max_pairs_per_video=2)
    cfg["assemble"]["tasks"] = {t: float(t in CAPTION_TASKS) for t in cfg["assemble"]["tasks"]}
    cfg["write"].update(min_rows_per_write=2, storage_backoff_s=0.05)
    for name, values in sections.items():
        cfg[name].update(values)
    return cfg


def run(service, out, **sections):
    return run_pipeline(from_dict(PipelineConfig, config_dict(service, **sections)), REAL_VIDEOS, str(out))


def keys_of(out) -> list[str]:
    return sorted(read_manifest(Location.parse(str(out))).column("key").to_pylist())


def assert_complete(out, reference: list[str]) -> None:
    keys = keys_of(out)
    assert len(keys) == len(set(keys)), "a key was written twice"
    assert keys == reference, f"lost {sorted(set(reference) - set(keys))}"
    report = validate(str(out))
    assert report.ok, report.problems


@pytest.fixture(scope="module")
def reference(service, cluster) -> list[str]:
    """The keys of an uninterrupted run: the same stages called one after the other, no Ray.
    (Every test asks for it, so the module's Ray starts after the store's environment is set.)"""
    from schemas import columns as C
    from stages.assemble import AssembleStage
    from stages.caption import CaptionStage
    from stages.ingest import IngestStage, source_rows
    from stages.pairs import PairsStage
    from stages.shots import ShotsStage

    cfg = from_dict(PipelineConfig, config_dict(service))
    batch = C.rows_to_batch(source_rows(REAL_VIDEOS))
    for stage in (IngestStage(cfg.ingest), ShotsStage(cfg.shots), PairsStage(cfg.pairs), CaptionStage(cfg.caption),
                  AssembleStage(cfg.assemble)):
        batch = stage(batch)
    assert not any(C.is_failure_mark(f) for f in batch[C.FAILED_STAGE])
    keys = sorted(k for ks in batch[C.SAMPLE_KEYS] for k in ks)
    assert {k.rsplit("_t", 1)[1] for k in keys} == {"00", "01"} and len(keys) == 12  # 6 pairs, 2 samples each
    return keys


def test_caption_service_outage_is_left_pending_and_the_rerun_fills_exactly_the_gap(tmp_path, service, reference):
    out = tmp_path / "ds"
    # 12 requests: the first caption batch (at most 4 pairs) fails all 3 attempts, at least 2 of the 6 pairs pass
    window = service.fail_next(12)
    first = run(service, out)
    assert service.server.requests >= window.stop - 1  # the whole window was served
    pending = first.stats["outcome"]["pending_retry"]
    assert set(pending) == {"backend_error"} and pending["backend_error"] >= 1
    committed = keys_of(out)
    assert 0 < len(committed) < len(reference) and set(committed) < set(reference)
    assert len(reference) - len(committed) == 2 * pending["backend_error"]  # two samples per pending pair

    service.faults = {}
    second = run(service, out)
    assert_complete(out, reference)
    assert second.stats["outcome"]["pending_retry"] == {}
    assert second.stats["outcome"]["committed_samples"] == len(reference)
    # the first run's backend_error rows stay in the failures log; the rerun fixed them, so they are no drops
    caption = second.stats["stages"]["caption"]
    assert caption["dropped"] == {} and caption["out"] == caption["in"], caption


def test_workers_killed_mid_batch_and_mid_write_lose_and_duplicate_nothing(tmp_path, service, reference, monkeypatch):
    """One pair per block, two per write, one sample per shard. The caption actor is SIGKILLed
    while a batch is in flight (Ray restarts it, max_restarts) and three write workers kill
    themselves after committing a shard, before their commit record (Ray retries the task)."""
    markers = tmp_path / "kills"
    markers.mkdir()
    monkeypatch.setattr("datagen.pipeline.run.DatasetSink", partial(DyingSink, marker_dir=str(markers), kills=3))
    killed_before = len(service.killed)
    service.kill_at = service.server.requests + 2
    try:
        summary = run(service, tmp_path / "ds", assemble={"resources": {"batch_size": 1}},
                      write={"max_samples_per_shard": 1})
    finally:
        service.kill_at = None
    assert len(service.killed) == killed_before + 1 and len(list(markers.iterdir())) == 3  # every kill happened
    assert_complete(tmp_path / "ds", reference)
    assert summary.stats["outcome"]["pending_retry"] == {}
    assert not list((tmp_path / "ds").rglob("*.tmp-*"))  # the dead attempts' files were rolled back


def test_an_actor_that_keeps_dying_ends_the_run_naming_its_stage(tmp_path, service, reference):
    from datagen import UserError

    killed_before = len(service.killed)
    service.kill_at = service.server.requests + 1
    try:
        with pytest.raises(UserError, match=r"stage caption: an actor died after 0 restart\(s\) \(ray.max_actor_restarts\)"):
            run(service, tmp_path / "ds", ray={"max_actor_restarts": 0})
    finally:
        service.kill_at = None
    assert len(service.killed) == killed_before + 1


def test_a_model_that_never_loads_ends_the_run_naming_its_stage(tmp_path, service, reference):
    """The caption model's config.json is a FIFO nobody writes: loading blocks forever, as on a stuck mount."""
    from datagen import UserError

    model = tmp_path / "model"
    model.mkdir()
    os.mkfifo(model / "config.json")
    # the driver's pre-flight meets it first; either way the run ends naming the stage and the bound
    with pytest.raises(UserError, match=r"stage caption: its (actors did not start|model did not load) within 5 s "
                                        r"\(ray.actor_start_timeout_s\)"):
        run(service, tmp_path / "ds", caption={"backend": "transformers", "model": str(model), "device": "cpu"},
            ray={"actor_start_timeout_s": 5})


def test_full_disk_stops_with_one_message_and_the_rerun_completes(tmp_path, service, reference):
    from datagen.io.faults import StorageFailed

    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
        filler = mnt / "filler"
        filler.write_bytes(b"\0" * (free - 100 * 1024))  # room for about half of the dataset
        out = mnt / "ds"
        with pytest.raises(StorageFailed, match="is full .*free space, then run the same command again"):
            run(service, out)
        committed = keys_of(out)
        assert len(committed) < len(reference) and set(committed) <= set(reference)
        filler.unlink()
        run(service, out)
        assert_complete(out, reference)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_object_store_down_mid_run_stops_with_one_message_and_the_rerun_completes(store, service, reference):
    """The store goes down right after the first commit record's upload starts, and stays
    down: the writes retry, then the run stops; the store comes back and the rerun completes."""
    import s3fs

    from datagen.io.faults import StorageFailed

    out = "s3://faults/ds"
    store.down_after = lambda method, path: method == "PUT" and "/progress/" in path
    with pytest.raises(StorageFailed, match="failed 2 times .*run the same command again when the storage is back"):
        run(service, out, write={"storage_retries": 1, "min_rows_per_write": 6})
    assert store.stopped.is_set()
    store.start()
    s3fs.S3FileSystem.clear_instance_cache()  # this process keeps listings cached; a new process would not
    run(service, out, write={"min_rows_per_write": 6})
    assert_complete(out, reference)


def test_ctrl_c_stops_within_seconds_and_the_same_command_resumes(tmp_path, service, reference, cluster):
    """SIGINT to this very process once the first write has committed (the state of the output)."""
    out = tmp_path / "ds"
    sent: list[float] = []
    running = threading.Event()

    def press_ctrl_c() -> None:
        while running.is_set() and not list((out / "progress").glob("*commit.parquet")):
            time.sleep(0.02)
        if running.is_set():
            sent.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGINT)

    running.set()
    watcher = threading.Thread(target=press_ctrl_c, daemon=True)
    watcher.start()
    with pytest.raises(KeyboardInterrupt):  # the run did not finish on its own
        try:
            run(service, out, write={"min_rows_per_write": 1})
        finally:
            running.clear()
    stopped_s = time.monotonic() - sent[0]
    watcher.join()
    assert stopped_s < 10, f"took {stopped_s:.1f} s to stop"
    committed = keys_of(out)
    assert committed and len(committed) == len(set(committed)) and set(committed) <= set(reference)
    summary = run(service, out)
    assert summary.resumed
    assert_complete(out, reference)

