"""Validation-only probe of a classic model's batch size and learning rate (no test user is scored).

    .venv/bin/python benchmarks/classic_probe.py BATCH LR BUDGET_S     # SASRec on Tools, e.g. 256 0.001 420
"""
import sys
from xcross_lib.experiments import DomainData
from xcross_lib.single_domain import classic_catalogue
from xcross_lib.training.classic import ClassicConfig, train_classic
data = DomainData.load("Tools")
bs, lr = int(sys.argv[1]), float(sys.argv[2])
cfg = ClassicConfig("SASRec", train_batch_size=bs, learning_rate=lr, time_budget_s=float(sys.argv[3]))
model, curve, summary = train_classic(cfg, classic_catalogue("SASRec", data), data.domain.sequences,
                                      data.frames["train"]["user"].to_numpy(), data.frames["validation"], progress=False)
print(curve[curve.stage == "train"][["epoch", "train_loss", "validation_mrr", "elapsed_s"]].round(4).to_string(index=False))
print({k: summary[k] for k in ("best_epoch", "epochs_run", "stopped", "train_s", "validation_mrr")})
