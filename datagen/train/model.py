"""The factorized diffusion transformer: text tokens + patch tokens of every frame, one full-attention stack.

A sample is a sequence [text (base, context) | frame 0 | frame 1 | ... | target]. Each frame's tokens
carry a role embedding (canvas, asset, control, target) and a condition flag: condition frames enter
clean, target frames noised (Emu Video's factorization), so one model covers text-to-image and every
image-conditioned task by masking which frames are conditions. The timestep embedding plus a learned
task embedding (Emu Edit) drive a shared adaLN modulation (PixArt's adaLN-single) of every block.
Positions: 3-axis RoPE (frame, row, column) on image tokens, learned positions on text tokens.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from datagen.train.presets import ModelConfig
from schemas.tasks import Role

ROLE_INDEX = {r: i for i, r in enumerate(Role)}  # canvas 0, asset 1, control 2, target 3


def rope_axes(head_dim: int) -> tuple[int, int, int]:
    """Split a head's channels over (frame, row, column), each even."""
    row = col = head_dim // 3 // 2 * 2
    return head_dim - row - col, row, col


def _axis_freqs(pos: torch.Tensor, dim: int, theta: float = 10000.0) -> torch.Tensor:
    inv = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=pos.device) / dim)
    return pos.float()[:, None] * inv[None]


def rope_angles(text_len: int, frames: int, rows: int, cols: int, head_dim: int, device) -> torch.Tensor:
    """Rotation angles [S, head_dim/2]; text tokens get angle 0 (their order comes from learned positions)."""
    f, y, x = torch.meshgrid(torch.arange(frames, device=device) + 1, torch.arange(rows, device=device),
                             torch.arange(cols, device=device), indexing="ij")
    d_f, d_y, d_x = rope_axes(head_dim)
    img = torch.cat([_axis_freqs(f.flatten(), d_f), _axis_freqs(y.flatten(), d_y), _axis_freqs(x.flatten(), d_x)], 1)
    return torch.cat([img.new_zeros(text_len, head_dim // 2), img], 0)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, S, D] rotated pairwise; computed in fp32 for precision at long positions."""
    xf = x.float().unflatten(-1, (-1, 2))
    x0, x1 = xf[..., 0], xf[..., 1]
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], -1)
    return out.flatten(-2).type_as(x)


def _rms(x: torch.Tensor, norm: nn.RMSNorm) -> torch.Tensor:
    """RMSNorm with its weight in the activation dtype: bf16 under autocast takes the fused kernel."""
    return F.rms_norm(x, norm.normalized_shape, norm.weight.to(x.dtype), norm.eps)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        # QK-norm keeps attention logits bounded in bf16 at large scale (SD3, ViT-22B)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6)
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6)

    def forward(self, x, cos, sin, mask):
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q = apply_rope(_rms(q, self.q_norm), cos, sin)
        k = apply_rope(_rms(k, self.k_norm), cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, s, d))


def modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.mod_bias = nn.Parameter(torch.zeros(6, dim))  # adaLN-single: per-block offset of the shared modulation

    def forward(self, x, mod, cos, sin, mask):
        shift1, scale1, gate1, shift2, scale2, gate2 = (mod + self.mod_bias).unbind(1)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1), cos, sin, mask)
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


def timestep_features(t: torch.Tensor, dim: int = 256) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1] (scaled by 1000, as DiT's integer timesteps)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], -1)


class FrameDiT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d, p, c = cfg.dim, cfg.patch, cfg.latent_channels
        self.patch_in = nn.Linear(c * p * p, d)
        self.text_in = nn.Sequential(nn.LayerNorm(cfg.text_dim), nn.Linear(cfg.text_dim, d))
        self.text_pos = nn.Parameter(torch.zeros(cfg.max_text_tokens, d))
        self.text_segment = nn.Embedding(2, d)  # 0 base prompt, 1 context prompt (UniReal's hierarchy)
        self.role = nn.Embedding(len(ROLE_INDEX), d)
        self.cond = nn.Embedding(2, d)  # 0 noised target, 1 clean condition
        self.t_embed = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.task = nn.Embedding(cfg.max_tasks, d)
        self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.blocks = nn.ModuleList(Block(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.mod_out = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.out = nn.Linear(d, c * p * p)
        self._init()

    def _init(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for emb in (self.text_segment, self.role, self.cond, self.task):
            nn.init.normal_(emb.weight, std=0.02)
        nn.init.normal_(self.text_pos, std=0.02)
        # adaLN-Zero: every block starts as the identity, the output as zero (DiT)
        for lin in (self.adaln[1], self.mod_out[1], self.out):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, latents, t, task, frame_role, frame_cond, frame_valid, text, text_mask, text_segment,
                has_padding: bool = True):
        """latents [B,F,C,h,w] (targets already noised) -> predicted velocity [B,F,C,h,w].

        t [B] in [0,1]; task [B]; frame_role/frame_cond/frame_valid [B,F]; text [B,L,text_dim] with
        text_mask/text_segment [B,L]. Invalid frames and text tokens are masked out of attention.
        `has_padding=False` promises every frame and text token is valid (the caller knows it from CPU masks):
        attention then runs without a mask, which lets scaled_dot_product_attention take FlashAttention.
        """
        b, f, c, h, w = latents.shape
        p = self.cfg.patch
        gh, gw = h // p, w // p
        tokens = latents.reshape(b, f, c, gh, p, gw, p).permute(0, 1, 3, 5, 2, 4, 6).reshape(b, f, gh * gw, c * p * p)
        x = self.patch_in(tokens) + (self.role(frame_role) + self.cond(frame_cond.long()))[:, :, None]
        x = x.flatten(1, 2)
        n_text = text.shape[1]
        txt = self.text_in(text) + self.text_pos[:n_text] + self.text_segment(text_segment)
        seq = torch.cat([txt.to(x.dtype), x], 1)
        mask = None
        if has_padding:
            mask = torch.cat([text_mask, frame_valid.repeat_interleave(gh * gw, 1)], 1)[:, None, None, :]
        cond = self.t_embed(timestep_features(t)) + self.task(task)
        mod = self.adaln(cond).view(b, 6, -1)
        angles = rope_angles(n_text, f, gh, gw, self.cfg.dim // self.cfg.heads, latents.device)
        cos, sin = angles.cos(), angles.sin()
        for blk in self.blocks:
            if self.cfg.grad_checkpointing and self.training:
                seq = checkpoint(blk, seq, mod, cos, sin, mask, use_reentrant=False)
            else:
                seq = blk(seq, mod, cos, sin, mask)
        shift, scale = self.mod_out(cond).chunk(2, -1)
        out = self.out(modulate(self.norm_out(seq[:, n_text:]), shift, scale))
        out = out.view(b, f, gh, gw, c, p, p).permute(0, 1, 4, 2, 5, 3, 6)
        return out.reshape(b, f, c, h, w)

    def flops_per_token(self) -> tuple[float, float]:
        """Training FLOPs (fwd+bwd = 6 x matmul params) for one text and one image token, attention excluded."""
        block = sum(m.weight.numel() for blk in self.blocks for m in blk.modules() if isinstance(m, nn.Linear))
        text = block + self.text_in[1].weight.numel()
        image = block + self.patch_in.weight.numel() + self.out.weight.numel()
        return 6.0 * text, 6.0 * image

    def attention_flops(self, seq_len_sq_sum: float) -> float:
        """Training FLOPs of QK^T and AV: 4*S^2*dim per layer forward, x3 with backward."""
        return 12.0 * self.cfg.depth * self.cfg.dim * seq_len_sq_sum
