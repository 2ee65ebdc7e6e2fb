// make_fixtures.mjs: independent reference for the byte-level BPE tokenizer
// (Hugging Face tokenizer.json, Llama 3). Writes tests/fixtures/llama3_tokenizer/.
//
// Reference: the npm package @lenml/tokenizers (a dependency-free fork of the
// tokenizer half of transformers.js), version pinned in package.json and
// package-lock.json. It is fed the SHARED tokenizer.json and
// tokenizer_config.json read from disk (never a copy bundled in a package, and
// never a copy in this repository).
//
// Regenerate, from the repository root:
//   (cd tests/reference/llama3_tokenizer && npm ci)
//   node tests/reference/llama3_tokenizer/make_fixtures.mjs [TOKENIZER_DIR] [OUT_DIR]
// TOKENIZER_DIR holds tokenizer.json + tokenizer_config.json (default
// <repo>/../shared/models/tokenizers/llama3); OUT_DIR defaults to
// <repo>/tests/fixtures/llama3_tokenizer. The output is deterministic (fixed
// cases, a seeded mulberry32 PRNG): rerunning gives the same bytes. The script
// then checks the fixtures (known ids, round trips) and exits 1 on a failure.
//
// THE INPUT RULE (the C side must replicate it). Every case is a byte string,
// stored as hex. The text the reference encodes is those bytes decoded the
// WHATWG way:  new TextDecoder("utf-8", { fatal: false, ignoreBOM: true }).
//   - valid UTF-8 decodes to itself (a leading EF BB BF is kept as U+FEFF:
//     ignoreBOM true; the TextDecoder default, ignoreBOM false, would drop it);
//   - each maximal subpart of an ill-formed sequence becomes ONE U+FFFD
//     (Unicode "U+FFFD substitution of maximal subparts", W3C/WHATWG encoding
//     standard): a lead byte followed by some but not all of the continuation
//     bytes it allows is one subpart; any other bad byte (a lone continuation
//     byte, C0, C1, F5..FF, the second byte of an overlong or surrogate form
//     E0 80..9F / ED A0..BF / F0 80..8F / F4 90..BF) is a subpart of its own.
//     E.g. E2 82 41 -> U+FFFD "A"; C0 80 -> U+FFFD U+FFFD; ED A0 80 -> three
//     U+FFFD; F0 9F 98 -> one U+FFFD.
// Then ids = encode(text) and the input is not looked at again.
//
// What is recorded per case (see the fixture README for every field):
//   ids         tokenizer.encode(text, { add_special_tokens: false }): no BOS; the
//               256 added tokens (all special) written in the text ARE matched
//               (the library's default, as HF's).
//   ids_literal the same text with special-token matching off (HF's
//               split_special_tokens=True / encode_special_tokens): @lenml has no
//               such option, so it is a second tokenizer built from the same
//               tokenizer.json with "added_tokens" emptied; the normalizer,
//               pre-tokenizer and BPE model are the same objects' code.
//   decoded_hex decode(ids, { skip_special_tokens: false,
//               clean_up_tokenization_spaces: false }) as UTF-8 (the raw ByteLevel
//               decode; ill-formed byte runs -> U+FFFD by the same TextDecoder
//               rule, special tokens -> their text). decode([]) throws in the
//               library; it is recorded as "".
//   decoded_cleanup_hex  only where it differs from decoded_hex: decode with the
//               library's default, clean_up_tokenization_spaces from
//               tokenizer_config.json (true for Llama 3: " ." -> ".", " 's" ->
//               "'s", ...). HF transformers' decode() does the same by default.
//   replaced_hex only for ill-formed input: the UTF-8 of the text actually encoded.
//
// Regex semantics are JavaScript's (V8, `u` flag, the Unicode version printed
// below and in the README): \s is JS WhiteSpace+LineTerminator, which includes
// U+FEFF and excludes U+0085 (Unicode White_Space is the other way round), and
// the (?i:'s|...) group is rewritten by the library as ASCII-only [sS] etc. (no
// Unicode case folding: "'ſ" is not a contraction). Cases that hit these spots
// are named "js-*"; the random strings avoid them.

