"""A PyTorch implementation of fmnist-ldm-v1 (diffusers' UNet2DConditionModel and AutoencoderKL decoder for
this config), PEFT-style LoRA layers and the LCD-LoRA step, written for bench/ only: it is the reference that
lcdkit's speed and memory are compared with (issue 8). It needs nothing beyond Debian's python3-torch.

Parameter names follow diffusers, so the model's safetensors load strictly. `check_golden.py` shows the
outputs equal the genuine diffusers/PEFT golden vectors in ../shared/golden.
"""
import json
import math
import struct

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------------------
# safetensors (little-endian header length, JSON header, raw data), without the safetensors package.
_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32}


def read_safetensors(path):
    """Every tensor of a safetensors file, read one at a time (a Stable Diffusion UNet is 3.4 GB in float32)."""
    out = {}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        start = 8 + n
        for key, info in header.items():
            if key == "__metadata__":
                continue
            a, b = info["data_offsets"]
            f.seek(start + a)
            t = torch.frombuffer(bytearray(f.read(b - a)), dtype=_DTYPES[info["dtype"]]) if b > a else torch.empty(0)
            out[key] = t.reshape(info["shape"])
    return out


# ---------------------------------------------------------------------------------------------------------
# Building blocks (diffusers names).
class ResnetBlock2D(nn.Module):
    def __init__(self, cin, cout, temb, groups=32, eps=1e-5):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        if temb:
            self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb=None):
        h = self.conv1(F.silu(self.norm1(x)))
        if temb is not None:
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.conv_shortcut(x) if self.conv_shortcut is not None else x) + h


class Attention(nn.Module):
    def __init__(self, dim, cross_dim, heads, head_dim, bias):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, heads * head_dim, bias=bias)
        self.to_k = nn.Linear(cross_dim or dim, heads * head_dim, bias=bias)
        self.to_v = nn.Linear(cross_dim or dim, heads * head_dim, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(heads * head_dim, dim)])

    def forward(self, x, context=None):
        kv = x if context is None else context
        b, n, _ = x.shape
        split = lambda t: t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2)
        q, k, v = split(self.to_q(x)), split(self.to_k(kv)), split(self.to_v(kv))
        w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        return self.to_out[0]((w @ v).transpose(1, 2).reshape(b, n, -1))


class GEGLU(nn.Module):
    def __init__(self, dim, inner):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x):
        h, gate = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, 4 * dim), nn.Identity(), nn.Linear(4 * dim, dim)])

    def forward(self, x):
        return self.net[2](self.net[0](x))


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, heads, cross_dim):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn1 = Attention(dim, None, heads, dim // heads, False)
        self.attn2 = Attention(dim, cross_dim, heads, dim // heads, False)
        self.ff = FeedForward(dim)

    def forward(self, x, context):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class Transformer2DModel(nn.Module):
    def __init__(self, channels, heads, cross_dim, groups=32, linear_projection=False):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.linear_projection = linear_projection
        make = (lambda: nn.Linear(channels, channels)) if linear_projection else (lambda: nn.Conv2d(channels, channels, 1))
        self.proj_in = make()
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(channels, heads, cross_dim)])
        self.proj_out = make()

    def forward(self, x, context):
        b, c, h, w = x.shape
        t = self.norm(x)
        if self.linear_projection:  # SD2.x: tokens first, then a linear projection
            t = self.proj_in(t.permute(0, 2, 3, 1).reshape(b, h * w, c))
        else:  # SD1.x and fmnist-ldm-v1: a 1x1 convolution, then tokens
            t = self.proj_in(t).permute(0, 2, 3, 1).reshape(b, h * w, c)
        t = self.transformer_blocks[0](t, context)
        if self.linear_projection:
            return self.proj_out(t).reshape(b, h, w, c).permute(0, 3, 1, 2) + x
        return self.proj_out(t.reshape(b, h, w, c).permute(0, 3, 1, 2)) + x


