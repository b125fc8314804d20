"""Each corruption makes `datagen validate` exit 1 with a line naming the shard and the problem."""
import io
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from typer.testing import CliRunner

from datagen.cli import app
from datagen.media import encode_image
from schemas.tasks import ImageKind

SHARD = "shards/object_insertion/000000.tar"


def rewrite(path, edit):
    """Rewrite a tar, passing (name, data) pairs through `edit` (None drops a member)."""
    with tarfile.open(path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            out = edit(name, data)
            if out is None:
                continue
            name, data = out
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def run_validate(root):
    res = CliRunner().invoke(app, ["validate", str(root)])
    return res.exit_code, res.stdout


def test_valid_dataset_exits_0(dataset):
    code, out = run_validate(dataset[0])
    assert code == 0, out


def test_truncated_tar(dataset):
    root, _ = dataset
    p = root / SHARD
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    code, out = run_validate(root)
    assert code == 1
    assert f"{SHARD}: truncated or unreadable tar" in out


def test_missing_member(dataset):
    root, _ = dataset
    rewrite(root / SHARD, lambda n, d: None if n.endswith(".in1.jpg") and "_p0000_" in n else (n, d))
    code, out = run_validate(root)
    assert code == 1
    assert any(SHARD in line and "missing member" in line and "in1.jpg" in line for line in out.splitlines())


def test_bad_json(dataset):
    root, _ = dataset
    rewrite(root / SHARD, lambda n, d: (n, d[:-7]) if n.endswith(".json") and "_p0001_" in n else (n, d))
    code, out = run_validate(root)
    assert code == 1
    assert any(SHARD in line and "not valid JSON" in line for line in out.splitlines())


def test_json_against_schema(dataset):
    root, _ = dataset
    rewrite(root / SHARD, lambda n, d: (n, d.replace(b'"role": "canvas"', b'"role": "wizard"'))
            if n.endswith(".json") else (n, d))
    code, out = run_validate(root)
    assert code == 1
    assert any(SHARD in line and "violates the schema" in line for line in out.splitlines())


def test_undecodable_image(dataset):
    root, _ = dataset
    rewrite(root / SHARD, lambda n, d: (n, b"\xff\xd8garbage" + d[200:]) if n.endswith("target.jpg") else (n, d))
    code, out = run_validate(root)
    assert code == 1
    assert any(SHARD in line and "does not decode" in line for line in out.splitlines())


def test_wrong_label_dtype(dataset):
    root, _ = dataset
    eight_bit = encode_image(np.zeros((48, 64), np.uint8), ImageKind.mask)
    shard = "shards/depth_estimation/000000.tar"
    rewrite(root / shard, lambda n, d: (n, eight_bit) if n.endswith("target.png") else (n, d))
    code, out = run_validate(root)
    assert code == 1
    assert any(shard in line and "mode L but a depth16 member" in line for line in out.splitlines())


def test_duplicate_key_across_shards(dataset):
    root, _ = dataset
    src = root / "shards/object_insertion/000001.tar"
    with tarfile.open(root / SHARD) as t:
        first_key = t.getnames()[0].split(".")[0]
    # append a copy of a sample of shard 0 into shard 1
    with tarfile.open(root / SHARD) as t:
        dup = [(m.name, t.extractfile(m).read()) for m in t if m.name.startswith(first_key + ".")]
    with tarfile.open(src) as t:
        keep = [(m.name, t.extractfile(m).read()) for m in t]
    with tarfile.open(src, "w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in keep + dup:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    code, out = run_validate(root)
    assert code == 1
    assert f"duplicate key {first_key}" in out
    assert "shards/object_insertion/000001.tar" in out


def test_shard_missing_from_disk(dataset):
    root, _ = dataset
    (root / SHARD).unlink()
    code, out = run_validate(root)
    assert code == 1
    assert f"{SHARD}: listed in the manifest" in out and "but missing" in out


def test_extra_shard_not_in_manifest(dataset):
    root, _ = dataset
    extra = "shards/object_insertion/000099.tar"
    shutil.copy(root / SHARD, root / extra)
    code, out = run_validate(root)
    assert code == 1
    assert f"{extra}: shard is not in the manifest" in out


def test_not_a_dataset(tmp_path):
    code, out = run_validate(tmp_path / "nope")
    assert code == 1
    assert "no such dataset directory" in out


KILL_SCRIPT = """
import os, sys
from datagen.io.shards import DatasetWriter, ShardLimits
from datagen.io.synthetic import make_sample
w = DatasetWriter(sys.argv[1], limits=ShardLimits(max_samples=5))
for p in range(8):       # shard 000000 completes (5), shard 000001 is half written
    w.add(make_sample(1, pair=p))
print("ready", flush=True)
os.kill(os.getpid(), 9)  # SIGKILL: no cleanup code runs
"""


def test_killed_writer_leaves_no_partial_shard_under_final_name(tmp_path):
    out = tmp_path / "ds"
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(out)], capture_output=True, text=True)
    assert proc.returncode == -9 and "ready" in proc.stdout
    d = out / "shards/instruction_edit"
    assert [p.name for p in d.glob("*.tar")] == ["000000.tar"]
    assert len(list(d.glob("000001.tar.tmp-*"))) == 1  # the partial one exists only under its temp name
    code, msg = run_validate(out)
    assert code == 0, msg  # a reader sees only the complete shard


def test_exception_mid_write_aborts_open_shards(tmp_path):
    from datagen.io.shards import DatasetWriter
    from datagen.io.synthetic import make_sample

    with pytest.raises(RuntimeError):
        with DatasetWriter(str(tmp_path)) as w:
            w.add(make_sample(1))
            raise RuntimeError("worker died")
    assert not list(tmp_path.rglob("*.tar*"))
