"""The PyTorch reference at Stable Diffusion scale (issue 18), on ldm_torch.py's independent UNet and VAE decoder.

Timing (the same workloads as `bench_unet --config`):
    sd_torch.py time --config sd15|sd21 [--size 512] [--batch 1,2] [--reps 3] [--precision fp32|bf16]
  builds the model from bench/sd/<config>/ with PyTorch's own random initialisation and prints the median
  seconds per no-grad UNet evaluation per batch, the VAE decode of one latent, and peak resident memory.

Correctness (lcdkit against this reference on the same random weights):
    sd_torch.py check DIR
  reads the model folder `bench_unet --config NAME --save DIR --check` wrote (weights, and check.safetensors
  with its inputs and lcdkit's outputs), runs the same inputs here in float64 and prints, per output, the
  largest error relative to the largest reference value; exits 1 when one is above 2e-5 (float32 against
  float64 through the whole network measures ~4e-6).
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ldm_torch as L  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def peak_gb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024e-9
    return 0.0


def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def timed(reps, fn):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def time_command(a):
    root = os.path.join(HERE, "..", "sd", a.config)
    with open(os.path.join(root, "unet", "config.json")) as f:
        ucfg = json.load(f)
    with open(os.path.join(root, "vae", "config.json")) as f:
        vcfg = json.load(f)
    dtype = torch.bfloat16 if a.precision == "bf16" else torch.float32
    torch.manual_seed(0)
    reset_peak()
    unet = L.UNet(ucfg).to(dtype).eval()
    n = sum(p.numel() for p in unet.parameters())
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, {a.config} at {a.size}², {a.precision}")
    print(f"UNet: {n / 1e6:.1f} M parameters; peak resident after building: {peak_gb():.2f} GB")
    h = a.size // 8
    with torch.no_grad():
        for b in [int(x) for x in a.batch.split(",")]:
            x = torch.randn(b, 4, h, h).to(dtype)
            ctx = torch.randn(b, 77, ucfg["cross_attention_dim"]).to(dtype)
            t = torch.full((b,), 999.0)
            reset_peak()
            unet(x, t, ctx)  # warm-up
            med, best = timed(a.reps, lambda: unet(x, t, ctx))
            print(f"unet batch {b}: median {med:.3f} s per evaluation ({a.reps} runs, min {best:.3f}), "
                  f"peak resident {peak_gb():.2f} GB")
        if a.vae:
            vae = L.VaeDecoder(vcfg).to(dtype).eval()
            z = torch.randn(1, vcfg["latent_channels"], h, h).to(dtype)
            reset_peak()
            vae(z)
            med, best = timed(a.reps, lambda: vae(z))
            print(f"vae decode 1 image: median {med:.3f} s ({a.reps} runs), peak resident {peak_gb():.2f} GB")


def check_command(a):
    torch.set_default_dtype(torch.float64)
    unet = L.load_unet(os.path.join(a.dir, "unet")).double().eval()
    vae = L.load_vae_decoder(os.path.join(a.dir, "vae")).double().eval()
    io = {k: v.double() for k, v in L.read_safetensors(os.path.join(a.dir, "check.safetensors")).items()}
    worst = 0.0
    with torch.no_grad():
        out = unet(io["sample"], io["timesteps"], io["context"])
        dec = vae(io["latents"])
    for name, ref, got in (("unet", out, io["unet_out"]), ("vae decode", dec, io["vae_out"])):
        err = ((got - ref).abs().max() / ref.abs().max()).item()
        worst = max(worst, err)
        print(f"{name:12s} {tuple(ref.shape)}  max error / max |ref| = {err:.2e}")
    sys.exit(0 if worst < 2e-5 else 1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("time")
    t.add_argument("--config", required=True, choices=["sd15", "sd21"])
    t.add_argument("--size", type=int, default=512)
    t.add_argument("--batch", default="1,2")
    t.add_argument("--reps", type=int, default=3)
    t.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    t.add_argument("--no-vae", dest="vae", action="store_false")
    c = sub.add_parser("check")
    c.add_argument("dir")
    a = p.parse_args()
    time_command(a) if a.command == "time" else check_command(a)


if __name__ == "__main__":
    main()