import { TokenizerLoader } from "@lenml/tokenizers";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../../..");
const tokDir = path.resolve(
  process.argv[2] ?? path.join(repo, "..", "shared", "models", "tokenizers", "llama3")
);
const outDir = path.resolve(
  process.argv[3] ?? path.join(repo, "tests", "fixtures", "llama3_tokenizer")
);

// The package's "exports" hides package.json; read it from node_modules beside this script.
const pkgVersion = JSON.parse(
  fs.readFileSync(path.join(here, "node_modules", "@lenml", "tokenizers", "package.json"), "utf8")
).version;

const tokenizerJSON = JSON.parse(fs.readFileSync(path.join(tokDir, "tokenizer.json"), "utf8"));
const tokenizerConfig = JSON.parse(
  fs.readFileSync(path.join(tokDir, "tokenizer_config.json"), "utf8")
);

const tok = TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig });
const tokLiteral = TokenizerLoader.fromPreTrained({
  tokenizerJSON: { ...tokenizerJSON, added_tokens: [] },
  tokenizerConfig,
});

const utf8 = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });
const hex = (bytes) => Buffer.from(bytes).toString("hex");
const sameBytes = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

function decodeIds(t, ids, cleanup) {
  if (ids.length === 0) return "";
  const opts = { skip_special_tokens: false };
  if (!cleanup) opts.clean_up_tokenization_spaces = false;
  return t.decode(ids, opts);
}

