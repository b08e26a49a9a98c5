#!/usr/bin/env bash
# Installs the Debian packages the build, the tests and the scripts need, if any
# is missing: as root directly, else through sudo; otherwise prints exactly what
# to install and exits 1. Safe to run again (does nothing when all are present).
#   bash scripts/install_deps.sh [--quiet]
set -u
PKGS=(
  g++ make                         # the CPU trainer and tests
  libopenblas-openmp-dev           # BLAS for the CPU matmuls (the OpenMP build: the pthread build's threads fight the trainer's OpenMP threads)
  python3 python3-torch python3-numpy   # the PyTorch reference (/usr/bin/python3)
  python3-matplotlib               # plots
  clang libclang-rt-14-dev         # sanitizer builds (TSan, ASan, UBSan) and libFuzzer
  python3-regex                    # GPT-2 BPE pre-tokenizer (\p{L} classes)
  python3-sentencepiece sentencepiece   # SentencePiece tokenizers (spm_train)
  util-linux                       # setarch (TSan runs with ASLR off)
  shellcheck                       # gpu_check/shellcheck lints scripts/gpu_check.sh
  libopenmpi-dev openmpi-bin       # the CUDA trainer's data-parallel launch (mpirun), tested emulated
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm fetches the default corpus; the machine's Node.js may come with its own npm
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
[ ${#missing[@]} -eq 0 ] && { [ "${1:-}" = --quiet ] || echo "install_deps: all packages present"; exit 0; }
echo "install_deps: installing ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then SUDO=""
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo"
else
  echo "install_deps: not root and no password-less sudo; please run:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || { echo "install_deps: apt-get update failed" >&2; exit 1; }
$SUDO apt-get install -y -qq "${missing[@]}" >/tmp/mixln_apt.log 2>&1 || {
  tail -20 /tmp/mixln_apt.log >&2
  echo "install_deps: apt-get install ${missing[*]} failed (log: /tmp/mixln_apt.log)" >&2
  exit 1
}
echo "install_deps: done"
