"""The caption section of a YAML config validates into CaptionConfig, errors naming the bad key."""
import pytest

from datagen import UserError
from datagen.config import from_dict
from stages.caption import CaptionConfig


def test_yaml_data_becomes_a_caption_config():
    cfg = from_dict(CaptionConfig, {
        "backend": "vllm-server", "model": "Qwen/Qwen2.5-VL-7B-Instruct",
        "endpoints": ["http://gpu-0:8000/v1", "http://gpu-1:8000/v1"], "requests_in_flight": 64,
        "resources": {"num_cpus": 1, "num_gpus": 0, "batch_size": 128, "concurrency": 2},
    })
    assert cfg.endpoints[1] == "http://gpu-1:8000/v1" and cfg.resources.batch_size == 128


@pytest.mark.parametrize("data, key", [
    ({"backend": "openai"}, "backend"),
    ({"box_units": "percent"}, "box_units"),
    ({"max_retries": "two"}, "max_retries"),
    ({"endpoint": "http://x"}, "endpoint"),
    ({"max_retries": -1}, "max_retries"),
    ({"requests_in_flight": 0}, "requests_in_flight"),
])
def test_bad_keys_and_values_are_user_errors_naming_the_key(data, key):
    with pytest.raises(UserError, match=key):
        from_dict(CaptionConfig, data, "caption")
