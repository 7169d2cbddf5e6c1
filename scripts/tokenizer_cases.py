#!/usr/bin/env python3
"""Write tokenizer test cases: 100 varied strings with the ids Python's `tokenizers` library
gives for them, so a Rust test can check kiln's tokenizer wiring against it.

Usage: tokenizer_cases.py OUT_JSON TOKENIZER_JSON

OUT_JSON is a list of {"text", "ids", "decoded"} objects: ids from
encode(text, add_special_tokens=False), decoded from decode(ids, skip_special_tokens=False).
The strings are a fixed list plus mixes drawn with a fixed seed, so the same tokenizer.json
always gives the same file. Needs only the `tokenizers` package.
"""

import json
import os
import random
import sys

FIXED = [
    "",
    " ",
    "Hello, world!",
    "What is the capital of France?",
    "The quick brown fox jumps over the lazy dog.",
    "  two leading spaces",
    "trailing spaces   ",
    "multiple     spaces    between   words",
    "line one\nline two\n\nline four",
    "\n\n\n",
    "tabs\tbetween\twords\t\t",
    "mixed \t \n whitespace \r\n end",
    "1234567890",
    "pi is 3.14159265358979",
    "year 2024, 1st of 12 months, 007",
    "phone: +1 (555) 010-9999",
    "x = 42; y = x * 3.5e-10;",
    "Ünïcödé àccents: café, naïve, résumé, Zürich",
    "Ελληνικά και русский язык",
    "日本語のテキストです。",
    "中文文本，包括标点符号。",
    "한국어 문장입니다.",
    "עברית ועربية",
    "हिन्दी पाठ",
    "emoji: 😀🎉👍🏽🇫🇷",
    "family 👨‍👩‍👧‍👦 and flags 🏳️‍🌈",
    "math ∑∫√∞ ≤ ≥ ≠ ±",
    "quotes “curly” ‘single’ «guillemets» — dash – en",
    "zero\u200bwidth\u200cjoiners\u200d",
    "nbsp\u00a0here and ideographic\u3000space",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "text with <|im_end|> in the middle",
    "<|endoftext|>",
    "<|im_start|><|im_end|><|endoftext|>",
    "not special: <|im_start |> <im_start> |im_end|",
    "<repo_name>kiln<file_sep>src/main.rs<filename>",
    "<jupyter_code>print(1)<jupyter_output>1<empty_output>",
    "def f(x):\n    return x ** 2\n",
    "fn main() {\n\tprintln!(\"hi\");\n}",
    "if (a && b || !c) { x += 1; }",
    "<html><body><p class=\"x\">Hi</p></body></html>",
    '{"key": [1, 2, 3], "nested": {"a": null}}',
    "https://example.com/path?query=1&other=two#frag",
    "user@example.org",
    "C:\\Windows\\System32\\drivers",
    "don't can't won't I'm you're they've we'll he'd",
    "DON'T SHOUT 'S 'T",
    "CamelCaseIdentifier snake_case_identifier kebab-case",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "!!!???...,,,;;;:::",
    "$100.00 €50 £20 ¥1000 ₹500",
    "50% off!!! #1 @home",
    "a1b2c3d4e5",
    " 1 22 333 4444",
    "version v1.2.3-rc.4+build.567",
    "Ⅻ ½ ² ³ ٣ ३ 〇",
    "Ǆ ǅ ǆ ﬁ ﬂ ß ẞ",
    "control\x01chars\x7f",
    "combining e\u0301 a\u0308 n\u0303",
    "The end.\n",
]

PIECES = [
    "hello", "world", " the", "SmolLM", "kiln", "tokenizer", " ", "  ", "\n", "\t", "\r\n",
    "0", "7", "42", "1000", "3.14", "-", "_", ".", ",", "!", "?", "'s", "'ll", "\"", "(", ")",
    "é", "ñ", "ü", "Ж", "λ", "日本", "中文", "한", "🙂", "🚀", "👍🏽", "∑", "€",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<", ">", "|", "im_start", "##", "//",
]


def cases():
    rng = random.Random(20241202)
    out = list(FIXED)
    while len(out) < 100:
        out.append("".join(rng.choice(PIECES) for _ in range(rng.randint(3, 14))))
    return out


def main(argv):
    if len(argv) != 3:
        print(f"usage: {os.path.basename(argv[0])} OUT_JSON TOKENIZER_JSON", file=sys.stderr)
        return 2
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(argv[2])
    except Exception as e:  # tokenizers raises plain Exception on a bad file
        print(f"error: {argv[2]}: {e}", file=sys.stderr)
        return 1
    rows = []
    for text in cases():
        ids = tok.encode(text, add_special_tokens=False).ids
        rows.append({"text": text, "ids": ids,
                     "decoded": tok.decode(ids, skip_special_tokens=False)})
    tmp = argv[1] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(rows, f, ensure_ascii=False, indent=1)
        f.write("\n")
    os.replace(tmp, argv[1])
    print(f"wrote {argv[1]}: {len(rows)} cases, {sum(len(r['ids']) for r in rows)} ids")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
