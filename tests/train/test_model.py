"""The transformer: shapes, padding that cannot leak, zero-initialised output, and checkpointing."""
import torch

from datagen.train.model import FrameDiT, rope_axes
from datagen.train.presets import PRESETS, model_config


def _inputs(b=2, f=3, c=4, h=8, w=8, L=5, text_dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        latents=torch.randn(b, f, c, h, w, generator=g), t=torch.rand(b, generator=g), task=torch.tensor([1, 4][:b]),
        frame_role=torch.tensor([[0, 2, 3]] * b)[:, :f], frame_cond=torch.tensor([[True, True, False]] * b)[:, :f],
        frame_valid=torch.ones(b, f, dtype=torch.bool), text=torch.randn(b, L, text_dim, generator=g),
        text_mask=torch.ones(b, L, dtype=torch.bool), text_segment=torch.tensor([[0, 0, 0, 1, 1]] * b),
    )


def _model(**kw):
    torch.manual_seed(0)
    m = FrameDiT(model_config("tiny", latent_channels=4, text_dim=16, **kw))
    for p in m.parameters():  # leave adaLN-zero so the output depends on the inputs
        torch.nn.init.normal_(p, std=0.05)
    return m


def test_output_shape_and_zero_init():
    x = _inputs()
    fresh = FrameDiT(model_config("tiny", latent_channels=4, text_dim=16))
    out = fresh(**x)
    assert out.shape == x["latents"].shape
    assert torch.count_nonzero(out) == 0  # adaLN-Zero: the untrained model predicts zero velocity


def test_padding_frames_and_text_do_not_change_valid_outputs():
    m = _model().eval()
    x = _inputs(f=2)
    x["frame_role"], x["frame_cond"] = torch.tensor([[2, 3]] * 2), torch.tensor([[True, False]] * 2)
    ref = m(**x)
    padded = dict(x)
    padded["latents"] = torch.cat([x["latents"], 100 * torch.randn(2, 1, 4, 8, 8)], 1)
    padded["frame_role"] = torch.cat([x["frame_role"], torch.zeros(2, 1, dtype=torch.long)], 1)
    padded["frame_cond"] = torch.cat([x["frame_cond"], torch.ones(2, 1, dtype=torch.bool)], 1)
    padded["frame_valid"] = torch.tensor([[True, True, False]] * 2)
    padded["text"] = torch.cat([x["text"], 50 * torch.randn(2, 2, 16)], 1)
    padded["text_mask"] = torch.cat([x["text_mask"], torch.zeros(2, 2, dtype=torch.bool)], 1)
    padded["text_segment"] = torch.cat([x["text_segment"], torch.ones(2, 2, dtype=torch.long)], 1)
    out = m(**padded)
    assert torch.allclose(out[:, :2], ref, atol=1e-5)


def test_conditions_reach_the_target_frame():
    m = _model().eval()
    x = _inputs()
    ref = m(**x)[:, 2]
    changed = dict(x, latents=x["latents"].clone())
    changed["latents"][:, 0] += 1.0  # the canvas
    assert not torch.allclose(m(**changed)[:, 2], ref, atol=1e-4)
    assert not torch.allclose(m(**dict(x, task=torch.tensor([2, 5])))[:, 2], ref, atol=1e-4)
    assert not torch.allclose(m(**dict(x, frame_cond=torch.zeros(2, 3, dtype=torch.bool)))[:, 2], ref, atol=1e-4)


def test_gradient_checkpointing_gives_the_same_gradients():
    x = _inputs()
    grads = []
    for ckpt in (False, True):
        m = _model(grad_checkpointing=ckpt).train()
        m(**x).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_presets_and_rope_split():
    assert set(PRESETS) >= {"tiny", "base", "xl", "1b"}
    for name in PRESETS:
        cfg = model_config(name)
        assert cfg.dim % cfg.heads == 0
        axes = rope_axes(cfg.dim // cfg.heads)
        assert sum(axes) == cfg.dim // cfg.heads and all(a % 2 == 0 and a > 0 for a in axes)
    with torch.device("meta"):
        big = FrameDiT(model_config("1b"))
    assert 0.8e9 < sum(p.numel() for p in big.parameters()) < 1.2e9


def test_unmasked_fast_path_agrees_with_the_masked_one():
    """Where nothing is padded both paths apply: no mask (FlashAttention-eligible) must give the masked result."""
    m = _model().eval()
    x = _inputs()
    masked, fast = m(**x, has_padding=True), m(**x, has_padding=False)
    assert torch.allclose(masked, fast, atol=1e-5)
    grads = []
    for has_padding in (True, False):
        m.zero_grad()
        m(**x, has_padding=has_padding).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)
