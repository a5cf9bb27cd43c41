"""Reference values of the optimizer pieces, for tests/test_train.cpp.

In float32, as a training run (and the C++ code) computes them:
  adamw.<case>   torch.optim.AdamW (foreach=False: the single-tensor path) for 10 steps on
                 stored gradients: "<case>.p<i>.init" [shape], "<case>.p<i>.grad" [10, shape]
                 (a step whose gradient is None is all NaN), "<case>.p<i>.after" [10, shape],
                 and "<case>.lr" [10] (the rate of each step, set from a LambdaLR schedule).
  clip.<case>    torch.nn.utils.clip_grad_norm_: "<case>.g<i>" before, "<case>.clipped.g<i>"
                 after, "<case>.total_norm" [1].
  lr.<case>      torch's LambdaLR with diffusers' get_cosine_schedule_with_warmup lambda
                 (diffusers/optimization.py; with a floor, transformers'
                 get_cosine_with_min_lr_schedule_with_warmup): "<case>.lr" [steps].
The cases' settings are JSON in the metadata ("cases").

    python3 scripts/make_optim_reference.py     # needs torch, safetensors
"""
import json
import math
import os

import torch
from safetensors.torch import save_file

torch.manual_seed(0)
tensors, cases = {}, {}
STEPS = 10


def cosine_with_warmup(warmup, total, num_cycles=0.5, min_lr_rate=0.0):
    """diffusers' get_cosine_schedule_with_warmup lambda (transformers' with min_lr_rate > 0)."""

    def lr_lambda(step):
        if step < warmup:
            return float(step) / float(max(1, warmup))
        progress = float(step - warmup) / float(max(1, total - warmup))
        factor = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
        return max(0.0, factor * (1.0 - min_lr_rate) + min_lr_rate)

    return lr_lambda


def lambda_lr_rates(base_lr, lr_lambda, steps):
    """The rate each optimizer step uses, as a training loop with LambdaLR sees it."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


# AdamW: shapes of the parameters, settings, and which steps have no gradient for which parameter
for name, shapes, cfg, schedule, missing in [
    ("default", [(7, 5), (13,)], dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2), None, {}),
    ("strong", [(4, 3, 3, 3), (300,), (1,)], dict(lr=3e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.3),
     dict(warmup=3, total=10), {1: [2, 5]}),  # parameter 1 has no gradient at steps 2 and 5
]:
    params = [torch.nn.Parameter(torch.randn(*s)) for s in shapes]
    for i, p in enumerate(params):
        tensors[f"adamw.{name}.p{i}.init"] = p.detach().clone()
    opt = torch.optim.AdamW(params, foreach=False, fused=False, **cfg)
    rates = (lambda_lr_rates(cfg["lr"], cosine_with_warmup(**schedule), STEPS) if schedule
             else [cfg["lr"]] * STEPS)
    grads = [[] for _ in params]
    after = [[] for _ in params]
    for k in range(STEPS):
        opt.param_groups[0]["lr"] = rates[k]
        for i, p in enumerate(params):
            g = torch.randn(p.shape) * (0.1 + k)  # growing gradients exercise the bias correction
            if k in missing.get(i, []):
                p.grad = None
                grads[i].append(torch.full(p.shape, float("nan")))
            else:
                p.grad = g
                grads[i].append(g.clone())
        opt.step()
        for i, p in enumerate(params):
            after[i].append(p.detach().clone())
    for i in range(len(params)):
        tensors[f"adamw.{name}.p{i}.grad"] = torch.stack(grads[i])
        tensors[f"adamw.{name}.p{i}.after"] = torch.stack(after[i])
    tensors[f"adamw.{name}.lr"] = torch.tensor(rates, dtype=torch.float64).float()
    cases[f"adamw.{name}"] = dict(op="adamw", params=len(params), lr=rates, betas=cfg["betas"], eps=cfg["eps"],
                                  weight_decay=cfg["weight_decay"])

# clip_grad_norm_: clipped, and under the limit (untouched)
for name, shapes, max_norm in [("clipped", [(6, 4), (9,), (2, 2, 3)], 1.0), ("under", [(5,), (3, 3)], 100.0)]:
    grads = [torch.randn(*s) for s in shapes]
    params = [torch.nn.Parameter(torch.zeros(*s)) for s in shapes]
    for i, (p, g) in enumerate(zip(params, grads)):
        tensors[f"clip.{name}.g{i}"] = g.clone()
        p.grad = g.clone()
    total = torch.nn.utils.clip_grad_norm_(params, max_norm)
    for i, p in enumerate(params):
        tensors[f"clip.{name}.clipped.g{i}"] = p.grad.clone()
    tensors[f"clip.{name}.total_norm"] = total.reshape(1).float()
    cases[f"clip.{name}"] = dict(op="clip", grads=len(grads), max_norm=max_norm)

# learning-rate schedules
for name, base_lr, warmup, total, min_lr_rate in [("diffusers", 1e-4, 5, 30, 0.0), ("floor", 2e-3, 0, 12, 0.1),
                                                   ("warmup_only", 1.0, 8, 8, 0.0)]:
    rates = lambda_lr_rates(base_lr, cosine_with_warmup(warmup, total, min_lr_rate=min_lr_rate), total + 2)
    tensors[f"lr.{name}.lr"] = torch.tensor(rates, dtype=torch.float64).float()
    cases[f"lr.{name}"] = dict(op="lr", base_lr=base_lr, num_warmup_steps=warmup, num_training_steps=total,
                               min_lr_ratio=min_lr_rate, rates=rates)

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "optim_reference.safetensors")
save_file({k: v.contiguous() for k, v in tensors.items()}, out, metadata={"cases": json.dumps(cases)})
print(f"wrote {out}: {len(tensors)} tensors, {os.path.getsize(out)} bytes")
