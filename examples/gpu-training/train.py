"""A tiny training job: fits a small network to made-up data.

It uses the GPU when there is one and the CPU otherwise, so you can try it
on your own computer too. Replace the data and the model with your own.
"""
import argparse
import time

import torch
from torch import nn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    print(f"training on {device} ({name})", flush=True)

    # Made-up data: the label says whether the sum of the inputs is positive.
    torch.manual_seed(0)
    x = torch.randn(20_000, 32, device=device)
    y = (x.sum(dim=1) > 0).long()

    model = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 2)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    for epoch in range(1, args.epochs + 1):
        start = time.time()
        perm = torch.randperm(len(x), device=device)
        for i in range(0, len(x), args.batch_size):
            idx = perm[i : i + args.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            accuracy = (model(x).argmax(dim=1) == y).float().mean().item()
        print(f"epoch {epoch:3d}  loss {loss.item():.4f}  accuracy {accuracy:.3f}  "
              f"({time.time() - start:.1f}s)", flush=True)

    print("done", flush=True)


if __name__ == "__main__":
    main()
