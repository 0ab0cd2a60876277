#!/usr/bin/env bash
# Keyword spotting on voices no training clip has (issue 13 part 6): the Georgiev DNN on clip summaries
# against the log mel CNN (per-clip band normalisation, SpecAugment; mtl_edge/train/logmel_cnn.py),
# each on the demo corpus's ten mbrola voices and on sixteen voices (--voices mbrola+tts: six more
# from flite and pico). Both corpora hold out the same two mbrola voices (fr4, nl2 for seed 0) in
# test_unseen_speakers. kws alone, three seeds; the DNN trains as `train` does by default (up to 200
# epochs, early stopping), the CNN with its kws_cnn recipe (1,500 steps of 64 clips, about 40 epochs;
# no mixup; Adam with a one-cycle schedule peaking at 3e-3). On ten voices the CNN also trains with
# vocal tract length perturbation (vtlp=15: each clip's spectrum warped by a factor within 1 +- 15 %),
# with two audiomentations copies of each kws clip (pitch, rate, gain, backgrounds; -aug), with
# both, and with four copies with and without vtlp (-aug4, -aug4-vtlp). Every run is skipped
# when its metrics.json exists, so the script resumes; two runs train side by side.
#
# Usage: bash experiments/unseen_cnn.sh [RUNS_FOLDER] [SEEDS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs/unseen-cnn}
SEEDS=${2:-"0 1 2"}
MTL=${MTL:-.venv/bin/mtl-edge}

"$MTL" data demo --out data/demo
"$MTL" data demo --out data/demo-tts --voices mbrola+tts

AUG="--augment all --augment-copies 2 --augment-tasks kws"
AUG4="--augment all --augment-copies 4 --augment-tasks kws"
variants=(
  "cnn-10voices-aug4-vtlp|data/demo|--model logmel_cnn --model-args vtlp=15 $AUG4"
  "cnn-10voices-aug4|data/demo|--model logmel_cnn $AUG4"
  "cnn-10voices-aug-vtlp|data/demo|--model logmel_cnn --model-args vtlp=15 $AUG"
  "cnn-10voices-aug|data/demo|--model logmel_cnn $AUG"
  "cnn-10voices-vtlp|data/demo|--model logmel_cnn --model-args vtlp=15"
  "cnn-16voices|data/demo-tts|--model logmel_cnn"
  "cnn-10voices|data/demo|--model logmel_cnn"
  "dnn-16voices|data/demo-tts|--model dnn"
  "dnn-10voices|data/demo|--model dnn"
)

# shellcheck source=experiments/runs.sh
source experiments/runs.sh
job() {  # SEED NAME CORPUS EXTRA OPTIONS
  # shellcheck disable=SC2086  # extra holds option words
  train_once "$RUNS/$2-s$1" --corpus "$3" --tasks kws --seed "$1" $4
}

mkdir -p "$RUNS"
two_at_a_time "$SEEDS" "${variants[@]}"
.venv/bin/python experiments/unseen_speakers.py "$RUNS" experiments/results/unseen-speakers-cnn
