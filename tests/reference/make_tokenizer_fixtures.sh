#!/usr/bin/env bash
# make_tokenizer_fixtures.sh: writes the expected SentencePiece ids and decoded
# text that tests/test_tokenizer.c and tests/real/test_tokenizer_real.c compare
# common/spm.h against, by running Debian's own tools (package `sentencepiece`).
#
# Regenerate, from the repository root:
#   tests/reference/make_tokenizer_fixtures.sh            # fixtures only
#   tests/reference/make_tokenizer_fixtures.sh --train    # first retrain tiny.model
# Optional last argument: the real models directory (default ../shared/models;
# its fixtures are skipped when it is absent). Needs spm_encode, spm_decode,
# spm_export_vocab (spm_train with --train), perl, and /usr/bin/python3 with
# Debian's python3-sentencepiece for the inputs that contain a newline (spm_encode
# reads one line per input, so it cannot see one; the Python module is a binding
# of the same libsentencepiece0). Then commit tests/fixtures/tokenizer/*.txt.
#
# --train rebuilds tests/fixtures/tokenizer/tiny.model from corpus.txt (Llama-like
# settings: BPE, byte fallback, split digits, identity normalization, dummy
# prefix, spaces kept). tiny.model is also the tokenizer of the tiny test models,
# so retrain only on purpose. Training is deterministic for a given spm_train.
#
# Output: tests/fixtures/tokenizer/<name>.txt, one record per line:
#   # comment
#   model<TAB><name><TAB>vocab=N unk=ID bos=ID eos=ID pad=ID     (first record; -1: none)
#   enc<TAB><input><TAB><ids><TAB><decoded>
#   dec<TAB><recipe><TAB><ids><TAB><decoded>
# enc: ids = spm_encode --output_format=id of input; decoded = spm_decode of ids.
# dec: hand-made id sequences (byte pieces, control pieces) decoded by spm_decode;
#      recipe is space-separated pieces, or =TEXT for the ids spm_encode gives TEXT.
# ids are decimal, separated by one space (empty for none). input, recipe and
# decoded are escaped: \\ \t \n \r, \xHH for other control bytes and for bytes
# that are not valid UTF-8; everything else is literal UTF-8.
set -euo pipefail -o noglob

root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/tests/fixtures/tokenizer"
train=0
if [[ "${1:-}" == "--train" ]]; then train=1; shift; fi
models="${1:-$root/../shared/models}"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if (( train )); then
    # relative paths: spm_train records them in the model's trainer spec
    (cd "$out" && spm_train --input=corpus.txt --model_prefix=tiny --model_type=bpe --vocab_size=384 \
        --byte_fallback=true --split_digits=true --normalization_rule_name=identity \
        --add_dummy_prefix=true --remove_extra_whitespaces=false --allow_whitespace_only_pieces=true \
        --split_by_unicode_script=true --character_coverage=1.0 --max_sentencepiece_length=16 \
        --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --num_threads=1 --minloglevel=1 >/dev/null 2>&1 \
        && rm -f tiny.vocab)
    echo "trained $out/tiny.model"
fi

# The inputs, escaped as in the fixture (unescaped by unesc below).
cases=(
    'Hello world'
    'Once upon a time, there was a little girl named Lily.'
    'The lighthouse keeper counted 112 steps, wiped the glass and lit the lamp at 6:42.'
    ''
    ' '
    '    '
    '   leading spaces'
    'trailing spaces\x20\x20\x20'
    '  both ends  '
    'two  spaces   three    four'
    'tab\there'
    '\t'
    'line one\nline two'
    '\n'
    'ends with newline\n'
    '\n\nblank lines\n\n'
    'carriage\rreturn'
    'digits 1234567890 and 3.14159 and 1,000,000'
    'x=42; y=-7.5e3 (0x1F)'
    'café naïve résumé'
    '日本語のテキスト'
    'emoji 🦙🚀 done'
    '🦙'
    'Привет мир, γειά σου, مرحبا'
    'supercalifragilisticexpialidocious'
    '<s> and </s> are plain text here'
    'literal ▁ block'
    '\xFF\xFE invalid UTF-8'
    '\x01 control \x7F'
)
# Hand-made id sequences for decode and streaming: multi-byte characters split
# over byte pieces, unfinished and invalid byte runs, control pieces, unk.
decs=(
    '<0xE6> <0x97> <0xA5>'
    '<0xE6> <0x97>'
    '=a <0xF0> <0x9F> <0xA6> <0x99> =b'
    '<0xF0> <0x9F> =x <0xA6> <0x99>'
    '<0xFF> <0x41> <0x80>'
    '<0x20> =Hello'
    '<s> =Hello =\x20world </s>'
    '<s> <s> =Hi </s> <s> =again'
    '<unk>'
    '=a <unk> =b'
    '<0x0A> =line'
    '=end <0xE2>'
    '<0xC3> <0xA9> <0xC3>'
)

