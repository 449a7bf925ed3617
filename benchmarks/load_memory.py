"""Peak memory of loading a checkpoint, against the size of its weights on disk.

Builds a multi-hundred-MB checkpoint (bf16 by default), then loads it in a fresh process, once with
mimo's streaming loader and once the naive way (materialise the model, then load_state_dict from a
full safetensors read), and prints the peak RSS growth of each as a multiple of the weights' size.
Target for mimo: at most 1.3x.

    python benchmarks/load_memory.py [--hidden 1024 --layers 16 --dtype bfloat16 --load-dtype none]
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, torch
torch.set_num_threads(1)
def status_mb(key):  # VmRSS: resident now; VmHWM: peak of this process image (ru_maxrss would include
    for line in open("/proc/self/status"):  # the parent's peak, inherited across fork+exec)
        if line.startswith(key):
            return int(line.split()[1]) / 1024
rss_mb = lambda: status_mb("VmRSS")
from mimo.model import MiMoForCausalLM
from mimo.config import MiMoConfig
path, how, dtype = sys.argv[1], sys.argv[2], None if sys.argv[3] == "none" else getattr(torch, sys.argv[3])
base = rss_mb()
if how == "mimo":
    model = MiMoForCausalLM.from_pretrained(path, dtype=dtype)
else:  # the naive way: random-init the full model, then read every tensor at once and copy it in
    from safetensors.torch import load_file
    model = MiMoForCausalLM(MiMoConfig.from_json(path))
    if dtype is not None:
        model.to(dtype)
    model.load_state_dict(load_file(path + "/model.safetensors"))
# Touch every weight, as a first forward pass would: safetensors maps the file lazily.
checksum = sum(float(p.detach().sum()) for p in model.parameters())
peak = status_mb("VmHWM")
print(json.dumps({"base_mb": base, "peak_mb": peak, "after_mb": rss_mb()}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--load-dtype", default="none", help="dtype to load as ('none' keeps the stored one)")
    args = ap.parse_args()

    import torch

    from mimo.config import MiMoConfig
    from mimo.model import MiMoForCausalLM

    config = MiMoConfig.from_preset("mimo-50m", hidden_size=args.hidden, intermediate_size=int(args.hidden * 2.7),
                                    num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64,
                                    num_key_value_heads=args.hidden // 256, head_dim=64, vocab_size=32768)
    with tempfile.TemporaryDirectory() as tmp:
        model = MiMoForCausalLM(config).to(getattr(torch, args.dtype))
        model.save_pretrained(tmp)
        del model
        disk_mb = (Path(tmp) / "model.safetensors").stat().st_size / 2**20
        print(f"checkpoint: {disk_mb:.0f} MB on disk ({args.dtype}), loading as {args.load_dtype}")
        for how in ("mimo", "naive"):
            out = subprocess.run([sys.executable, "-c", CHILD, tmp, how, args.load_dtype],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            grow = r["peak_mb"] - r["base_mb"]
            print(f"{how:>5}: peak RSS growth {grow:7.0f} MB = {grow / disk_mb:.2f}x the weights "
                  f"(resident after load {r['after_mb'] - r['base_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
