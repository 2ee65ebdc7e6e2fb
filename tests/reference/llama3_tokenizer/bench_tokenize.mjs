// bench_tokenize.mjs: the peer of `qlora bench --tokenize`: the reference tokenizer
// (@lenml/tokenizers, reading the same tokenizer.json) encoding and decoding one
// text file, best of REPS. Prints one line in qlora's bench format. Run by hand,
// interleaved with qlora's line (docs/benchmarks.md):
//   node tests/reference/llama3_tokenizer/bench_tokenize.mjs FILE [TOKENIZER_DIR] [REPS]
import { TokenizerLoader } from "@lenml/tokenizers";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const [file, dirArg, repsArg] = process.argv.slice(2);
if (!file) {
    console.error("usage: node bench_tokenize.mjs FILE [TOKENIZER_DIR] [REPS]");
    process.exit(2);
}
const dir = dirArg || path.resolve(here, "../../../../shared/models/tokenizers/llama3");
const reps = Number(repsArg || 3);
const tok = TokenizerLoader.fromPreTrained({
    tokenizerJSON: JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8")),
    tokenizerConfig: JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8")),
});
const bytes = fs.readFileSync(file);
const text = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true }).decode(bytes);
let bestE = Infinity, bestD = Infinity, n = 0;
for (let r = 0; r < reps; r++) {
    const t0 = process.hrtime.bigint();
    const ids = tok.encode(text, { add_special_tokens: false });
    const t1 = process.hrtime.bigint();
    tok.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
    const t2 = process.hrtime.bigint();
    bestE = Math.min(bestE, Number(t1 - t0) / 1e9);
    bestD = Math.min(bestD, Number(t2 - t1) / 1e9);
    n = ids.length;
}
console.log(`bench_tokenize_ref tokenizer=@lenml/tokenizers file=${file} bytes=${bytes.length} tokens=${n} reps=${reps} ` +
    `encode_MB/s=${(bytes.length / bestE / 1e6).toFixed(2)} encode_tok/s=${Math.round(n / bestE)} ` +
    `decode_MB/s=${(bytes.length / bestD / 1e6).toFixed(2)}`);
