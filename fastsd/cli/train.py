"""``fastsd train-denoiser``: the small denoiser prior of the prior-based methods."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from fastsd.cli.common import UsageError, check_memory, device
from fastsd.cli.results import writable_parent

__all__ = ["cmd_train_denoiser"]


def cmd_train_denoiser(args) -> int:
    """Train :class:`fastsd.priors.TinyDenoiser` on scikit-image's bundled images and save it
    (checked writable first; written to a temporary file, renamed when complete)."""
    from fastsd.priors import save_denoiser, train_denoiser

    dev = device(args.device)
    out = Path(os.path.abspath(args.out))
    if out.is_dir():
        raise UsageError(f"--out {out}: is a directory; --out names the checkpoint file to write")
    if out.exists() and not args.overwrite:
        raise UsageError(f"--out {out}: exists; pass --overwrite to replace it")
    # activations kept for the backward pass: batch x patch^2 x width per layer, float32, about 3x
    check_memory(3.0 * 4 * args.batch_size * args.patch**2 * args.width * args.depth, dev,
                  f"--batch-size {args.batch_size} with --patch {args.patch} and --width {args.width}")
    parent = writable_parent(out, "--out")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=parent)
    except OSError as e:
        raise UsageError(f"--out {out}: cannot write in {parent} ({e.strerror or e})") from None
    os.close(fd)
    try:
        t0 = time.perf_counter()
        model, losses = train_denoiser(channels=args.channels, width=args.width, depth=args.depth, steps=args.steps,
                                       batch_size=args.batch_size, patch=args.patch, lr=args.lr, seed=args.seed,
                                       device=dev)
        elapsed = time.perf_counter() - t0
        tail = losses[-min(len(losses), 50):]
        info = dict(steps=args.steps, batch_size=args.batch_size, patch=args.patch, lr=args.lr, seed=args.seed,
                    final_loss=losses[-1], final_loss_mean50=sum(tail) / len(tail), train_s=elapsed, device=str(dev))
        save_denoiser(model, tmp, info)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"trained TinyDenoiser (channels {args.channels}, width {args.width}, depth {args.depth}, "
          f"{n_params} parameters) for {args.steps} steps in {elapsed:.1f} s on {dev}")
    print(f"final loss {losses[-1]:.4g} (mean of the last {len(tail)} steps {info['final_loss_mean50']:.4g})")
    print(f"saved {out}")
    return 0
