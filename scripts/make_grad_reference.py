"""Reference gradients of the nn primitives, for tests/test_nn_backward.cpp.

For each case: random inputs from a fixed seed (rounded to float32, the values the C++ ops
see), then in float64 torch autograd the forward output and the vector-Jacobian product
d(sum(out * grad_out)) / d(every input and parameter) for a random grad_out. Everything is
stored as float32 (ids as int64) in tests/data/grad_primitives.safetensors, with the cases'
parameters as JSON in the metadata ("cases"): "<case>.<input>", "<case>.grad_out",
"<case>.out", "<case>.grad.<input>".

    python3 scripts/make_grad_reference.py     # needs torch, numpy, safetensors
"""
import json
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(0)
tensors, cases = {}, {}


def rnd(*shape, scale=1.0):
    return (torch.randn(*shape, dtype=torch.float64) * scale).float().double()


fd_worst = [0.0, ""]


def fd_check(name, inputs, forward, leaves, grad_out):
    """Finite differences in float64, independent of autograd: for a few elements i of every input
    (its largest gradient and two fixed others), (L(x + h e_i) - L(x - h e_i)) / 2h of
    L = sum(forward(inputs) * grad_out), h = 1e-5, must equal autograd's gradient within 1e-6 of
    (|g_i| + rms(g)): truncation ~h^2 = 1e-10, rounding ~1e-16 / h = 1e-11. A check of the reference itself (the
    C++ tests probe the float32 ops the same way, tests/test_nn_backward.cpp fd_probe)."""
    h = 1e-5
    with torch.no_grad():
        for k, x in inputs.items():
            g = leaves[k].grad.reshape(-1)
            n = g.numel()
            rms = g.pow(2).mean().sqrt().item()
            for i in sorted({int(g.abs().argmax()), n // 3, min((2 * n) // 3 + 1, n - 1)}):
                xs = []
                for sign in (1, -1):
                    xp = dict(inputs)
                    xp[k] = x.clone().reshape(-1)
                    xp[k][i] += sign * h
                    xp[k] = xp[k].reshape(x.shape)
                    xs.append((forward(**xp) * grad_out).sum().item())
                fd = (xs[0] - xs[1]) / (2 * h)
                err = abs(fd - g[i].item()) / (abs(g[i].item()) + rms + 1e-300)
                if err > fd_worst[0]:
                    fd_worst[:] = [err, f"{name}.{k}[{i}]"]
                assert err <= 1e-6, f"{name}: d/d{k}[{i}]: finite difference {fd}, autograd {g[i].item()}"


def add_case(name, meta, inputs, forward, ints=None):
    """inputs: name -> float64 tensor (a leaf whose gradient is stored); forward(**inputs) -> out."""
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    out = forward(**leaves)
    grad_out = rnd(*out.shape)
    (out * grad_out).sum().backward()
    fd_check(name, inputs, forward, leaves, grad_out)
    cases[name] = meta
    for k, v in inputs.items():
        tensors[f"{name}.{k}"] = v.float()
        tensors[f"{name}.grad.{k}"] = leaves[k].grad.float()
    for k, v in (ints or {}).items():
        tensors[f"{name}.{k}"] = v
    tensors[f"{name}.grad_out"] = grad_out.float()
    tensors[f"{name}.out"] = out.detach().float()


# linear: x [..., in], weight [out, in], bias [out]
for name, lead, i, o, bias in [("odd", (3, 5), 7, 9, True), ("nobias", (2, 17), 33, 20, False),
                               ("blocks", (300,), 40, 48, True)]:
    inp = {"x": rnd(*lead, i), "weight": rnd(o, i, scale=1 / math.sqrt(i))}
    if bias:
        inp["bias"] = rnd(o)
    add_case(f"linear.{name}", {"op": "linear", "bias": bias}, inp,
             lambda x, weight, bias=None: F.linear(x, weight, bias))

# conv2d: x [B, C, H, W], weight [O, C, k, k], bias [O]; pad = [top, left, bottom, right]
for name, (B, C, H, W, O, k, stride, pad, bias) in {
    "1x1": (2, 5, 7, 6, 4, 1, 1, [0, 0, 0, 0], True),
    "3x3": (2, 3, 9, 8, 5, 3, 1, [1, 1, 1, 1], True),
    "3x3_k360": (2, 40, 6, 5, 24, 3, 1, [1, 1, 1, 1], False),
    "3x3_s2_vae": (1, 4, 8, 9, 6, 3, 2, [0, 1, 0, 1], True),  # the VAE downsampler's asymmetric pad
    "3x3_winograd": (1, 64, 4, 32, 64, 3, 1, [1, 1, 1, 1], True),  # the forward takes Winograd here
    "1x1_s2": (1, 3, 5, 5, 2, 1, 2, [0, 0, 0, 0], True),
}.items():
    inp = {"x": rnd(B, C, H, W), "weight": rnd(O, C, k, k, scale=1 / math.sqrt(C * k * k))}
    if bias:
        inp["bias"] = rnd(O)

    def conv(x, weight, bias=None, stride=stride, pad=pad):
        x = F.pad(x, (pad[1], pad[3], pad[0], pad[2]))
        return F.conv2d(x, weight, bias, stride=stride)
    add_case(f"conv2d.{name}", {"op": "conv2d", "stride": stride, "pad": pad, "bias": bias}, inp, conv)

# group_norm: x [B, C, ...], weight, bias [C]
for name, shape, groups, silu in [("g3", (2, 6, 5, 3), 3, False), ("g2_silu", (2, 8, 4, 4), 2, True),
                                  ("g32_silu", (1, 32, 3, 3), 32, True), ("g4_offset", (2, 8, 6), 4, False)]:
    C = shape[1]
    x = rnd(*shape) * 2 + (3.0 if "offset" in name else 0.0)
    inp = {"x": x, "weight": rnd(C), "bias": rnd(C)}

    def gn(x, weight, bias, groups=groups, silu=silu):
        y = F.group_norm(x, groups, weight, bias, eps=1e-5)
        return F.silu(y) if silu else y
    add_case(f"group_norm.{name}", {"op": "group_norm", "groups": groups, "silu": silu, "eps": 1e-5}, inp, gn)

# layer_norm: x [..., D]
for name, shape in [("d7", (2, 3, 7)), ("d40", (5, 40))]:
    D = shape[-1]
    add_case(f"layer_norm.{name}", {"op": "layer_norm", "eps": 1e-5},
             {"x": rnd(*shape, scale=2), "weight": rnd(D), "bias": rnd(D)},
             lambda x, weight, bias: F.layer_norm(x, (x.shape[-1],), weight, bias, eps=1e-5))

# activations on x [3, 5, 7], spread to reach both tails
for op, f in [("silu", lambda x: F.silu(x)), ("gelu", lambda x: F.gelu(x)),
              ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh")),
              ("quick_gelu", lambda x: x * torch.sigmoid(1.702 * x))]:
    add_case(f"{op}.a", {"op": op}, {"x": rnd(3, 5, 7, scale=3)}, f)

# geglu: h [..., 2F] -> a * gelu(gate)
add_case("geglu.a", {"op": "geglu"}, {"h": rnd(2, 3, 10, scale=2)},
         lambda h: h.chunk(2, dim=-1)[0] * F.gelu(h.chunk(2, dim=-1)[1]))

# softmax over the last dim
add_case("softmax.a", {"op": "softmax"}, {"x": rnd(3, 4, 13, scale=3)}, lambda x: torch.softmax(x, -1))

# attention: q [B, Lq, H*d], k [B, Lk, H*d], v [B, Lk, H*dv]


def sdpa(q, k, v, heads, causal):
    B, Lq, D = q.shape
    Lk, Dv = k.shape[1], v.shape[2]
    qh = q.view(B, Lq, heads, -1).transpose(1, 2)
    kh = k.view(B, Lk, heads, -1).transpose(1, 2)
    vh = v.view(B, Lk, heads, -1).transpose(1, 2)
    s = qh @ kh.transpose(-1, -2) / math.sqrt(D // heads)
    if causal:
        s = s.masked_fill(torch.ones(Lq, Lk, dtype=torch.bool).triu(1), float("-inf"))
    return (torch.softmax(s, -1) @ vh).transpose(1, 2).reshape(B, Lq, Dv)


for name, (B, Lq, Lk, H, d, dv, causal) in {
    "self": (2, 5, 5, 2, 4, 4, False),
    "cross_dv": (2, 6, 7, 2, 4, 3, False),
    "cross_blocks": (1, 130, 11, 3, 8, 8, False),  # two query blocks of kQueryBlock = 128
    "causal": (2, 9, 9, 2, 6, 6, True),
    "causal_blocks": (1, 140, 140, 1, 4, 4, True),
}.items():
    add_case(f"attention.{name}", {"op": "attention", "heads": H, "causal": causal},
             {"q": rnd(B, Lq, H * d), "k": rnd(B, Lk, H * d), "v": rnd(B, Lk, H * dv)},
             lambda q, k, v, H=H, causal=causal: sdpa(q, k, v, H, causal))

# layout ops
add_case("upsample.a", {"op": "upsample"}, {"x": rnd(2, 3, 4, 5)},
         lambda x: F.interpolate(x, scale_factor=2.0, mode="nearest"))
add_case("cat.a", {"op": "cat"}, {"a": rnd(2, 3, 4, 5), "b": rnd(2, 2, 4, 5)}, lambda a, b: torch.cat([a, b], 1))
add_case("channel_bias.a", {"op": "channel_bias"}, {"x": rnd(2, 3, 4, 5), "v": rnd(2, 3)},
         lambda x, v: x + v[:, :, None, None])

# embeddings: ids [B, L] with repeats, token [V, D], position [P, D] -> token[ids] + position[:L]
ids = torch.tensor([[3, 1, 3, 10, 0], [7, 7, 7, 2, 3]], dtype=torch.int64)
add_case("embedding.a", {"op": "embedding"}, {"token_weight": rnd(11, 6), "position_weight": rnd(8, 6)},
         lambda token_weight, position_weight: F.embedding(ids, token_weight) + position_weight[:5],
         ints={"ids": ids})

# timestep embedding MLP: linear_1 -> silu -> linear_2 on x [N, in]
add_case("timestep_mlp.a", {"op": "timestep_mlp"},
         {"x": rnd(3, 8), "linear_1.weight": rnd(16, 8, scale=0.4), "linear_1.bias": rnd(16),
          "linear_2.weight": rnd(16, 16, scale=0.3), "linear_2.bias": rnd(16)},
         lambda x, **p: F.linear(F.silu(F.linear(x, p["linear_1.weight"], p["linear_1.bias"])),
                                 p["linear_2.weight"], p["linear_2.bias"]))

# DiagonalGaussian from moments [B, 2C, h, w] (a few logvars beyond the clamp [-30, 20])
moments = rnd(2, 8, 3, 3)
moments[0, 5, 0, 0], moments[1, 6, 2, 1], moments[1, 4, 1, 1] = 25.0, -35.0, 20.0


def gaussian(moments):
    mean, logvar = moments.chunk(2, dim=1)
    return mean, torch.clamp(logvar, -30.0, 20.0)


def gaussian_sample(moments, noise):
    mean, logvar = gaussian(moments)
    return mean + torch.exp(0.5 * logvar) * noise


def gaussian_kl(moments):
    mean, logvar = gaussian(moments)
    return 0.5 * torch.sum(mean.pow(2) + torch.exp(logvar) - 1.0 - logvar, dim=[1, 2, 3])


small = moments.clone()
small[0, 5, 0, 0], small[1, 6, 2, 1], small[1, 4, 1, 1] = 2.5, -3.5, 1.0  # kl of exp(20) would swamp the rest
add_case("gaussian_sample.a", {"op": "gaussian_sample"}, {"moments": moments, "noise": rnd(2, 4, 3, 3)},
         gaussian_sample)
add_case("gaussian_kl.a", {"op": "gaussian_kl"}, {"moments": small}, gaussian_kl)

# losses (mean reduction): out [1]
add_case("mse.a", {"op": "mse"}, {"x": rnd(2, 3, 5), "target": rnd(2, 3, 5)},
         lambda x, target: F.mse_loss(x, target).reshape(1))
add_case("l1.a", {"op": "l1"}, {"x": rnd(2, 3, 5), "target": rnd(2, 3, 5)},
         lambda x, target: F.l1_loss(x, target).reshape(1))

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "grad_primitives.safetensors")
save_file({k: v.contiguous() for k, v in tensors.items()}, out, metadata={"cases": json.dumps(cases)})
print(f"{len(cases)} cases, {len(tensors)} tensors -> {os.path.normpath(out)} ({os.path.getsize(out)} bytes)")
print(f"float64 finite differences of every input at 3 elements: worst relative error {fd_worst[0]:.1e} ({fd_worst[1]})")
