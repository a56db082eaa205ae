"""One-seed probe: TGW-newR on ant-dir with the RL term's weight (policy_bc_alpha) lowered."""
import os, sys
from dataclasses import replace
from pathlib import Path
from genworld.utils.device import PRECISION_ENV, set_matmul_precision
from genworld.train.unseen import config_for_scale, run_unseen

if __name__ == "__main__":
    os.environ[PRECISION_ENV] = "medium"
    set_matmul_precision("medium")
    alpha = float(sys.argv[2])
    cfg = config_for_scale("mini", family="ant-dir", split="paper", seeds=1, device="auto",
                           methods=("tgw-newr",), workers=2, shipped_experts=True, experts="auto")
    cfg = replace(cfg, policy_bc_alpha=alpha)
    run_unseen(cfg, Path(sys.argv[1]), show_progress=False)
    print((Path(sys.argv[1]) / "unseen.md").read_text())
