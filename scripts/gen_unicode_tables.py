#!/usr/bin/env python3
"""Generate src/unicode_tables.cpp: the Unicode and HTML tables the CLIP tokenizer needs.

The tokenizer mirrors OpenAI's simple_tokenizer, which uses the `regex` module
(\\p{L}, \\p{N}, \\s), Python's str.lower(), ftfy's NFC step and html.unescape. The
tables are taken from those same sources so the C++ code agrees with Python:
  - letters \\p{L}, numbers \\p{N}, whitespace \\s: the `regex` module if installed
    (its Unicode version is what CLIP used), else unicodedata
  - lower-case: str.lower() (single-code-point results; U+0130 is special-cased in C++),
    and the Cased / Case_Ignorable properties its final-sigma rule uses, read back from
    str.lower() itself (Python does not expose them)
  - NFC (ftfy's last step): canonical combining classes, canonical composition pairs
    (whose inverse is the decomposition of primary composites) and the NFC of each other
    code point NFC changes (singletons like U+212B ANGSTROM SIGN, composition exclusions)
  - HTML entities: the HTML 4 names (+ &apos;) from html.entities, with their
    legacy no-semicolon forms, and the numeric-reference fix-ups of html.unescape

Usage: python3 scripts/gen_unicode_tables.py [out.cpp]   (default src/unicode_tables.cpp)
"""
import html
import html.entities as he
import os
import sys
import unicodedata as ud

MAX_CP = 0x110000


def category_sets():
    try:
        import regex

        letter = regex.compile(r"\p{L}")
        number = regex.compile(r"\p{N}")
        space = regex.compile(r"\s")
        src = f"regex {regex.__version__}"
        return (lambda c: letter.match(c) is not None,
                lambda c: number.match(c) is not None,
                lambda c: space.match(c) is not None, src)
    except ImportError:
        src = f"unicodedata {ud.unidata_version}"
        return (lambda c: ud.category(c)[0] == "L",
                lambda c: ud.category(c)[0] == "N",
                lambda c: ud.category(c) in ("Zs", "Zl", "Zp") or c in "\t\n\v\f\r\x85", src)


def ranges(pred):
    out = []
    for cp in range(MAX_CP):
        if pred(chr(cp)):
            if out and out[-1][1] == cp - 1:
                out[-1][1] = cp
            else:
                out.append([cp, cp])
    return out


def lower_runs():
    """(first, last, delta, stride) runs: lower(c) = c + delta for c = first, first+stride, .. last."""
    pairs = []
    for cp in range(MAX_CP):
        lo = chr(cp).lower()
        if len(lo) == 1 and ord(lo) != cp:
            pairs.append((cp, ord(lo) - cp))
    runs = []
    for cp, delta in pairs:
        if runs:
            first, last, d, stride = runs[-1]
            step = cp - last
            if d == delta and step in (1, 2) and (first == last or step == stride):
                runs[-1] = [first, cp, d, step]
                continue
        runs.append([cp, cp, delta, 1])
    return runs


def sigma_context_sets():
    """Cased and Case_Ignorable as str.lower() sees them around a capital sigma.

    ("c" + SIGMA).lower() ends in final sigma iff c is cased and not case-ignorable;
    ("A" + c + SIGMA).lower() does iff c is case-ignorable or cased.
    """
    def final(s):
        return s.lower()[-1] == "\u03c2"

    cased = lambda c: final(c + "\u03a3")
    ignorable = lambda c: final("A" + c + "\u03a3") and not cased(c)
    return cased, ignorable


def compose_pairs():
    out = []
    for cp in range(MAX_CP):
        d = ud.decomposition(chr(cp))
        if not d or d.startswith("<"):
            continue
        parts = d.split()
        if len(parts) != 2:
            continue
        a, b = int(parts[0], 16), int(parts[1], 16)
        if ud.normalize("NFC", chr(a) + chr(b)) == chr(cp):
            out.append((a, b, cp))
    return sorted(out)


def combining_runs():
    """(first, last, ccc) runs of equal non-zero canonical combining class."""
    out = []
    for cp in range(MAX_CP):
        k = ud.combining(chr(cp))
        if not k:
            continue
        if out and out[-1][1] == cp - 1 and out[-1][2] == k:
            out[-1][1] = cp
        else:
            out.append([cp, cp, k])
    return out


def nfc_singles():
    """(c, d0, d1, d2): NFC(c) = d0 d1 d2 (zeros pad) for the code points NFC changes."""
    out = []
    for cp in range(MAX_CP):
        if 0xAC00 <= cp <= 0xD7A3 or 0xD800 <= cp <= 0xDFFF:
            continue
        nfc = ud.normalize("NFC", chr(cp))
        if nfc != chr(cp):
            assert len(nfc) <= 3
            out.append((cp, *[ord(x) for x in nfc], *[0] * (3 - len(nfc))))
    return out


