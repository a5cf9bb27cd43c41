#!/usr/bin/env python3
"""Reference for ldm.cpp's long prompts and prompt emphasis: AUTOMATIC1111's own code.

Runs AUTOMATIC1111/stable-diffusion-webui's FrozenCLIPEmbedderWithCustomWords (modules/
sd_hijack_clip.py: tokenize_line's 75-token chunks with comma backtracking and BREAK, the
"Original" emphasis of modules/sd_emphasis.py, parse_prompt_attention of modules/prompt_parser.py)
with its default options on a small CLIP text model with synthetic weights (synth.param, the
real CLIP tokenizer of ../shared/clip-tokenizer, hidden 64, 2 layers, float64), for the prompts
below. Writes, per prompt, the chunks' token ids, their multipliers and A1111's token count to
tests/data/prompt_emphasis_reference.json, and the encoded prompt [1, 77 k, 64] (A1111's
forward: every chunk through CLIP, the weights applied, the mean restored) to
tests/data/prompt_emphasis_reference.safetensors (tests/test_prompt_emphasis.cpp).

    python3 scripts/make_prompt_emphasis_reference.py --a1111 PATH/TO/stable-diffusion-webui

A1111's modules are imported from that checkout, never copied here; its webui-wide modules
(devices, shared.opts, sd_hijack) are replaced by stubs holding its defaults: emphasis
"Original", comma_padding_backtrack 20, CLIP_stop_at_last_layers 1, no textual-inversion
embeddings. The committed reference was made from the checkout's modules at commits
0674fabd (prompt_parser.py), 00e09382 (sd_hijack_clip.py) and 255da37d (sd_emphasis.py).
"""
import argparse
import importlib.util
import json
import os
import sys
import types

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "shared")

# The text encoder: ldm-shapes' CLIP config (the full CLIP vocabulary, hidden 64, 2 layers).
CLIP_CONFIG = dict(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                   num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu",
                   layer_norm_eps=1e-5, projection_dim=64, pad_token_id=1, bos_token_id=49406,
                   eos_token_id=49407, attention_dropout=0.0)

WORDS = "red blue green circle square triangle small large top left bottom right".split()


def words(n, start=0):
    return " ".join(WORDS[(start + i) % len(WORDS)] for i in range(n))


PROMPTS = [
    "a red circle",
    "a (red:1.3) circle on a [blue] background",
    "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
    "(unbalanced emphasis to the end",
    "\\(literal\\] brackets \\\\ and a backslash",
    "((a)) [[b]] (c:0.25) [d:2]",
    "une (souris:1.2) très [petite]",
    "(zero weight:0) and (negative:-1)",
    "(everything at 1.5:1.5)",
    "",
    # BREAK
    "a red circle BREAK a blue square",
    "BREAK",
    "a BREAK BREAK b",
    "(a BREAK b)",
    "[x BREAK y] z",
    # long prompts: 200 tokens, the 75-token boundary, weights across chunks
    words(200),
    words(75),
    words(76),
    "(" + words(60) + ":1.2) " + words(60, 3),
    # comma backtracking: a comma 5 tokens before the boundary moves what follows it
    words(70) + ", " + words(10, 5),
    # a comma 35 tokens before the boundary is too far (20): the chunk is cut at 75
    words(40) + ", " + words(40, 2),
    # a comma as the 75th token: nothing to move
    words(74) + ", " + words(5),
    # commas everywhere, over three chunks, with BREAK in the middle
    ", ".join(words(3, i) for i in range(30)) + " BREAK " + ", ".join(words(2, i) for i in range(12)),
]