class Downsample2D(nn.Module):
    def __init__(self, c, padding=1):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=padding)

    def forward(self, x):
        return self.conv(x)


class Upsample2D(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def timestep_embedding(t, dim):
    """diffusers' get_timestep_embedding with flip_sin_to_cos=True, downscale_freq_shift=0."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    arg = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, cin, dim):
        super().__init__()
        self.linear_1, self.linear_2 = nn.Linear(cin, dim), nn.Linear(dim, dim)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


# ---------------------------------------------------------------------------------------------------------
class UNet(nn.Module):
    """UNet2DConditionModel for the configs lcdkit supports: CrossAttnDownBlock2D / DownBlock2D and
    UpBlock2D / CrossAttnUpBlock2D per the config's block types, the cross-attention mid block, heads per block
    (num_attention_heads, or diffusers' misnamed attention_head_dim), 1x1-conv or linear projections
    (fmnist-ldm-v1, SD1.x, SD2.x)."""

    def __init__(self, cfg):
        super().__init__()
        ch, L = cfg["block_out_channels"], cfg["layers_per_block"]
        cross, groups, eps = cfg["cross_attention_dim"], cfg["norm_num_groups"], cfg["norm_eps"]
        heads = cfg.get("num_attention_heads") or cfg.get("attention_head_dim", 8)
        heads = heads if isinstance(heads, list) else [heads] * len(ch)
        linear = cfg.get("use_linear_projection", False)
        down_attn = [t == "CrossAttnDownBlock2D" for t in cfg["down_block_types"]]
        up_attn = [t == "CrossAttnUpBlock2D" for t in cfg["up_block_types"]]
        temb = 4 * ch[0]
        self.ch0 = ch[0]
        self.conv_in = nn.Conv2d(cfg["in_channels"], ch[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], temb)
        self.down_blocks = nn.ModuleList()
        cin = ch[0]
        for i, cout in enumerate(ch):
            blk = nn.Module()
            blk.resnets = nn.ModuleList([ResnetBlock2D(cin if j == 0 else cout, cout, temb, groups, eps) for j in range(L)])
            if down_attn[i]:
                blk.attentions = nn.ModuleList([Transformer2DModel(cout, heads[i], cross, groups, linear) for _ in range(L)])
            if i < len(ch) - 1:
                blk.downsamplers = nn.ModuleList([Downsample2D(cout, cfg["downsample_padding"])])
            self.down_blocks.append(blk)
            cin = cout
        self.mid_block = nn.Module()
        self.mid_block.resnets = nn.ModuleList([ResnetBlock2D(ch[-1], ch[-1], temb, groups, eps) for _ in range(2)])
        self.mid_block.attentions = nn.ModuleList([Transformer2DModel(ch[-1], heads[-1], cross, groups, linear)])
        self.up_blocks = nn.ModuleList()
        rev, rev_heads = list(reversed(ch)), list(reversed(heads))
        prev = ch[-1]
        for i, cout in enumerate(rev):
            skip_in = rev[min(i + 1, len(ch) - 1)]
            blk = nn.Module()
            blk.resnets = nn.ModuleList([
                ResnetBlock2D((prev if j == 0 else cout) + (skip_in if j == L else cout), cout, temb, groups, eps)
                for j in range(L + 1)])
            if up_attn[i]:
                blk.attentions = nn.ModuleList([Transformer2DModel(cout, rev_heads[i], cross, groups, linear) for _ in range(L + 1)])
            if i < len(ch) - 1:
                blk.upsamplers = nn.ModuleList([Upsample2D(cout)])
            self.up_blocks.append(blk)
            prev = cout
        self.conv_norm_out = nn.GroupNorm(groups, ch[0], eps=eps)
        self.conv_out = nn.Conv2d(ch[0], cfg["out_channels"], 3, padding=1)

    def forward(self, x, t, context):
        temb = self.time_embedding(timestep_embedding(t, self.ch0).to(self.conv_in.weight.dtype))  # bf16 runs cast whole
        h = self.conv_in(x)
        skips = [h]
        for blk in self.down_blocks:
            for j, res in enumerate(blk.resnets):
                h = res(h, temb)
                if hasattr(blk, "attentions"):
                    h = blk.attentions[j](h, context)
                skips.append(h)
            if hasattr(blk, "downsamplers"):
                h = blk.downsamplers[0](h)
                skips.append(h)
        h = self.mid_block.resnets[0](h, temb)
        h = self.mid_block.attentions[0](h, context)
        h = self.mid_block.resnets[1](h, temb)
        for blk in self.up_blocks:
            for j, res in enumerate(blk.resnets):
                h = res(torch.cat([h, skips.pop()], dim=1), temb)
                if hasattr(blk, "attentions"):
                    h = blk.attentions[j](h, context)
            if hasattr(blk, "upsamplers"):
                h = blk.upsamplers[0](h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


class SpatialAttention(Attention):
    """The autoencoder's mid-block attention: one head over all channels, with biases and a residual."""

    def __init__(self, c, groups):
        super().__init__(c, None, 1, c, True)
        self.group_norm = nn.GroupNorm(groups, c, eps=1e-6)

    def forward(self, x):
        b, c, h, w = x.shape
        t = self.group_norm(x).reshape(b, c, h * w).transpose(1, 2)
        return super().forward(t).transpose(1, 2).reshape(b, c, h, w) + x


class Decoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        ch, L, groups = list(reversed(cfg["block_out_channels"])), cfg["layers_per_block"], cfg["norm_num_groups"]
        self.conv_in = nn.Conv2d(cfg["latent_channels"], ch[0], 3, padding=1)
        self.mid_block = nn.Module()
        self.mid_block.resnets = nn.ModuleList([ResnetBlock2D(ch[0], ch[0], 0, groups, 1e-6) for _ in range(2)])
        self.mid_block.attentions = nn.ModuleList([SpatialAttention(ch[0], groups)])
        self.up_blocks = nn.ModuleList()
        prev = ch[0]
        for i, cout in enumerate(ch):
            blk = nn.Module()
            blk.resnets = nn.ModuleList([ResnetBlock2D(prev if j == 0 else cout, cout, 0, groups, 1e-6) for j in range(L + 1)])
            if i < len(ch) - 1:
                blk.upsamplers = nn.ModuleList([Upsample2D(cout)])
            self.up_blocks.append(blk)
            prev = cout
        self.conv_norm_out = nn.GroupNorm(groups, ch[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(ch[-1], cfg["out_channels"], 3, padding=1)

    def forward(self, z):
        h = self.conv_in(z)
        h = self.mid_block.resnets[1](self.mid_block.attentions[0](self.mid_block.resnets[0](h)))
        for blk in self.up_blocks:
            for res in blk.resnets:
                h = res(h)
            if hasattr(blk, "upsamplers"):
                h = blk.upsamplers[0](h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


class VaeDecoder(nn.Module):
    """AutoencoderKL.decode: post_quant_conv, then the decoder. Loads only the decoder's weights."""

    def __init__(self, cfg):
        super().__init__()
        self.post_quant_conv = nn.Conv2d(cfg["latent_channels"], cfg["latent_channels"], 1)
        self.decoder = Decoder(cfg)
        self.scaling_factor = cfg["scaling_factor"]

    def forward(self, z):
        return self.decoder(self.post_quant_conv(z))


def load_unet(unet_dir):
    with open(f"{unet_dir}/config.json") as f:
        net = UNet(json.load(f))
    net.load_state_dict(read_safetensors(f"{unet_dir}/diffusion_pytorch_model.safetensors"), strict=True)
    return net


def load_vae_decoder(vae_dir):
    with open(f"{vae_dir}/config.json") as f:
        net = VaeDecoder(json.load(f))
    weights = {k: v for k, v in read_safetensors(f"{vae_dir}/diffusion_pytorch_model.safetensors").items()
               if k.startswith(("decoder.", "post_quant_conv."))}
    net.load_state_dict(weights, strict=True)
    return net


# ---------------------------------------------------------------------------------------------------------
# LoRA (PEFT's layout: lora_A has the base layer's kind and kernel, lora_B is 1x1 / linear).
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1",
                "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj")


class LoraWrapped(nn.Module):
    """y = base(x) + (alpha / r) · B(A(x)); `adapter` selects which factors the forward uses (None = base)."""

    def __init__(self, base, rank, alpha):
        super().__init__()
        self.base, self.scale = base, alpha / rank
        if isinstance(base, nn.Conv2d):
            make_a = lambda: nn.Conv2d(base.in_channels, rank, base.kernel_size, base.stride, base.padding, bias=False)
            make_b = lambda: nn.Conv2d(rank, base.out_channels, 1, bias=False)
        else:
            make_a = lambda: nn.Linear(base.in_features, rank, bias=False)
            make_b = lambda: nn.Linear(rank, base.out_features, bias=False)
        self.lora_A, self.lora_B = nn.ModuleDict({"online": make_a(), "ema": make_a()}), nn.ModuleDict({"online": make_b(), "ema": make_b()})
        for which in ("online", "ema"):
            nn.init.kaiming_uniform_(self.lora_A[which].weight, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B[which].weight)
        self.adapter = "online"

    def forward(self, x):
        y = self.base(x)
        if self.adapter is None:
            return y
        return y + self.scale * self.lora_B[self.adapter](self.lora_A[self.adapter](x))


def add_lora(unet, rank, alpha):
    """Wraps every target module; returns the wrappers by module name. Base weights are frozen."""
    for p in unet.parameters():
        p.requires_grad_(False)
    sites = {}
    for name, module in list(unet.named_modules()):
        if name.endswith(LORA_TARGETS) and isinstance(module, (nn.Linear, nn.Conv2d)):
            parent_name, _, child = name.rpartition(".")
            wrapped = LoraWrapped(module, rank, alpha)
            setattr(unet.get_submodule(parent_name), child, wrapped)
            sites[name] = wrapped
    for w in sites.values():
        for p in w.lora_A["ema"].parameters():
            p.requires_grad_(False)
        for p in w.lora_B["ema"].parameters():
            p.requires_grad_(False)
    return sites


def use_adapter(sites, which):
    for w in sites.values():
        w.adapter = which


def load_peft_lora(sites, path, which="online"):
    weights = read_safetensors(path)
    with torch.no_grad():
        for name, w in sites.items():
            w.lora_A[which].weight.copy_(weights[f"unet.{name}.lora_A.weight"].reshape(w.lora_A[which].weight.shape))
            w.lora_B[which].weight.copy_(weights[f"unet.{name}.lora_B.weight"].reshape(w.lora_B[which].weight.shape))


def online_parameters(sites):
    return [p for w in sites.values() for p in (w.lora_A["online"].weight, w.lora_B["online"].weight)]


@torch.no_grad()
def update_ema(sites, decay):
    for w in sites.values():
        for part in (w.lora_A, w.lora_B):
            part["ema"].weight.mul_(decay).add_(part["online"].weight, alpha=1 - decay)


# ---------------------------------------------------------------------------------------------------------
# Schedule, samplers and the LCD step (DESIGN.md §4; the same formulas as lcdkit's infer/ and train/).
def scaled_linear_alphas_cumprod(T=1000, beta_start=0.00085, beta_end=0.012):
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, T, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


def boundary_scalings(t, sigma_data=0.5, timestep_scaling=10.0):
    s = t.double() * timestep_scaling
    c_skip = sigma_data ** 2 / (s ** 2 + sigma_data ** 2)
    c_out = s / (s ** 2 + sigma_data ** 2) ** 0.5
    return c_skip, c_out


def per_sample(v):
    return v.float()[:, None, None, None]


def x0_from_eps(acp, eps, z, t):
    return (z - per_sample((1 - acp[t]).sqrt()) * eps) / per_sample(acp[t].sqrt())


def consistency_output(acp, eps, z, t):
    c_skip, c_out = boundary_scalings(t)
    return per_sample(c_skip) * z + per_sample(c_out) * x0_from_eps(acp, eps, z, t)


def pseudo_huber(a, b, c):
    return (((a - b) ** 2 + c * c).sqrt() - c).mean()


def lcd_loss(unet, sites, acp, z0, eps, cond, uncond, j, guidance, num_ddim=50, huber_c=1e-3):
    """One LCD-LoRA forward: teacher (cond+uncond, one pass) → DDIM step t_s → t_e, EMA target at t_e, student
    at t_s with grad through the online LoRA only. Returns the pseudo-Huber loss."""
    n, k = z0.shape[0], 1000 // num_ddim
    t_s = (j + 1) * k - 1
    t_e = (t_s - k).clamp(min=0)
    acp_prev = acp[t_e]  # ᾱ of grid[j − 1] = t_e; for j = 0, t_e = 0
    z_s = per_sample(acp[t_s].sqrt()) * z0 + per_sample((1 - acp[t_s]).sqrt()) * eps
    with torch.no_grad():
        use_adapter(sites, None)
        both = unet(torch.cat([z_s, z_s]), torch.cat([t_s, t_s]), torch.cat([cond, uncond]))
        e_c, e_u = both[:n], both[n:]
        w = per_sample(guidance)
        E = e_u + w * (e_c - e_u)
        X = x0_from_eps(acp, e_u, z_s, t_s) + w * (x0_from_eps(acp, e_c, z_s, t_s) - x0_from_eps(acp, e_u, z_s, t_s))
        z_e = per_sample(acp_prev.sqrt()) * X + per_sample((1 - acp_prev).sqrt()) * E
        use_adapter(sites, "ema")
        target = consistency_output(acp, unet(z_e, t_e, cond), z_e, t_e)
    use_adapter(sites, "online")
    pred = consistency_output(acp, unet(z_s, t_s, cond), z_s, t_s)
    return pseudo_huber(pred, target, huber_c)


def lcm_timesteps(steps, T=1000, num_ddim=50):
    """diffusers' LCMScheduler: the skipping-step grid reversed, indices floor(i · N / steps)."""
    grid = [(i + 1) * (T // num_ddim) - 1 for i in range(num_ddim)][::-1]
    return [grid[(i * num_ddim) // steps] for i in range(steps)]


@torch.no_grad()
def lcm_sample(unet, acp, noise, cond, steps, generator):
    z = noise
    ts = lcm_timesteps(steps)
    for i, t in enumerate(ts):
        tt = torch.full((z.shape[0],), t, dtype=torch.long)
        denoised = consistency_output(acp, unet(z, tt, cond), z, tt)
        if i + 1 < len(ts):
            a = acp[ts[i + 1]]
            z = a.sqrt().float() * denoised + (1 - a).sqrt().float() * torch.randn(z.shape, generator=generator)
        else:
            z = denoised
    return z


@torch.no_grad()
def ddim_cfg_sample(unet, acp, noise, cond, uncond, steps, guidance):
    """DDIM (η = 0), "leading" spacing with steps_offset 1, classifier-free guidance in one batched pass."""
    ratio = 1000 // steps
    ts = [i * ratio + 1 for i in range(steps)][::-1]
    z, n = noise, noise.shape[0]
    ctx = torch.cat([cond, uncond])
    for t in ts:
        tt = torch.full((2 * n,), t, dtype=torch.long)
        both = unet(torch.cat([z, z]), tt, ctx)
        e = both[n:] + guidance * (both[:n] - both[n:])
        prev = acp[t - ratio] if t - ratio >= 0 else acp[0]
        x0 = (z - (1 - acp[t]).sqrt().float() * e) / acp[t].sqrt().float()
        z = prev.sqrt().float() * x0 + (1 - prev).sqrt().float() * e
    return z
