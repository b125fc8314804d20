"""`datagen sample` and `datagen train` through the CLI: every task kind gives an image of the right size and kind."""
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from datagen import UserError
from datagen.cli import app
from datagen.config import to_dict
from datagen.io.synthetic import make_sample
from datagen.media import decode_image
from datagen.train.sample import sample_cli
from schemas.tasks import TASK_BY_ID, ImageKind
from tests.train.conftest import tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_models, small_dataset):
    """Two steps through `datagen train --config`, with a square and a wide bucket."""
    root = tmp_path_factory.mktemp("trained")
    cfg = tiny_config(root / "run", tiny_models, small_dataset, steps=2)
    cfg.data.buckets_px = [[32, 32], [32, 64]]
    (root / "train.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    result = CliRunner().invoke(app, ["train", "--config", str(root / "train.yaml"), "--set", "sample.steps=3"])
    assert result.exit_code == 0, result.output
    return root / "run" / "checkpoints" / "step_00000002"


def _inputs(tmp_path: Path, task_id: int, width: int) -> list[str]:
    s = make_sample(task_id, width=width, height=32)
    args = []
    for ref in s.record.prompt.images:
        path = tmp_path / ref.member
        path.write_bytes(s.media[ref.member])
        args.append(f"{ref.role.value}={path}")
    return args


@pytest.mark.parametrize("task_id,width", [(0, 32), (1, 64), (2, 32), (3, 32), (4, 64), (5, 32), (6, 32), (7, 32),
                                           (8, 64)])
def test_every_task_kind_samples_the_right_size(tmp_path, trained, task_id, width):
    out = sample_cli(trained, TASK_BY_ID[task_id].name, "a red ball", _inputs(tmp_path, task_id, width),
                     tmp_path / "out")
    kind = TASK_BY_ID[task_id].target
    image = decode_image(out.read_bytes(), kind)
    expect_w = 32 if task_id == 0 else width  # text-to-image takes the first bucket, others the input's
    assert image.shape[:2] == (32, expect_w)
    assert image.dtype == (np.uint16 if kind is ImageKind.depth16 else np.uint8)
    if kind in (ImageKind.edge, ImageKind.mask):
        assert set(np.unique(image)) <= {0, 255}


def test_cli_sample_and_bad_inputs(tmp_path, trained):
    runner = CliRunner()
    args = ["sample", "--checkpoint", str(trained), "--task", "instruction_edit", "--prompt", "make it dusk",
            "--out", str(tmp_path / "o")]
    ok = runner.invoke(app, args + ["--image", _inputs(tmp_path, 1, 32)[0]])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "o" / "target.jpg").is_file()
    missing = runner.invoke(app, args)
    assert missing.exit_code == 2 and "takes 1 input image" in missing.output
    wrong_role = runner.invoke(app, args + ["--image", f"control={tmp_path / 'in0.jpg'}"])
    assert wrong_role.exit_code == 2 and "expects canvas=PATH" in wrong_role.output
    with pytest.raises(UserError, match="unknown task"):
        sample_cli(trained, "no_such_task", "x", [], tmp_path / "o")


def test_profiles_validate_and_bad_configs_are_one_line_errors(tmp_path, tiny_models, small_dataset):
    from datagen.config import from_dict, load_yaml
    from datagen.train.train import TrainConfig

    profiles = sorted((Path(__file__).parents[2] / "datagen" / "profiles").glob("train_*.yaml"))
    assert len(profiles) >= 2
    for p in profiles:
        from_dict(TrainConfig, load_yaml(p))
    cfg = tiny_config(tmp_path / "run", tiny_models, small_dataset)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    runner = CliRunner()
    bad_key = runner.invoke(app, ["train", "--config", str(tmp_path / "c.yaml"), "--set", "data.nope=1"])
    assert bad_key.exit_code == 2 and "data.nope" in bad_key.output
    bad_bucket = runner.invoke(app, ["train", "--config", str(tmp_path / "c.yaml"), "--set", "data.buckets_px=[[30,32]]"])
    assert bad_bucket.exit_code == 2 and "not a multiple of 8" in bad_bucket.output
    no_data = runner.invoke(app, ["train", "--config", str(tmp_path / "c.yaml"), "--set", f"data.datasets=[{tmp_path}/x]"])
    assert no_data.exit_code == 2 and "no shards found" in no_data.output


def test_chain_feeds_each_image_to_the_next_link(tmp_path, trained):
    """Emu Video's factorization with one model: text -> image, that image -> an edit, the edit -> its depth."""
    from datagen.media import encode_image
    from datagen.train.sample import Sampler
    from schemas.tasks import task

    out = tmp_path / "chain"
    result = CliRunner().invoke(app, ["sample", "--checkpoint", str(trained), "--prompt", "a red ball", "--out", str(out),
                                      "--chain", "instruction_edit=make it dusk", "--chain", "depth_estimation="])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["0_text_to_image.jpg", "1_instruction_edit.jpg",
                                                     "2_depth_estimation.png"]
    sampler = Sampler(trained)
    edit = task("instruction_edit")
    first = sampler.sample(task("text_to_image"), "a red ball", [])
    again = sampler.sample(edit, "make it dusk", [(edit.inputs[0], first)])
    assert (out / "1_instruction_edit.jpg").read_bytes() == encode_image(again, ImageKind.rgb)  # the link's canvas
    other = sampler.sample(edit, "make it dusk", [(edit.inputs[0], np.zeros_like(first))])
    assert not np.array_equal(other, again)  # ... and the canvas conditions the edit
    assert decode_image((out / "2_depth_estimation.png").read_bytes(), ImageKind.depth16).dtype == np.uint16
    bad = CliRunner().invoke(app, ["sample", "--checkpoint", str(trained), "--prompt", "x", "--out", str(out),
                                   "--chain", "multi_object_customization=two cats"])
    assert bad.exit_code == 2 and "takes one canvas" in bad.output


def test_train_cpu_profile_builds_its_tiny_encoders_once(tmp_path, monkeypatch):
    """`datagen train --config train_cpu` after `make demo`: no hand step, one line saying what it built."""
    from tests.train.conftest import write_dataset

    monkeypatch.chdir(tmp_path)
    write_dataset(tmp_path / "demo_out", {1: 2, 4: 2})  # where the profile looks: the demo's output
    args = ["train", "--config", "train_cpu", "--set", "steps=1", "--set", "data.num_workers=0",
            "--set", "sample.every_steps=0", "--set", "data.buckets_px=[[32,32]]"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    built = [line for line in first.output.splitlines() if line.startswith("built tiny random encoders")]
    assert built == ["built tiny random encoders at runs/tiny/t5 and runs/tiny/vae (model.tiny_encoders: a smoke "
                     "run, not real weights)"]
    assert (tmp_path / "runs" / "tiny-cpu" / "checkpoints" / "step_00000001").is_dir()
    again = CliRunner().invoke(app, args + ["--set", "run_dir=runs/again"])
    assert again.exit_code == 0, again.output
    assert "built tiny" not in again.output  # they exist now: loaded, not rebuilt
    typo = CliRunner().invoke(app, args + ["--set", "model.tiny_encoders=false", "--set", "model.vae=runs/tiny/vea"])
    assert typo.exit_code == 2 and "cannot load VAE 'runs/tiny/vea'" in typo.output
