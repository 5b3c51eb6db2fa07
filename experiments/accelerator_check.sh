#!/usr/bin/env bash
# KD-SVD on one GPU, in under 8 minutes: one JSON line per check on stdout (and in OUT/checks.jsonl).
#   1. devices        what JAX sees
#   2. bench_svd      full-width tap shapes, batch 128, k = 2: default eigh, Jacobi eigh, the subspace and Lanczos
#                     solvers (forward), and fwd+bwd of truncated_svd per solver and grad mode against jnp.linalg.svd
#   3. bench_step     width 1.0, batch 128: every case of experiments/bench_step.py (images/s, time vs the floor)
#   4. epoch_student  the trainer on the paper VGG student at width 1.0 for 391 steps (one CIFAR epoch at batch
#                     128) on the bundled digits upsampled to 32x32, with its images/s
#   5. epoch_kd_svd   the same for the KD-SVD student (exact gradient, batch-mean loss) on an untrained teacher
#
# Once, on a machine with a package index: experiments/accelerator_wheels.sh (the image lacks grain and
# ml_collections). On the GPU machine, from the repository root, with .whl/ beside the tree:
# experiments/accelerator_check.sh [OUT]
# Environment: SMOKE=1 (tiny sizes, to check the script itself on a CPU); CHECKS (the checks to run, default all:
# "devices bench_svd bench_step epoch"); SVD_SHAPES, SVD_LIMIT, STEP_CASES, STEP_ARGS, STEP_LIMIT, EPOCH_STEPS
# (override the sizes and time limits below; experiments/gpu_campaign.py uses them to fit its budget).
set -u
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-/tmp/accelerator_check}}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if ! $PY -c "import grain, ml_collections" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo '{"check": "install", "error": "wheels missing: run experiments/accelerator_wheels.sh here first"}'; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then SHAPES=4x4x16; WIDTH=0.125; STEPS=4; ROUNDS="--steps 1 --rounds 1"; CASES=floor,kd_svd_exact
else SHAPES=16x16x64,8x8x128,4x4x256,2x2x512; WIDTH=1.0; STEPS=391; ROUNDS="--steps 10 --rounds 3"; CASES=; fi
SHAPES=${SVD_SHAPES:-$SHAPES} STEPS=${EPOCH_STEPS:-$STEPS} ROUNDS=${STEP_ARGS:-$ROUNDS} CASES=${STEP_CASES:-$CASES}
CHECKS=${CHECKS:-devices bench_svd bench_step epoch}

emit() {  # emit NAME SECONDS_LIMIT COMMAND...: the command's last line (a JSON object) wrapped as one check
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  $PY - "$name" "$rc" "$((SECONDS - start))" "$OUT/$name.log" <<'PYEOF' | tee -a "$OUT/checks.jsonl"
import json, sys
name, rc, seconds, log = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
lines = [l for l in open(log, errors="replace").read().splitlines() if l.startswith("{")]
try:
  result = json.loads(lines[-1])
except (IndexError, ValueError):
  result = {"error": "no JSON line", "tail": open(log, errors="replace").read()[-1500:]}
try:  # a trainer run: its logged training speed (compilation and evaluation left out)
  rows = [json.loads(l) for l in open(log.rsplit(".", 1)[0] + "/metrics.jsonl")]
  rates = sorted(r["images_per_sec"] for r in rows if "images_per_sec" in r)
  result["images_per_sec_median"] = rates[len(rates) // 2] if rates else None
except OSError:
  pass
print(json.dumps({"check": name, "rc": rc, "seconds": seconds, "result": result}))
PYEOF
}

wanted() { case " $CHECKS " in *" $1 "*) return 0;; *) return 1;; esac; }
wanted devices && emit devices 60 $PY -c 'import jax, json; print(json.dumps({"jax": jax.__version__, "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()]}))'
wanted bench_svd && emit bench_svd "${SVD_LIMIT:-150}" $PY experiments/bench_svd.py --shapes $SHAPES --inputs taplike,relu --repeats 20
wanted bench_step && emit bench_step "${STEP_LIMIT:-240}" $PY experiments/bench_step.py --width $WIDTH --batch 128 $ROUNDS ${CASES:+--cases $CASES}
wanted epoch && for run in student kd_svd_exact_mean; do
  emit epoch_$run 120 $PY -m svdkd_jax.main --config=configs/cifar100_vgg.py:$run --workdir="$OUT/epoch_$run" \
    --config.model.width=$WIDTH --config.teacher.width=$WIDTH --config.teacher.weights=random \
    --config.data.source=digits --config.data.name=digits --config.data.path= --config.data.num_classes=10 \
    --config.data.normalization=dataset --config.train.max_steps=$STEPS --config.train.checkpoint_every_steps=100000 \
    --config.train.log_every_steps=50
done
exit 0