// ---------------------------------------------------------------- PRNG
function mulberry32(seed) {
  let a = seed >>> 0;
  return function () {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rnd = mulberry32(0x11a3a3);
const randInt = (lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1)); // inclusive
const pick = (arr) => arr[Math.floor(rnd() * arr.length)];

// ---------------------------------------------------------------- cases
const cases = []; // { name, bytes: Uint8Array }
const seen = new Map();
function add(name, text) {
  addBytes(name, utf8.encode(text));
}
function addBytes(name, bytes) {
  if (seen.has(name)) throw new Error(`duplicate case name ${name}`);
  seen.set(name, true);
  cases.push({ name, bytes: Uint8Array.from(bytes) });
}
const B = (...parts) =>
  parts.flatMap((p) => (typeof p === "string" ? Array.from(utf8.encode(p)) : p));

// English prose
add("en-hello-world", "Hello world");
add("en-hello-world-lead-space", " Hello world");
add("en-hello-punct", "Hello, world!");
add("en-pangram", "The quick brown fox jumps over the lazy dog.");
add(
  "en-paragraph",
  "It was the best of times, it was the worst of times; it was the age of wisdom... " +
    "\"Really?\" she asked -- and then (quietly) left. Mr. O'Brien paid $3.50 at 9:30 a.m. " +
    "for 2 coffees & a croissant: see https://example.com/menu?item=42#top or mail info@example.com."
);
add("en-mixed-case", "iPhone HTTPServer McDonald's camelCaseIdentifier XMLHttpRequest ALLCAPS");
add("en-typography", "\u201cCurly quotes\u201d \u2014 em dash \u2013 en dash \u2026 ellipsis \u2018single\u2019 \u00abguillemets\u00bb");
add("en-hashtags", "#hashtag @mention $TICKER 100% ~tilde `backtick` ^caret |pipe| \\backslash/");
add("en-punct-runs", "Wait!!! What??? ...!?!? ---- **** ((()))  [[]] {{}} <<>>");
add("en-single-letters", "a b c d e f g h i j k l m n o p q r s t u v w x y z");
add("en-sentence-newlines", "First line.\nSecond line.\n\nNew paragraph.\n");

// Source code
add(
  "code-c",
  "#include <stdio.h>\n\nint main(int argc, char **argv) {\n\tfor (int i = 0; i < argc; ++i) {\n" +
    "\t\tprintf(\"%d: %s\\n\", i, argv[i]);\n\t}\n\treturn 0; /* done */\n}\n"
);
add(
  "code-python",
  "def fib(n: int) -> int:\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:\n" +
    "        return n\n    a, b = 0, 1\n    for _ in range(n - 1):\n        a, b = b, a + b\n" +
    "    return b\n\n\nclass Foo:\n    def __init__(self):\n        self.x = {'k': [1, 2, 3]}  # comment\n"
);
add(
  "code-json",
  '{\n  "name": "qlora",\n  "version": 1.5,\n  "tags": ["a", "b"],\n  "nested": {"x": null, "y": true, "z": -3e-7},\n  "empty": {}\n}'
);
add("code-json-compact", '{"a":1,"b":[true,false,null],"c":"\\u00e9\\n"}');
add("code-shell", "for f in *.txt; do\n  grep -c 'foo' \"$f\" || echo \"none\" >&2\ndone\n");
add("code-js", "const f = (x) => x?.y ?? [...z].map(v => v ** 2);\nconsole.log(`t=${f(1)}`);\n");
add("code-html", "<div class=\"a\"><p>Hi &amp; bye</p><br/></div>");

// Numbers
const digits20 = "12345678901234567890";
for (let n = 1; n <= 20; ++n) add(`num-digits-${n}`, digits20.slice(0, n));
for (let n = 1; n <= 20; ++n) add(`num-digits-${n}-in-text`, `x ${"9876543210".repeat(2).slice(0, n)} y`);
add("num-0-to-9", "0 1 2 3 4 5 6 7 8 9");
add("num-thousands-comma", "1,234,567,890");
add("num-thousands-space", "1 234 567");
add("num-thousands-underscore", "1_000_000");
add("num-european", "1.234.567,89");
add("num-decimals", "3.14159 0.5 .5 5. 2.718281828459045");
add("num-negative", "-42 -0.001 -1,000 \u22127 +7");
add("num-scientific", "1e-10 6.02e23 6.02E+23 1.0e0");
add("num-money-percent", "$1,299.99 \u20ac5 \u00a310.00 50% 0.5\u2030");
add("num-date-time", "2024-01-15T12:30:45Z 15/01/2024 12:30:45.123");
add("num-version-ip", "v1.2.3 192.168.0.1 ::1 0x1F 0b1010 0o17");
add("num-phone", "+1 (555) 123-4567");
add("num-letters", "abc123def H2O 4ever 1st 2nd 3rd 10x COVID19");
add("num-unicode-digits", "\u0663\u0664\u0665 \uff11\uff12\uff13 \u0967\u0968 \u00b2\u00b3\u00b9 \u00bd\u00bc \u216b\u2160 \u2460\u2461");
add("num-long-mixed", "31415926535 8979323846-2643383279.5028841971");

// Whitespace
for (let n = 1; n <= 10; ++n) add(`ws-spaces-${n}`, " ".repeat(n));
for (let n = 1; n <= 10; ++n) add(`ws-a-spaces-${n}-b`, `a${" ".repeat(n)}b`);
for (let n = 1; n <= 4; ++n) add(`ws-tabs-${n}`, "\t".repeat(n));
for (let n = 1; n <= 4; ++n) add(`ws-newlines-${n}`, "\n".repeat(n));
add("ws-a-tab-b", "a\tb");
add("ws-a-tabs-b", "a\t\t\tb");
add("ws-a-newline-b", "a\nb");
add("ws-a-2newlines-b", "a\n\nb");
add("ws-crlf", "\r\n");
add("ws-a-crlf-b", "a\r\nb");
add("ws-a-2crlf-b", "a\r\n\r\nb");
add("ws-cr", "\r");
add("ws-a-cr-b", "a\rb");
add("ws-space-newline", " \n");
add("ws-newline-space", "\n ");
add("ws-spaces-newline-spaces", "  \n  ");
add("ws-mixed-start-end", "  \t\n hello \t \n");
add("ws-mixed-inner", "hello  \n\n  world  ");
add("ws-leading", "   x");
add("ws-trailing", "x   ");
add("ws-a-space-newline-space-b", "a \n b");
add("ws-space-before-punct", "a , b . c ! d ?");
add("ws-tab-indent-code", "if (x)\n\t\ty = 1;\n\t}\n");
add("ws-newline-punct", "end.\n\n---\n\n* item\n");
add("ws-vt-ff", "a\u000bb\u000cc");
add("ws-nbsp", "a\u00a0b \u00a0 c");
add("ws-ideographic", "a\u3000b");
add("ws-em-space", "a\u2003b\u2009c\u202fd");
add("ws-line-para-sep", "a\u2028b\u2029c");
add("js-ws-nel", "a\u0085b \u0085 c");
add("js-ws-bom", "\ufeffhello \ufeff world");

// Contractions
add("contr-lower", "I'm you're don't we'll she'd they've it's");
add("contr-upper", "I'M YOU'RE DON'T WE'LL SHE'D THEY'VE IT'S");
add("contr-mixed", "she'D We'Ll yOu'Re he'S I'm");
add("contr-YOU'RE", "YOU'RE");
add("contr-WE'LL", "WE'LL");
add("contr-she'D", "she'D");
add("contr-don't", "don't");
add("contr-I'm", "I'm");
add("contr-alone", "'s 'S 't 're 've 'm 'll 'd 'LL 'Re");
add("contr-others", "can't won't y'all rock'n'roll O'Neill ''s 's's 'll've");
add("contr-possessive", "The dog's bone and James' hat");
add("contr-curly", "I\u2019m don\u2019t");
add("contr-quote-space", "' s ' t 'x 'sa 'ss");
add("js-contr-long-s", "it'\u017f");

// Scripts
add("fr", "O\u00f9 est la biblioth\u00e8que ? L'\u00e9t\u00e9 dernier, nous \u00e9tions \u00e0 Paris \u2014 c'\u00e9tait g\u00e9nial ! \u00c7a va ? \u0152uvre na\u00efve.");
add("vi", "Ti\u1ebfng Vi\u1ec7t c\u00f3 d\u1ea5u: Xin ch\u00e0o, t\u00f4i t\u00ean l\u00e0 Nguy\u1ec5n V\u0103n \u0110\u1ee9c.");
add("pl", "Za\u017c\u00f3\u0142\u0107 g\u0119\u015bl\u0105 ja\u017a\u0144. \u0141\u00f3d\u017a, Krak\u00f3w, Gda\u0144sk.");
add("de", "Stra\u00dfe, Gr\u00f6\u00dfe, \u00c4rger \u00fcber \u00d6l \u1e9e");
add("ru", "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0421\u044a\u0435\u0448\u044c \u0436\u0435 \u0435\u0449\u0451 \u044d\u0442\u0438\u0445 \u043c\u044f\u0433\u043a\u0438\u0445 \u0444\u0440\u0430\u043d\u0446\u0443\u0437\u0441\u043a\u0438\u0445 \u0431\u0443\u043b\u043e\u043a.");
add("uk", "\u0407\u0436\u0430\u043a \u0456 \u0491\u0430\u043d\u043e\u043a \u2014 \u0443\u043a\u0440\u0430\u0457\u043d\u0441\u044c\u043a\u0430 \u043c\u043e\u0432\u0430.");
add("el", "\u039a\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1 \u03ba\u03cc\u03c3\u03bc\u03b5\u00b7 \u03bf \u0396\u03b5\u03cd\u03c2 \u03ba\u03b1\u03b9 \u03b7 \u0389\u03c1\u03b1;");
add("ar", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645\u060c \u0643\u064a\u0641 \u062d\u0627\u0644\u0643\u061f \u0627\u0644\u0633\u0651\u064e\u0644\u0627\u0645\u064f \u0639\u064e\u0644\u064e\u064a\u0652\u0643\u064f\u0645\u0652");
add("he", "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd! \u05e2\u05b4\u05d1\u05b0\u05e8\u05b4\u05d9\u05ea");
add("hi", "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e, \u092f\u0939 \u0939\u093f\u0902\u0926\u0940 \u0939\u0948\u0964");
add("th", "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e0a\u0e32\u0e27\u0e42\u0e25\u0e01");
add("zh", "\u4f60\u597d\uff0c\u4e16\u754c\uff01\u6211\u7231\u5317\u4eac\u5929\u5b89\u95e8\u3002\u7e41\u9ad4\u4e2d\u6587\u5b57");
add("ja", "\u3053\u3093\u306b\u3061\u306f\u4e16\u754c\u3002\u30ab\u30bf\u30ab\u30ca\u3068\u3072\u3089\u304c\u306a\u3001\u6f22\u5b57\u3002\uff8a\uff9d\uff76\uff78\uff76\uff85");
add("ko", "\uc548\ub155\ud558\uc138\uc694 \uc138\uacc4! \ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8\uc785\ub2c8\ub2e4.");
add("mixed-scripts", "English, \u0440\u0443\u0441\u0441\u043a\u0438\u0439, \u4e2d\u6587, \u0627\u0644\u0639\u0631\u0628\u064a\u0629 and 123\u4e2d\u6587abc");
add("cjk-ext-b", "\u{20000}\u{2A6D6}\u{2B740}"); // supplementary-plane letters (4-byte UTF-8)
add("math-letters", "\u{1D400}\u{1D401} \u{1D7CE}\u{1D7CF}"); // mathematical bold letters and digits

// Emoji
add("emoji-one", "\u{1F600}");
add("emoji-in-text", "Hello \u{1F600} world");
add("emoji-skin-tone", "\u{1F44D}\u{1F3FD}");
add("emoji-zwj-family", "\u{1F468}\u200d\u{1F469}\u200d\u{1F467}\u200d\u{1F466}");
add("emoji-rainbow-flag", "\u{1F3F3}\ufe0f\u200d\u{1F308}");
add("emoji-flags", "\u{1F1EB}\u{1F1F7}\u{1F1EF}\u{1F1F5}\u{1F1FA}\u{1F1F8}");
add("emoji-heart-vs16", "\u2764\ufe0f");
add("emoji-zwj-skin", "\u{1F9D1}\u{1F3FF}\u200d\u{1F4BB}");
add("emoji-keycap", "1\ufe0f\u20e3 #\ufe0f\u20e3");
add("emoji-run", "\u{1F600}\u{1F600}\u{1F600}");
add("emoji-between-letters", "a\u{1F600}b");
add("emoji-mixed", "I \u2764\ufe0f NY \u{1F5FD}! \u{1F680}\u{1F680} \u2705 done \u{1F389}");

// Combining marks
add("comb-e-acute", "e\u0301");
add("comb-cafe", "Cafe\u0301 vs Caf\u00e9");
add("comb-stack", "a\u0300\u0301\u0302\u0303");
add("comb-leading", "\u0301abc");
add("comb-after-space", " \u0301 x");
add("comb-zalgo", "Z\u0324\u0354\u0367\u0311\u0313a\u0308\u0356\u032d\u0308\u0307l\u036e\u0312\u036bg\u030c\u0317\u035ao\u0319\u0314\u036e\u0307\u0350\u0307");
add("comb-hangul-jamo", "\u1100\u1161\u11a8 \u1112\u1161\u11ab");
add("comb-after-digit", "1\u0301 2\u20dd");

// Invalid UTF-8 (bytes)
addBytes("bad-lone-cont-80", [0x80]);
addBytes("bad-lone-cont-in-text", B("a", [0x80], "b"));
addBytes("bad-cont-bf-bf", [0xbf, 0xbf]);
addBytes("bad-trunc2-c3", [0xc3]);
addBytes("bad-trunc2-c3-end", B("a", [0xc3]));
addBytes("bad-trunc2-c3-then-ascii", B([0xc3], "a"));
addBytes("bad-trunc2-c3-28", B("abc", [0xc3, 0x28], "def"));
addBytes("bad-trunc3-e2", [0xe2]);
addBytes("bad-trunc3-e2-82", [0xe2, 0x82]);
addBytes("bad-trunc3-e2-82-then-ascii", B([0xe2, 0x82], "A"));
addBytes("bad-trunc4-f0", [0xf0]);
addBytes("bad-trunc4-f0-9f", [0xf0, 0x9f]);
addBytes("bad-trunc4-f0-9f-98", [0xf0, 0x9f, 0x98]);
addBytes("bad-trunc4-f0-9f-98-then-ascii", B([0xf0, 0x9f, 0x98], " ok"));
addBytes("bad-overlong-nul-c0-80", [0xc0, 0x80]);
addBytes("bad-overlong-slash-c0-af", [0xc0, 0xaf]);
addBytes("bad-overlong-c1-bf", [0xc1, 0xbf]);
addBytes("bad-overlong3-e0-80-af", [0xe0, 0x80, 0xaf]);
addBytes("bad-overlong4-f0-80-80-af", [0xf0, 0x80, 0x80, 0xaf]);
addBytes("bad-surrogate-d800", [0xed, 0xa0, 0x80]);
addBytes("bad-surrogate-dfff", [0xed, 0xbf, 0xbf]);
addBytes("bad-surrogate-pair-cesu", [0xed, 0xa0, 0xbd, 0xed, 0xb8, 0x80]);
addBytes("bad-above-10ffff-f4-90", [0xf4, 0x90, 0x80, 0x80]);
addBytes("bad-f5", [0xf5, 0x80, 0x80, 0x80]);
addBytes("bad-5byte-f8", [0xf8, 0x88, 0x80, 0x80, 0x80]);
addBytes("bad-fe", [0xfe]);
addBytes("bad-ff", [0xff]);
addBytes("bad-fe-ff", [0xfe, 0xff]);
addBytes("bad-ff-fe-a", [0xff, 0xfe, 0x61]);
addBytes("bad-in-words", B("hello ", [0xff], " world"));
addBytes("bad-then-valid-e-acute", B([0x80], "\u00e9"));
addBytes("bad-trunc3-then-euro", B([0xe2, 0x82], "\u20ac"));
addBytes("bad-trunc4-then-emoji", B([0xf0, 0x9f, 0x98], "\u{1F600}"));
addBytes("bad-then-cjk", B([0xc3], "\u4e2d"));
addBytes("bad-between-spaces", B(" ", [0x80], " "));
addBytes("bad-before-special", B([0xe2], "<|eot_id|>"));
addBytes("bad-after-special", B("<|eot_id|>", [0x9f]));
addBytes("bad-between-digits", B("12", [0xa0], "34"));
addBytes("bad-many", B([0xc0, 0xc1, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff]));
addBytes("bad-e0-9f", [0xe0, 0x9f, 0x80]);
addBytes("bad-f0-8f", [0xf0, 0x8f, 0xbf, 0xbf]);
add("valid-fffd-itself", "\ufffd and \ufffd\ufffd");
add("valid-boundary-chars", "\u007f\u0080\u07ff\u0800\uffff\u{10000}\u{10ffff}");

// Special tokens in text
add("sp-begin", "<|begin_of_text|>");
add("sp-end", "<|end_of_text|>");
add("sp-eot", "<|eot_id|>");
add("sp-chat-turn", "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>");
add(
  "sp-chat-full",
  "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>" +
    "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
);
add("sp-reserved-5", "<|reserved_special_token_5|>");
add("sp-reserved-250-last", "<|reserved_special_token_250|>");
add("sp-reserved-251-nonexistent", "<|reserved_special_token_251|>");
add("sp-reserved-in-text", "x<|reserved_special_token_0|>y");
add("sp-near-miss-no-gt", "<|eot_id|");
add("sp-near-miss-no-lt", "|eot_id|>");
add("sp-near-miss-prefix", "<|eot_id");
add("sp-near-miss-upper", "<|EOT_ID|>");
add("sp-near-miss-space", "<| eot_id |>");
add("sp-twice", "<|eot_id|><|eot_id|>");
add("sp-glued-words", "hello<|eot_id|>world");
add("sp-spaces-around", " <|eot_id|> ");
add("sp-newlines-around", "\n<|eot_id|>\n\n");
add("sp-nested", "<|<|eot_id|>|>");
add("sp-python-tag", "<|python_tag|>print(1)<|eom_id|>");
add("sp-finetune-pad", "<|finetune_right_pad_id|>");
add("sp-header-ids", "<|start_header_id|><|end_header_id|>");
add("sp-pipes", "<||> <| |> || <|");

// Degenerate
add("empty", "");
add("nul", "\0");
add("nul-in-text", "a\0b");
add("nul-run", "\0\0\0");
add("control-chars", "\u0001\u0002\u001b[0m\u007f\u0008");

// Long inputs
{
  let w = "";
  for (let i = 0; i < 3000; ++i) w += String.fromCharCode(97 + Math.floor(rnd() * 26));
  add("long-word-3000-random-letters", w);
  add("long-word-3000-a", "a".repeat(3000));
  add("long-word-3000-pattern", "supercalifragilistic".repeat(150));
  let d = "";
  for (let i = 0; i < 2000; ++i) d += String.fromCharCode(48 + Math.floor(rnd() * 10));
  add("long-digits-2000-random", d);
  add("long-digits-2000-ones", "1".repeat(2000));
  add("long-spaces-1000", " ".repeat(1000));
  add("long-newlines-500", "\n".repeat(500));
  add("long-cjk-1000", Array.from({ length: 1000 }, () => String.fromCodePoint(randInt(0x4e00, 0x9fa5))).join(""));
  add("long-emoji-300", "\u{1F600}".repeat(300));
  add("long-punct-1000", "!?".repeat(500));
}

// ---------------------------------------------------------------- random strings
// Each string: 0..MAXLEN elements; an element is one code point from a weighted
// class, or (rarely) a contraction or a special-token string. No lone
// surrogates, no U+0085/U+FEFF/U+017F (see js-*), letters and digits only from
// code points assigned by Unicode 3.2.
const RANDOM_COUNT = 10000;
const MAXLEN = 24; // 40 made corpus.jsonl 4.3 MB; 24 keeps it under 3 MB
const span = (lo, hi) => () => String.fromCodePoint(randInt(lo, hi));
const oneOf = (s) => () => pick(Array.from(s));
const SPECIALS = [
  "<|begin_of_text|>",
  "<|end_of_text|>",
  "<|eot_id|>",
  "<|start_header_id|>",
  "<|end_header_id|>",
  "<|eot_id|",
  "<|EOT_ID|>",
  "<|",
  "|>",
];
const classes = [
  [20, span(0x61, 0x7a)], // a-z
  [6, span(0x41, 0x5a)], // A-Z
  [8, span(0x30, 0x39)], // 0-9
  [12, () => " "],
  [8, oneOf(".,!?;:'\"()-[]{}<>|_/\\@#$%^&*+=~`")],
  [3, () => "\n"],
  [1, () => "\t"],
  [1, () => "\r"],
  [1, () => "\r\n"],
  [4, span(0xa0, 0xff)], // Latin-1 (incl. NBSP, superscript digits, fractions)
  [2, span(0x100, 0x17e)], // Latin Extended-A, less U+017F (see js-contr-long-s)
  [4, span(0x410, 0x44f)], // Cyrillic
  [2, () => String.fromCodePoint(pick([randInt(0x391, 0x3a1), randInt(0x3a3, 0x3a9), randInt(0x3b1, 0x3c9)]))], // Greek
  [5, span(0x4e00, 0x9fa5)], // CJK (Unicode 1.1 block)
  [2, span(0x3041, 0x3096)], // Hiragana
  [1, span(0x30a1, 0x30fa)], // Katakana
  [2, span(0xac00, 0xd7a3)], // Hangul syllables
  [1, span(0x5d0, 0x5ea)], // Hebrew letters
  [1, span(0x621, 0x63a)], // Arabic letters
  [1, span(0x905, 0x939)], // Devanagari letters
  [1, span(0x660, 0x669)], // Arabic-Indic digits
  [3, span(0x1f300, 0x1f64f)], // emoji
  [1, () => "\u200d"], // ZWJ
  [1, span(0x1f3fb, 0x1f3ff)], // skin tones
  [1, span(0x1f1e6, 0x1f1ff)], // regional indicators
  [1, () => "\ufe0f"], // VS16
  [3, span(0x300, 0x36f)], // combining marks
  [1, oneOf("\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000\u2028\u2029\u000b\u000c")],
  [2, () => pick(["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'VE", "'M", "'LL", "'D", "'Ll", "'rE"])],
  [0.6, () => pick(SPECIALS)],
];
const totalWeight = classes.reduce((s, [w]) => s + w, 0);
function randomElement() {
  let r = rnd() * totalWeight;
  for (const [w, f] of classes) {
    if ((r -= w) < 0) return f();
  }
  return classes[classes.length - 1][1]();
}
for (let i = 0; i < RANDOM_COUNT; ++i) {
  const n = randInt(0, MAXLEN);
  let s = "";
  for (let k = 0; k < n; ++k) s += randomElement();
  add(`random-${String(i).padStart(5, "0")}`, s);
}

// ---------------------------------------------------------------- encode + write
const lines = [];
const problems = [];
let validCount = 0,
  roundTripOk = 0,
  cleanupDiffers = 0,
  literalDiffers = 0;
const roundTripFail = [];

for (const c of cases) {
  const text = textDecoder.decode(c.bytes);
  const textBytes = utf8.encode(text);
  const valid = sameBytes(textBytes, c.bytes);
  const ids = tok.encode(text, { add_special_tokens: false });
  const idsLiteral = tokLiteral.encode(text, { add_special_tokens: false });
  const decoded = decodeIds(tok, ids, false);
  const decodedCleanup = decodeIds(tok, ids, true);
  const decodedBytes = utf8.encode(decoded);

  // The literal tokenizer must agree wherever no special-token text can match.
  const hasSpecialText = tok.added_tokens.some((t) => text.includes(t.content));
  if (!hasSpecialText && !sameBytes(ids, idsLiteral))
    problems.push(`${c.name}: ids_literal != ids without special-token text`);
  if (idsLiteral.some((x) => x >= 128000)) problems.push(`${c.name}: ids_literal has a special id`);
  if (!sameBytes(utf8.encode(decodeIds(tokLiteral, idsLiteral, false)), textBytes))
    problems.push(`${c.name}: literal round trip fails`);
  if (!sameBytes(ids, idsLiteral)) literalDiffers++;

  // Round trip: the decode of the ids must give back the text that was encoded.
  if (sameBytes(decodedBytes, textBytes)) {
    if (valid) roundTripOk++;
  } else {
    roundTripFail.push(c.name);
  }
  if (valid) validCount++;

  const rec = { name: c.name, hex: hex(c.bytes), ids, ids_literal: idsLiteral, decoded_hex: hex(decodedBytes) };
  if (decodedCleanup !== decoded) {
    rec.decoded_cleanup_hex = hex(utf8.encode(decodedCleanup));
    cleanupDiffers++;
  }
  if (!valid) rec.replaced_hex = hex(textBytes);
  lines.push(JSON.stringify(rec));
}

// Known values (the same as Hugging Face tokenizers gives for this file).
const expect = (name, want) => {
  const c = cases.findIndex((x) => x.name === name);
  const got = JSON.parse(lines[c]).ids;
  if (JSON.stringify(got) !== JSON.stringify(want))
    problems.push(`${name}: ids ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
};
expect("en-hello-world", [9906, 1917]);
expect("sp-eot", [128009]);
expect("sp-begin", [128000]);
expect("empty", []);
// This tokenizer.json's post_processor is a bare ByteLevel (no TemplateProcessing),
// so even add_special_tokens: true adds no <|begin_of_text|> here (nor in HF).
const withSpecial = JSON.stringify(tok.encode("Hello world"));
if (withSpecial !== "[9906,1917]")
  problems.push(`encode("Hello world") with add_special_tokens true gives ${withSpecial}`);

fs.mkdirSync(outDir, { recursive: true });
const corpusPath = path.join(outDir, "corpus.jsonl");
fs.writeFileSync(corpusPath, lines.join("\n") + "\n");

const size = fs.statSync(corpusPath).size;
console.log(`@lenml/tokenizers ${pkgVersion}, node ${process.version}, Unicode ${process.versions.unicode}`);
console.log(`tokenizer: ${tokDir}`);
console.log(`wrote ${corpusPath}: ${cases.length} cases (${cases.length - RANDOM_COUNT} hand-written, ${RANDOM_COUNT} random), ${size} bytes`);
console.log(`valid UTF-8 inputs: ${validCount}; decode(encode(x)) == x for ${roundTripOk} of them`);
console.log(`round-trip failures (decoded != text encoded): ${roundTripFail.length ? roundTripFail.join(", ") : "none"}`);
console.log(`cases where ids_literal != ids: ${literalDiffers}; where clean-up decode differs: ${cleanupDiffers}`);
if (problems.length) {
  console.error("PROBLEMS:\n  " + problems.join("\n  "));
  process.exit(1);
}
console.log("checks passed");