def html_entities():
    names = set(he.name2codepoint) | {"apos", "AMP", "LT", "GT", "QUOT", "COPY", "REG"}
    out = []
    for name in sorted(names):
        value = he.html5[name + ";"]
        assert len(value) == 1
        out.append((name, ord(value), name in he.html5))
    return out


def cp1252_charrefs():
    return sorted((k, ord(v)) for k, v in html._invalid_charrefs.items() if 0x80 <= k <= 0x9F)


def fmt_rows(rows, per_line):
    lines = []
    for i in range(0, len(rows), per_line):
        lines.append("    " + " ".join(rows[i:i + per_line]))
    return "\n".join(lines)


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "src", "unicode_tables.cpp")
    is_letter, is_number, is_space, src = category_sets()
    letters, numbers, spaces = ranges(is_letter), ranges(is_number), ranges(is_space)
    lowers, pairs, entities, charrefs = lower_runs(), compose_pairs(), html_entities(), cp1252_charrefs()
    singles, combining = nfc_singles(), combining_runs()
    is_cased, is_ignorable = sigma_context_sets()
    cased, ignorable = ranges(is_cased), ranges(is_ignorable)

    def rng(rs):
        return fmt_rows([f"{{0x{a:X}, 0x{b:X}}}," for a, b in rs], 6)

    text = f"""// Generated by scripts/gen_unicode_tables.py -- do not edit by hand.
// Sources: categories from {src}; lower-case from Python {sys.version.split()[0]} str.lower();
// normalization from unicodedata {ud.unidata_version}; HTML entities from html.entities.
// clang-format off
#include "ldm/core/unicode.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

namespace ldm::unicode {{
namespace {{

struct Range {{ char32_t first, last; }};
struct LowerRun {{ char32_t first, last; int delta, stride; }};
struct Compose {{ char32_t a, b, c; }};
struct NfcSingle {{ char32_t c; char32_t d[3]; }};
struct CombiningRun {{ char32_t first, last; int ccc; }};
struct Entity {{ const char* name; char32_t cp; bool legacy; }};

// \\p{{L}}: {len(letters)} ranges
const Range kLetters[] = {{
{rng(letters)}
}};

// \\p{{N}}: {len(numbers)} ranges
const Range kNumbers[] = {{
{rng(numbers)}
}};

// \\s of the regex module: {len(spaces)} ranges
const Range kSpaces[] = {{
{rng(spaces)}
}};

// Cased (and not Case_Ignorable), for str.lower()'s final sigma: {len(cased)} ranges
const Range kCased[] = {{
{rng(cased)}
}};

// Case_Ignorable: {len(ignorable)} ranges
const Range kCaseIgnorable[] = {{
{rng(ignorable)}
}};

// lower(c) = c + delta for c = first, first + stride, ..., last: {len(lowers)} runs
const LowerRun kLower[] = {{
{fmt_rows([f"{{0x{a:X}, 0x{b:X}, {d}, {s}}}," for a, b, d, s in lowers], 4)}
}};

// Canonical combining class (non-zero only): {len(combining)} runs
const CombiningRun kCombining[] = {{
{fmt_rows([f"{{0x{a:X}, 0x{b:X}, {k}}}," for a, b, k in combining], 5)}
}};

// NFC of one code point c -> d0 [d1 [d2]], sorted by c: {len(singles)} entries
const NfcSingle kNfcSingle[] = {{
{fmt_rows([f"{{0x{c:X}, {{0x{a:X}, 0x{b:X}, 0x{d:X}}}}}," for c, a, b, d in singles], 4)}
}};

// Canonical composition a + b -> c, sorted by (a, b): {len(pairs)} pairs
const Compose kCompose[] = {{
{fmt_rows([f"{{0x{a:X}, 0x{b:X}, 0x{c:X}}}," for a, b, c in pairs], 4)}
}};

// HTML 4 named entities (+ apos), sorted by name; legacy = also valid without ';'
const Entity kEntities[] = {{
{fmt_rows([f'{{"{n}", 0x{c:X}, {"true" if l else "false"}}},' for n, c, l in entities], 4)}
}};

// html.unescape maps numeric references 0x80..0x9F through windows-1252
const char32_t kCp1252[32] = {{
{fmt_rows([f"0x{v:X}," for _, v in charrefs], 8)}
}};

bool in_ranges(const Range* begin, const Range* end, char32_t c) {{
  const Range* it = std::upper_bound(begin, end, c, [](char32_t v, const Range& r) {{ return v < r.first; }});
  return it != begin && c <= (it - 1)->last;
}}

}}  // namespace

bool is_letter(char32_t c) {{ return in_ranges(std::begin(kLetters), std::end(kLetters), c); }}
bool is_number(char32_t c) {{ return in_ranges(std::begin(kNumbers), std::end(kNumbers), c); }}
bool is_space(char32_t c) {{ return in_ranges(std::begin(kSpaces), std::end(kSpaces), c); }}
bool is_cased(char32_t c) {{ return in_ranges(std::begin(kCased), std::end(kCased), c); }}
bool is_case_ignorable(char32_t c) {{ return in_ranges(std::begin(kCaseIgnorable), std::end(kCaseIgnorable), c); }}

char32_t to_lower(char32_t c) {{
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  const LowerRun* it = std::upper_bound(std::begin(kLower), std::end(kLower), c,
                                        [](char32_t v, const LowerRun& r) {{ return v < r.first; }});
  if (it == std::begin(kLower)) return c;
  const LowerRun& r = *(it - 1);
  if (c > r.last || (c - r.first) % r.stride != 0) return c;
  return static_cast<char32_t>(static_cast<int>(c) + r.delta);
}}

int combining_class(char32_t c) {{
  if (c < 0x300) return 0;
  const CombiningRun* it = std::upper_bound(std::begin(kCombining), std::end(kCombining), c,
                                            [](char32_t v, const CombiningRun& r) {{ return v < r.first; }});
  return (it != std::begin(kCombining) && c <= (it - 1)->last) ? (it - 1)->ccc : 0;
}}

void canonical_decompose(char32_t c, std::u32string& out) {{
  constexpr char32_t SBase = 0xAC00, LBase = 0x1100, VBase = 0x1161, TBase = 0x11A7;
  constexpr char32_t TCount = 28, NCount = 21 * TCount, SCount = 19 * NCount;
  if (c < 0xC0) {{  // nothing below U+00C0 decomposes
    out += c;
    return;
  }}
  if (c >= SBase && c < SBase + SCount) {{  // Hangul syllable -> L V (T)
    const char32_t s = c - SBase;
    out += LBase + s / NCount;
    out += VBase + (s % NCount) / TCount;
    if (s % TCount) out += TBase + s % TCount;
    return;
  }}
  const NfcSingle* single = std::lower_bound(std::begin(kNfcSingle), std::end(kNfcSingle), c,
                                             [](const NfcSingle& e, char32_t v) {{ return e.c < v; }});
  if (single != std::end(kNfcSingle) && single->c == c) {{
    for (int k = 0; k < 3 && single->d[k] != 0; ++k) canonical_decompose(single->d[k], out);
    return;
  }}
  // Primary composites: invert kCompose (sorted by c once).
  static const std::vector<Compose> by_c = [] {{
    std::vector<Compose> v(std::begin(kCompose), std::end(kCompose));
    std::sort(v.begin(), v.end(), [](const Compose& x, const Compose& y) {{ return x.c < y.c; }});
    return v;
  }}();
  auto it = std::lower_bound(by_c.begin(), by_c.end(), c, [](const Compose& e, char32_t v) {{ return e.c < v; }});
  if (it != by_c.end() && it->c == c) {{
    canonical_decompose(it->a, out);
    canonical_decompose(it->b, out);
    return;
  }}
  out += c;
}}

char32_t compose(char32_t a, char32_t b) {{
  // Hangul syllables compose algorithmically (Unicode 3.12).
  constexpr char32_t SBase = 0xAC00, LBase = 0x1100, VBase = 0x1161, TBase = 0x11A7;
  constexpr char32_t LCount = 19, VCount = 21, TCount = 28, NCount = VCount * TCount;
  if (a >= LBase && a < LBase + LCount && b >= VBase && b < VBase + VCount)
    return SBase + ((a - LBase) * VCount + (b - VBase)) * TCount;
  if (a >= SBase && a < SBase + LCount * NCount && (a - SBase) % TCount == 0 && b > TBase && b < TBase + TCount)
    return a + (b - TBase);
  const Compose key{{a, b, 0}};
  auto less = [](const Compose& x, const Compose& y) {{ return x.a != y.a ? x.a < y.a : x.b < y.b; }};
  const Compose* it = std::lower_bound(std::begin(kCompose), std::end(kCompose), key, less);
  return (it != std::end(kCompose) && it->a == a && it->b == b) ? it->c : 0;
}}

char32_t html_entity(const std::string& name, bool with_semicolon) {{
  const Entity* it = std::lower_bound(std::begin(kEntities), std::end(kEntities), name,
                                      [](const Entity& e, const std::string& n) {{ return std::strcmp(e.name, n.c_str()) < 0; }});
  if (it == std::end(kEntities) || name != it->name) return 0;
  return (with_semicolon || it->legacy) ? it->cp : 0;
}}

char32_t cp1252(char32_t c) {{ return (c >= 0x80 && c <= 0x9F) ? kCp1252[c - 0x80] : c; }}

}}  // namespace ldm::unicode
"""
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {out_path}: {len(letters)} letter, {len(numbers)} number, {len(spaces)} space ranges, "
          f"{len(cased)} cased, {len(ignorable)} case-ignorable ranges, {len(lowers)} lower runs, "
          f"{len(combining)} combining runs, {len(singles)} NFC singles, {len(pairs)} compositions, {len(entities)} entities")


if __name__ == "__main__":
    main()
