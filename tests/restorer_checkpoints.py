"""Build face-restorer checkpoints with RANDOM weights in the released files' key layouts, to test
loading and the restore plumbing without the real weights (which are never downloaded or
committed). Random weights restore nothing: what such a file proves is that spandrel detects it,
our code loads and runs it, and shapes, ranges and options reach the model -- not image quality.

Layouts (keys as in the released files, wrapped as they are):
- GFPGAN v1.3/v1.4 (GFPGANv1Clean): {"params_ema": state_dict}. spandrel builds it at one fixed
  size, so this file is full-size (~330 MB) even with --small.
- RestoreFormer (GFPGAN's RestoreFormer.pth): {"params": state_dict}; --small shrinks the
  channels, codebook and depth (spandrel reads them from the weights' shapes).
- CodeFormer (codeformer.pth): {"params_ema": state_dict}; --small shrinks the transformer and
  the codebook (the VQGAN encoder/generator are fixed-size in spandrel).

Usage: python tests/restorer_checkpoints.py {gfpgan,restoreformer,codeformer} OUT.pth [--small]
Needs the enhance extra (spandrel, spandrel-extra-arches).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

ARCHS = ("gfpgan", "restoreformer", "codeformer")


def build_model(arch: str, small: bool = True):
    """The untrained torch module for `arch` (spandrel's copy of the released architecture)."""
    import torch

    from wav2lip_core.quality.restorer_file import import_spandrel

    import_spandrel()  # imports spandrel (and its torchvision) the way the product does
    torch.manual_seed({"gfpgan": 1, "restoreformer": 2, "codeformer": 3}[arch])
    if arch == "gfpgan":
        from spandrel.architectures.GFPGAN import GFPGAN

        # The hyper-parameters spandrel's GFPGAN loader uses (those of GFPGANv1.3/v1.4).
        return GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None,
                      fix_decoder=False, num_mlp=8, input_is_latent=True, different_w=True, narrow=1,
                      sft_half=True)
    if arch == "restoreformer":
        from spandrel.architectures.RestoreFormer import RestoreFormer

        if not small:
            return RestoreFormer()  # the released hyper-parameters are the class defaults
        return RestoreFormer(n_embed=64, embed_dim=32, ch=32, ch_mult=(1, 1, 1, 1, 1, 1), num_res_blocks=1,
                             z_channels=32)
    if arch == "codeformer":
        from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

        model = CodeFormer() if not small else CodeFormer(dim_embd=64, n_layers=1, codebook_size=64)
        # Training starts the fusion scales at zero, which would hide the fidelity weight w;
        # trained weights are not zero there.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.startswith("fuse_convs_dict."):
                    p.normal_(0.0, 0.05)
        return model
    raise ValueError(f"unknown restorer architecture {arch!r}; one of {', '.join(ARCHS)}")


def write_checkpoint(arch: str, out: str | os.PathLike, small: bool = True) -> str:
    """Save a random-weight `arch` checkpoint at `out` in its released layout; returns `out`."""
    import torch

    state = {k: v.detach().clone() for k, v in build_model(arch, small).state_dict().items()}
    wrapper = "params" if arch == "restoreformer" else "params_ema"
    out = os.fspath(out)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(out)), suffix=".tmp")
    os.close(fd)
    torch.save({wrapper: state}, tmp)
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("arch", choices=ARCHS)
    p.add_argument("out")
    p.add_argument("--small", action="store_true",
                   help="a smaller variant where spandrel reads the size from the weights")
    args = p.parse_args(argv)
    write_checkpoint(args.arch, args.out, args.small)
    print(f"{args.out}: {os.path.getsize(args.out) / 1e6:.1f} MB, random weights ({args.arch})")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