def stub(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def load_a1111(checkout):
    mod_dir = os.path.join(checkout, "modules")
    for f in ("prompt_parser.py", "sd_hijack_clip.py", "sd_emphasis.py"):
        if not os.path.isfile(os.path.join(mod_dir, f)):
            sys.exit(f"no {mod_dir}/{f}: --a1111 must be a stable-diffusion-webui checkout")
    stub("lark", Lark=lambda *a, **k: None)  # the prompt-scheduling grammar: not used here
    pkg = stub("modules")
    pkg.__path__ = [mod_dir]
    opts = types.SimpleNamespace(emphasis="Original", comma_padding_backtrack=20, CLIP_stop_at_last_layers=1,
                                 use_old_emphasis_implementation=False, textual_inversion_add_hashes_to_infotext=False)
    pkg.shared = stub("modules.shared", opts=opts)
    pkg.devices = stub("modules.devices", device=torch.device("cpu"), torch_npu_set_device=lambda: None)
    pkg.sd_hijack = stub("modules.sd_hijack", StableDiffusionModelHijack=object)

    def load(name):
        spec = importlib.util.spec_from_file_location("modules." + name, os.path.join(mod_dir, name + ".py"))
        m = importlib.util.module_from_spec(spec)
        sys.modules["modules." + name] = m
        setattr(pkg, name, m)
        spec.loader.exec_module(m)
        return m

    load("prompt_parser")
    load("sd_emphasis")
    return load("sd_hijack_clip")


def synthetic_clip():
    sys.path.insert(0, os.path.join(SHARED, "reference"))
    import synth
    model = CLIPTextModel(CLIPTextConfig(**CLIP_CONFIG)).eval()
    sd = model.state_dict()
    prefix = "" if any(k.startswith("text_model.") for k in sd) else "text_model."
    new = {k: (torch.from_numpy(synth.param(prefix + k, tuple(v.shape))) if v.is_floating_point() else v)
           for k, v in sd.items()}
    model.load_state_dict(new, strict=True)
    return model.double()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a1111", required=True, help="a stable-diffusion-webui checkout")
    ap.add_argument("--tokenizer", default=os.path.join(SHARED, "clip-tokenizer"))
    ap.add_argument("--out", default=os.path.join(HERE, "..", "tests", "data", "prompt_emphasis_reference"))
    a = ap.parse_args()
    sd_hijack_clip = load_a1111(a.a1111)
    wrapped = types.SimpleNamespace(tokenizer=CLIPTokenizer(os.path.join(a.tokenizer, "vocab.json"),
                                                            os.path.join(a.tokenizer, "merges.txt")),
                                    transformer=synthetic_clip())
    hijack = types.SimpleNamespace(
        fixes=None, extra_generation_params={},
        embedding_db=types.SimpleNamespace(find_embedding_at_position=lambda tokens, offset: (None, None)))
    embedder = sd_hijack_clip.FrozenCLIPEmbedderWithCustomWords(wrapped, hijack)

    cases, tensors = [], {}
    with torch.no_grad():
        for i, prompt in enumerate(PROMPTS):
            chunks, token_count = embedder.tokenize_line(prompt)
            z = embedder([prompt])  # [1, 77 k, 64]
            assert z.shape[1] == 77 * len(chunks)
            cases.append({"prompt": prompt, "token_count": token_count,
                          "tokens": [c.tokens for c in chunks],
                          "multipliers": [[float(m) for m in c.multipliers] for c in chunks]})
            tensors[f"case{i}.z"] = z.float().contiguous()
            print(f"{i:2d}: {len(chunks)} chunk(s), {token_count:3d} tokens  {prompt[:60]!r}")
    meta = {"source": "AUTOMATIC1111/stable-diffusion-webui FrozenCLIPEmbedderWithCustomWords (Original emphasis)",
            "clip_config": CLIP_CONFIG, "weights": "synth.param(name), names as in a transformers CLIPTextModel file",
            "cases": cases}
    with open(a.out + ".json", "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=False)
        f.write("\n")
    save_file(tensors, a.out + ".safetensors")
    print(f"wrote {len(cases)} cases to {a.out}.json / .safetensors")


if __name__ == "__main__":
    main()
