"""Shows that bench/pytorch/ldm_torch.py computes what diffusers and PEFT compute: its UNet, LoRA UNet and VAE
decoder against ../shared/golden/diffusers-A, its LCM timesteps against the manifest, and its LCD-LoRA loss
against ../shared/golden/lcd-step-A. Prints the max error relative to the reference's max; exits 1 if any
exceeds 1e-4 (float32 against a float64 reference).
Usage: /usr/bin/python3 bench/pytorch/check_golden.py [GOLDEN_DIR=../shared/golden]"""
import json
import sys

import torch

import ldm_torch as L

golden = sys.argv[1] if len(sys.argv) > 1 else "../shared/golden"
A, S = f"{golden}/diffusers-A", f"{golden}/lcd-step-A"
ref = L.read_safetensors(f"{A}/tensors.safetensors")
manifest = json.load(open(f"{A}/manifest.json"))
failed = False


def report(name, got, want):
    global failed
    err = ((got.double() - want.double()).abs().max() / want.double().abs().max()).item()
    ok = err < 1e-4
    failed |= not ok
    print(f"{name:28s} max error / max |ref| = {err:.2e}  {'ok' if ok else 'FAIL'}")


torch.set_grad_enabled(False)
unet = L.load_unet(f"{A}/unet")
x, t, c = ref["unet.in.sample"], ref["unet.in.timesteps"], ref["unet.in.encoder_hidden_states"]
report("unet (999, 37)", unet(x, t, c), ref["unet.out"])
report("unet (500, 500)", unet(x, torch.tensor([500, 500]), c), ref["unet.out_t500"])
vae = L.load_vae_decoder(f"{A}/vae")
report("vae decode", vae(ref["vae.out.mean"]), ref["vae.out.decoded"])
for steps, want in manifest["lcm_timesteps"].items():
    got = L.lcm_timesteps(int(steps))
    if got != want:
        failed = True
        print(f"lcm timesteps {steps}: {got} != {want}  FAIL")
sites = L.add_lora(unet, 4, 8)
L.load_peft_lora(sites, f"{A}/lora_peft.safetensors")
report("unet + PEFT LoRA", unet(x, t, c), ref["lora.unet.out"])

# LCD-LoRA step: online adapter = lora_peft, EMA adapter = lcd-step-A/target_lora.
step = L.read_safetensors(f"{S}/tensors.safetensors")
L.load_peft_lora(sites, f"{S}/target_lora.safetensors", "ema")
acp = ref["sched.alphas_cumprod"].double()
table = step["cond_table"]
labels = step["labels"].long()
cond, uncond = table[labels], table[torch.full_like(labels, table.shape[0] - 1)]
with torch.enable_grad():
    loss = L.lcd_loss(unet, sites, acp, step["z0"], step["eps"], cond, uncond, step["j"].long(), step["guidance"].double())
    loss.backward()
report("lcd step loss (huber)", loss.detach(), step["loss.huber"])
grad_norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in L.online_parameters(sites)))
report("lcd step grad norm", grad_norm, step["grad_norm"])
sys.exit(1 if failed else 0)