unesc() {  # escaped string -> raw bytes on stdout
    perl -e 'my %m = (t => "\t", n => "\n", r => "\r", "\\" => "\\"); my $s = shift;
        $s =~ s/\\(x([0-9A-Fa-f]{2})|[tnr\\])/defined $2 ? chr(hex $2) : $m{$1}/ge; print $s' -- "$1"
}
esc() {  # stdin bytes -> escaped, one line
    perl -0777 -ne 's/\\/\\\\/g; s/\t/\\t/g; s/\n/\\n/g; s/\r/\\r/g;
        s/((?:[\x00-\x7f]|[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}|\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}|\xf4[\x80-\x8f][\x80-\xbf]{2}))|(.)/defined $2 ? sprintf("\\x%02X", ord $2) : $1/gse;
        s/([\x00-\x1f\x7f])/sprintf("\\x%02X", ord $1)/ge; print'
}

encode_ids() {  # model, raw-input file -> ids on stdout (one line)
    if [[ $(tr -dc '\n' < "$2" | wc -c) -gt 0 ]]; then
        /usr/bin/python3 -c 'import sys, sentencepiece as s
p = s.SentencePieceProcessor(model_file=sys.argv[1])
print(" ".join(map(str, p.encode(open(sys.argv[2], encoding="utf-8", newline="").read()))))' "$1" "$2"
    else
        { cat "$2"; echo; } | spm_encode --model="$1" --output_format=id
    fi
}

decode_text() {  # model, ids -> escaped decoded text (spm_decode ends each line with \n)
    echo "$2" | spm_decode --model="$1" --input_format=id > "$tmp/dec"
    head -c -1 "$tmp/dec" | esc
}

gen() {  # name model-file
    local name=$1 model=$2 f="$out/$1.txt"
    spm_export_vocab --model="$model" --output_format=vocab | cut -f1 > "$tmp/vocab"
    local vocab; vocab=$(wc -l < "$tmp/vocab")
    pid() { awk -v p="$1" '$0 == p { print NR - 1; f = 1; exit } END { if (!f) print -1 }' "$tmp/vocab"; }
    {
        echo "# $name: expected SentencePiece ids and decodings (spm_encode / spm_decode $(dpkg-query -W -f='${Version}' sentencepiece 2>/dev/null || echo '?'))."
        echo "# Made by tests/reference/make_tokenizer_fixtures.sh, which documents the format. Do not edit."
        printf 'model\t%s\tvocab=%d unk=%d bos=%d eos=%d pad=%d\n' "$name" "$vocab" "$(pid '<unk>')" "$(pid '<s>')" "$(pid '</s>')" "$(pid '<pad>')"
        local c ids
        for c in "${cases[@]}"; do
            unesc "$c" > "$tmp/in"
            ids=$(encode_ids "$model" "$tmp/in")
            printf 'enc\t%s\t%s\t%s\n' "$(esc < "$tmp/in")" "$ids" "$(decode_text "$model" "$ids")"
        done
        local tok
        for c in "${decs[@]}"; do
            ids=""
            for tok in $c; do
                if [[ $tok == =* ]]; then
                    unesc "${tok#=}" > "$tmp/in"
                    ids+=" $(encode_ids "$model" "$tmp/in")"
                else
                    local i; i=$(pid "$tok")
                    [[ $i -ge 0 ]] || { echo "$name: no piece $tok" >&2; exit 1; }
                    ids+=" $i"
                fi
            done
            ids=$(echo $ids)
            printf 'dec\t%s\t%s\t%s\n' "$c" "$ids" "$(decode_text "$model" "$ids")"
        done
    } > "$f"
    echo "wrote $f ($(grep -c -v '^#' "$f") records)"
}

gen tiny "$out/tiny.model"
if [[ -d "$models" ]]; then
    gen stories260K "$models/stories260K/tokenizer.model"
    gen llama2-32000 "$models/tokenizers/llama2-32000/tokenizer.model"
else
    echo "no $models: real-model fixtures not regenerated" >&2
fi
