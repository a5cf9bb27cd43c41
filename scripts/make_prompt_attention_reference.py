#!/usr/bin/env python3
"""Reference for ldm.cpp's prompt-emphasis parser: AUTOMATIC1111's own parse_prompt_attention.

Runs the function of AUTOMATIC1111/stable-diffusion-webui (modules/prompt_parser.py, the one
its "Original" emphasis uses) on the prompts below and writes what it returns, the runs of text
and their weights, to tests/data/prompt_attention_reference.json; tests/test_prompt_attention.cpp
compares ldm::parse_prompt_attention with it, weight for weight (the same doubles).

    python3 scripts/make_prompt_attention_reference.py --a1111 PATH/TO/stable-diffusion-webui

A1111's module is imported from that checkout, never copied here (its `lark` import, used
only by the prompt-scheduling grammar, is stubbed out). The committed reference was made from
the module at commit 0674fabd0d82c69c02ff362762815c4536687b95. A prompt on which A1111's
function raises (a weight Python's float() cannot read) is recorded with "error": true.
"""
import argparse
import importlib.util
import json
import os
import sys
import types

PROMPTS = [
    # the docstring's own examples
    "normal text",
    "an (important) word",
    "(unbalanced",
    "\\(literal\\]",
    "(unnecessary)(parens)",
    "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
    # weights, nesting, signs
    "a (red:1.5) circle",
    "((a)) [[b]] (c:0.25) [d:2]",
    "((red:1.2) circle:0.8)",
    "(a:+1.5) (b:-0.5) (c:.5) (d:2.)",
    "(a:1.2.3",
    "(a:1.2.3)",
    "(a:.) b",
    "(a: 1.5) and (b :1.5)",
    "a:1.2) stray weight",
    "[unclosed square (and round",
    "((nested unclosed",
    "closing ) and ] without opening",
    "[a (b) c]",
    "([mixed]:1.3)",
    "time: 12:30 (colon:1.1)",
    # escapes
    "\\\\ a backslash, \\( \\) \\[ \\]",
    "a lone \\ backslash and \\x",
    "(escaped \\) inside)",
    # BREAK
    "a red circle BREAK a blue square",
    "BREAK",
    "a BREAK BREAK b",
    "aBREAK BREAKfast break BREAK_ BREAK.",
    "(a BREAK b)",
    "a  \t BREAK\n b",
    "[x BREAK y] z",
    # empty, plain, other scripts
    "",
    "   ",
    "()[]",
    "(:1.5)",
    "a very long prompt, " * 20 + "(the end:1.3)",
    "une (souris:1.2) très [petite]",
    "(漢字:1.4) BREAK 字",
]


def load_parser(a1111):
    path = os.path.join(a1111, "modules", "prompt_parser.py")
    if not os.path.isfile(path):
        sys.exit(f"no {path}: --a1111 must be a stable-diffusion-webui checkout")
    lark = types.ModuleType("lark")
    lark.Lark = lambda *a, **k: None  # the scheduling grammar: not needed for parse_prompt_attention
    sys.modules.setdefault("lark", lark)
    spec = importlib.util.spec_from_file_location("a1111_prompt_parser", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.parse_prompt_attention


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a1111", required=True, help="a stable-diffusion-webui checkout")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data",
                                                  "prompt_attention_reference.json"))
    a = ap.parse_args()
    parse = load_parser(a.a1111)
    cases = []
    for p in PROMPTS:
        try:
            runs = parse(p)
            cases.append({"prompt": p, "runs": [[t, float(w)] for t, w in runs]})
        except ValueError:
            cases.append({"prompt": p, "error": True})
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump({"source": "AUTOMATIC1111/stable-diffusion-webui modules/prompt_parser.py parse_prompt_attention",
                   "cases": cases}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {a.out}")


if __name__ == "__main__":
    main()
