"""PyTorch's side of the comparison (issue 8): the cases of bench/step_bench.cpp with the same shapes and
settings, on ldm_torch.py (checked against diffusers by check_golden.py). One case per process; prints
"case median_seconds peak_rss_mib" (or "case n/a reason" where the case cannot run in that dtype).
--dtype bf16 is PyTorch's best bf16 on Debian's 1.13: the networks cast whole to bfloat16 behind a wrapper that
casts their inputs and outputs (torch.autocast("cpu", bfloat16) fails in group_norm for this model).
Usage: /usr/bin/python3 bench/pytorch/bench_torch.py CASE [--model DIR] [--threads N] [--reps R] [--warmup W]
       [--dtype fp32|bf16]"""
import argparse
import json
import resource
import time

import torch

import ldm_torch as L

ap = argparse.ArgumentParser()
ap.add_argument("case", choices=["unet-fwd", "unet-fwd-128", "diffusion-step", "lcd-step", "lcm4", "ddim50", "lcm4-latents",
                                 "ddim50-latents"])
ap.add_argument("--model", default="models/fmnist-ldm-v1")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--reps", type=int, default=5)
ap.add_argument("--warmup", type=int, default=1)
ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
args = ap.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)

class Bf16(torch.nn.Module):
    """A network cast whole to bfloat16, taking and returning float32 tensors."""

    def __init__(self, net):
        super().__init__()
        self.net = net.to(torch.bfloat16)
        self.scaling_factor = getattr(net, "scaling_factor", None)

    def forward(self, *xs):
        cast = [x.to(torch.bfloat16) if torch.is_tensor(x) and x.is_floating_point() else x for x in xs]
        return self.net(*cast).float()


def in_dtype(net):
    return Bf16(net) if args.dtype == "bf16" else net


unet = L.load_unet(f"{args.model}/unet")
table = L.read_safetensors(f"{args.model}/cond_embeddings.safetensors")
table = next(iter(table.values()))
with open(f"{args.model}/scheduler/scheduler_config.json") as f:
    sched = json.load(f)
assert sched["beta_schedule"] == "scaled_linear" and sched["prediction_type"] == "epsilon"
acp = L.scaled_linear_alphas_cumprod(sched["num_train_timesteps"], sched["beta_start"], sched["beta_end"])
labels = lambda n: torch.arange(n) % 10
uncond_row = table.shape[0] - 1
shape = (64, 4, 8, 8)

if args.case in ("unet-fwd", "unet-fwd-128"):
    b = 128 if args.case.endswith("128") else 64
    unet = in_dtype(unet)

    def run():
        with torch.no_grad():
            unet(torch.randn(b, 4, 8, 8), torch.randint(0, 1000, (b,)), table[labels(b)])
elif args.case == "diffusion-step":
    unet = in_dtype(unet)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-5, weight_decay=1e-2)

    def run():
        z0, eps, t = torch.randn(shape), torch.randn(shape), torch.randint(0, 1000, (64,))
        a = L.per_sample(acp[t].sqrt())
        s = L.per_sample((1 - acp[t]).sqrt())
        loss = torch.nn.functional.mse_loss(unet(a * z0 + s * eps, t, table[labels(64)]), eps)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
elif args.case == "lcd-step":
    sites = L.add_lora(unet, 16, 16)
    unet = in_dtype(unet)  # casts the LoRA factors in place too
    params = L.online_parameters(sites)
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2)
    n = 32

    def run():
        z0 = torch.randn(n, 4, 8, 8)
        loss = L.lcd_loss(unet, sites, acp, z0, torch.randn_like(z0), table[labels(n)],
                          table[torch.full((n,), uncond_row)], torch.randint(0, 50, (n,)), torch.full((n,), 3.0))
        opt.zero_grad(set_to_none=False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        L.update_ema(sites, 0.95)
else:
    unet = in_dtype(unet)
    vae = in_dtype(L.load_vae_decoder(f"{args.model}/vae"))

    def run():
        with torch.no_grad():
            g = torch.Generator().manual_seed(1)
            noise = torch.randn(shape, generator=g)
            cond = table[labels(64)]
            if args.case.startswith("lcm4"):
                z = L.lcm_sample(unet, acp, noise, cond, 4, g)
            else:
                z = L.ddim_cfg_sample(unet, acp, noise, cond, table[uncond_row][None].expand(64, -1, -1), 50, 2.0)
            if not args.case.endswith("-latents"):
                vae(z / vae.scaling_factor)

try:
    for _ in range(args.warmup):
        run()
except RuntimeError as e:  # a dtype the op lacks
    print(f"{args.case} n/a {str(e).splitlines()[0][:60]!r}")
    raise SystemExit(0)
times = []
for _ in range(args.reps):
    t0 = time.perf_counter()
    run()
    times.append(time.perf_counter() - t0)
times.sort()
print(f"{args.case} {times[len(times) // 2]:.4f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")
