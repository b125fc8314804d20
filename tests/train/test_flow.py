"""Pins the flow-matching convention: t=0 is data, t=1 is noise, the target is noise - data."""
import torch

from datagen.train import flow


def test_ends_of_the_path():
    x0, noise = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    assert torch.equal(flow.interpolate(x0, noise, torch.zeros(2)), x0)
    assert torch.equal(flow.interpolate(x0, noise, torch.ones(2)), noise)


def test_target_is_the_time_derivative_of_the_path():
    x0, noise = torch.randn(3, 4, 2, 2, dtype=torch.float64), torch.randn(3, 4, 2, 2, dtype=torch.float64)
    t, eps = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64), 1e-6
    numeric = (flow.interpolate(x0, noise, t + eps) - flow.interpolate(x0, noise, t - eps)) / (2 * eps)
    assert torch.allclose(numeric, flow.velocity(x0, noise), atol=1e-6)
    assert torch.allclose(flow.velocity(x0, noise), noise - x0)


def test_sampling_runs_from_noise_to_data():
    ts = flow.timesteps(10)
    assert ts[0] == 1.0 and ts[-1] == 0.0 and bool((ts[1:] < ts[:-1]).all())
    shifted = flow.timesteps(10, shift=3.0)
    assert shifted[0] == 1.0 and shifted[-1] == 0.0 and bool((shifted[1:-1] > ts[1:-1]).all())
    # with the exact velocity one Euler step from pure noise lands on the data
    x0, noise = torch.randn(2, 4), torch.randn(2, 4)
    assert torch.allclose(flow.euler_step(noise, flow.velocity(x0, noise), 1.0, 0.0), x0, atol=1e-6)


def test_logit_normal_timesteps():
    g = torch.Generator().manual_seed(0)
    t = flow.sample_t(20000, flow.FlowConfig(logit_mean=0.0, logit_std=1.0), g, "cpu")
    assert bool((t > 0).all() and (t < 1).all())
    assert abs(float(t.median()) - 0.5) < 0.02
    # logit-normal puts less mass near the ends than uniform
    assert float(((t < 0.1) | (t > 0.9)).float().mean()) < 0.1
    shifted = flow.sample_t(20000, flow.FlowConfig(logit_mean=1.0), g, "cpu")
    assert float(shifted.median()) > 0.7  # positive mean -> noisier timesteps
