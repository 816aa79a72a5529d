"""DCGAN training iteration in PyTorch: the models of src/nn/gan.rs (DcGenerator/DcDiscriminator)
with FashionGanConfig::default() (noise 64, channels 32, Adam lr 2e-4 betas (0.5, 0.999), leaky
slope 0.2), one D step and one G step per iteration as `Gan::step` does, at batch 64 and 128.

    python3 benches/reference/dcgan.py [--batches 64,128]

Per iteration: G(noise) once; D step on [real; fake.detach()] (2B rows, BCE x 2); G step through
the updated D with D's parameters frozen. Random images stand in for Fashion-MNIST; the real
batch is gathered on the host and uploaded, the noise drawn on the device (as atomgrad does).
Prints one JSON line.
"""

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import add_mode_args, apply_mode, mode_suffix, device, emit, fail, step_result, time_steps


def generator(noise=64, c=32):
    g = nn.Sequential(
        nn.Linear(noise, c * 49), nn.Unflatten(1, (c, 7, 7)), nn.BatchNorm2d(c), nn.ReLU(),  # [B, C, 7, 7]
        nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(),  # [B, C/2, 14, 14]
        nn.ConvTranspose2d(c // 2, 1, 4, 2, 1), nn.Tanh(),  # [B, 1, 28, 28]
    )
    for m in g.modules():  # DCGAN init N(0, 0.02^2) on the transposed convolutions, zero bias
        if isinstance(m, nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return g


def discriminator(c=32, slope=0.2):
    d = nn.Sequential(
        nn.Conv2d(1, c // 2, 4, 2, 1), nn.LeakyReLU(slope),  # [2B, C/2, 14, 14]
        nn.Conv2d(c // 2, c, 4, 2, 1), nn.LeakyReLU(slope),  # [2B, C, 7, 7]
        nn.Flatten(), nn.Linear(c * 49, 1),  # logits [2B, 1]
    )
    for m in d.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)
    return d


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batches", default="64,128")
    p.add_argument("--budget", type=float, default=1.0)
    add_mode_args(p)
    args = p.parse_args()
    dev = device()
    X = torch.rand(1024, 1, 28, 28) * 2 - 1  # host "data set" in [-1, 1]
    results = []
    try:
        for B in map(int, args.batches.split(",")):
            torch.manual_seed(0)
            G0, D0 = generator().to(dev).train(), discriminator().to(dev)
            (G, D), suffix = apply_mode(args, G0, D0)
            opt_g = torch.optim.Adam(G0.parameters(), lr=2e-4, betas=(0.5, 0.999))
            opt_d = torch.optim.Adam(D0.parameters(), lr=2e-4, betas=(0.5, 0.999))
            targets = torch.cat([torch.ones(B, 1), torch.zeros(B, 1)]).to(dev)  # [2B, 1]
            ones = torch.ones(B, 1, device=dev)

            def step():
                fake = G(torch.randn(B, 64, device=dev))  # [B, 1, 28, 28]
                real = X[torch.randint(0, X.shape[0], (B,))].to(dev)
                loss_d = 2 * F.binary_cross_entropy_with_logits(D(torch.cat([real, fake.detach()])), targets)
                loss_d.backward()
                opt_d.step()
                opt_d.zero_grad(set_to_none=True)
                D.requires_grad_(False)  # the G step neither computes nor stores D's gradients
                loss_g = F.binary_cross_entropy_with_logits(D(fake), ones)
                loss_g.backward()
                opt_g.step()
                opt_g.zero_grad(set_to_none=True)
                D.requires_grad_(True)

            s = time_steps(step, dev, args.budget, warmup=10 if suffix else 3)
            results.append(step_result(f"DCGAN G+D plain batch {B}", B, s))
    except Exception as e:  # noqa: BLE001
        fail("dcgan", dev, e)
    emit("dcgan" + mode_suffix(args), dev, results, mode=args.mode, tf32=args.tf32, amp=args.amp and dev.type == "cuda")


if __name__ == "__main__":
    main()
