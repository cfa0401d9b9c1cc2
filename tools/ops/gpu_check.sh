#!/usr/bin/env bash
# The prepared device check: the full-size recipes on one GPU in one short lease.
#
#   bash tools/ops/gpu_check.sh prepare          # here, before the lease: .whl/ and .gpu/
#   bash tools/ops/gpu_check.sh train [GROUPS]   # bench, then the runs, until $DEADLINE s
#   bash tools/ops/gpu_check.sh resume [GROUPS]  # resume what a first call left unfinished
#
# GROUPS (comma-separated; default cifar,text): cifar (the four rows measured on
# 2026-12-04), cifar_rest (focal and the four-stage sampler ablation, not run yet) and
# text. Each CIFAR run is its own process on the one GPU; the text runs form two chains.
#
# Runs from the repository root on a machine with a GPU and the CUDA build of JAX. It
# needs, in ignored folders beside the code (`.git/info/exclude`):
#   .whl/   wheels of the packages that machine lacks (tensorflow-datasets, ml-collections,
#           seqeval, array-record, ...; Python 3.12), installed into /tmp/site;
#   .gpu/shared/  the parts of ../shared these runs read: data/uit_visfd, data/uit_vsfc,
#           data/cifar10/cifar10_jpg.tar.gz (the files CIFAR-10-LT rho=100 keeps, other
#           train members as empty placeholders: the same decoded arrays, checked), and
#           models/multilingual-e5-small with model.safetensors.xz.
# What it runs (each a plain `python -m experiments.run`, so every number has a command):
#   bench  tools.bench.vs_torch on the GPU (JAX vs PyTorch eager, ResNet-8/32, digits);
#   cifar  cifar10_lt.py:{erm,la,ldam_drw,four_stage} at full size (ResNet-32, 200 epochs),
#          four processes at once on the one GPU; cifar_rest: focal, and four_stage with
#          --config.sampler_mix=0.0 (the other rows of tools.reports.cifar_table);
#   text   visfd_absa.py:e5 (the two-member ensemble), vsfc.py:e5,{four_stage,erm}, and
#          visfd_absa.py:e5 member 0 for 8 epochs and with plain CE (the best loss from
#          scratch with aspect attention).
# Results: $OUT/runs.tgz (every workdir without checkpoints), $OUT/check.log. Measured
# with it (2026-12-04, one H200, 15 minutes): the four CIFAR rows in ~400 s each, at once;
# the text runs did not finish (each new sub-word width compiled for 60-90 s).
set -u
MODE=${1:-train}

if [ "$MODE" = prepare ]; then  # on this machine (with ../shared and a registry), not there
  set -e
  PY=${PYTHON:-.venv/bin/python}
  for d in /.whl/ /.gpu/; do grep -qx "$d" .git/info/exclude || echo "$d" >> .git/info/exclude; done
  S=.gpu/shared; E5=multilingual-e5-small
  mkdir -p .whl $S/data/cifar10 $S/models/$E5
  P="--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64"
  P="$P --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64"
  P="$P --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
  for w in tensorflow-datasets==4.9.10 array_record==0.8.6 dm-tree==0.1.10 immutabledict==4.3.1 \
      simple-parsing==0.1.9 tensorflow-metadata==1.21.0 termcolor==3.3.0 toml==0.10.2 \
      ml_collections==1.1.0 importlib_resources==7.1.0 docstring-parser googleapis-common-protos; do
    $PY -m pip download -q --no-deps --only-binary=:all: $P -d .whl "$w"
  done
  $PY -m pip wheel -q --no-deps -w .whl seqeval==1.2.2 promise==2.3  # sdists: pure Python
  cp -r ../shared/data/uit_visfd ../shared/data/uit_vsfc $S/data/
  for f in config.json special_tokens_map.json tokenizer.json tokenizer_config.json; do
    cp ../shared/models/$E5/$f $S/models/$E5/
  done
  [ -f $S/models/$E5/model.safetensors.xz ] ||
    xz -9 -T2 -k -c ../shared/models/$E5/model.safetensors > $S/models/$E5/model.safetensors.xz
  # The CIFAR archive cut to what rho = 100 reads: the kept train images and the test set,
  # the other train members as empty placeholders (the per-class counts still parse; they
  # are never decoded). The decoded arrays must equal the full archive's.
  $PY -c '
import io, tarfile
import numpy as np
from jaxloss.data import cifar10_lt as c
src, dst = "../shared/data/cifar10/" + c.ARCHIVE, ".gpu/shared/data/cifar10/" + c.ARCHIVE
with tarfile.open(src) as t:
  members = c._members(t, src)
keep = set()
for i, name in enumerate(c.CIFAR10_CLASSES):
  keep |= {m.name for _, m in members["train"][name][:int(5000 * (1 / 100) ** (i / 9))]}
  keep |= {m.name for _, m in members["test"][name]}
with tarfile.open(src) as t, tarfile.open(dst, "w:gz") as out:
  for m in t:
    if m.name in keep or not m.isfile():
      out.addfile(m, t.extractfile(m) if m.isfile() else None)
    else:
      out.addfile(tarfile.TarInfo(m.name), io.BytesIO(b""))
a, b = (c.read_archive(p, imbalance_ratio=100) for p in (dst, src))
assert all(np.array_equal(a[s][k], b[s][k]) for s in a for k in a[s]), "subset differs"
print("cifar subset: the same arrays as the full archive")
'
  du -sh .whl .gpu
  exit 0
fi
RUN_GROUPS=",${2:-cifar,text},"
T0=$(date +%s)
DEADLINE=${DEADLINE:-540}   # seconds after start at which runs are stopped
OUT=${OUT:-/tmp/gpu_out}
W=${GPU_WORKDIRS:-/tmp/gpu_runs}
mkdir -p "$OUT" "$W/logs"
LOG=$OUT/check.log
say() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$LOG"; }

# --- environment -------------------------------------------------------------------
if [ ! -f /tmp/site/.done ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >>"$LOG" 2>&1 || { say "pip install failed"; exit 3; }
  touch /tmp/site/.done
fi
export PYTHONPATH=/tmp/site:$PWD
export XLA_PYTHON_CLIENT_PREALLOCATE=false TQDM_DISABLE=1 PYTHONUNBUFFERED=1
if [ ! -e ../shared ]; then ln -s "$PWD/.gpu/shared" ../shared; fi
E5=../shared/models/multilingual-e5-small
if [ ! -f $E5/model.safetensors ]; then
  python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('$E5/model.safetensors.xz'), open('$E5/model.safetensors','wb'))" \
    || { say "e5 decompress failed"; exit 3; }
fi
python3 - <<'EOF' 2>&1 | tee -a "$LOG" || exit 3
import importlib, jax
for m in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "chex", "tensorflow_datasets",
          "ml_collections", "seqeval", "tokenizers", "safetensors", "numpy", "torch"):
  mod = importlib.import_module(m)
  print(m, getattr(mod, "__version__", "?"))
print("devices", jax.devices())
import experiments.run, jaxloss  # noqa: F401  the project imports
EOF
[ "${PIPESTATUS[0]}" = 0 ] || { say "imports failed"; exit 3; }
nvidia-smi --query-gpu=name,memory.total,clocks.sm,driver_version --format=csv | tee -a "$LOG"
python3 -c "from jaxloss.data.cifar10_lt import load_cifar10_lt as f; d = f(); print('cifar10_lt', d['class_counts'])" \
  2>&1 | tail -1 | tee -a "$LOG"

# A resumed run (`resume`) loads its programs from the cache instead of compiling them
# again: on the H200 a text step took 60-90 s to compile per sub-word width.
RUN="python3 -m experiments.run --compilation_cache=$W/jax_cache"
C=experiments/imbalance/configs/cifar10_lt.py
A=experiments/absa/configs/visfd_absa.py
V=experiments/imbalance/configs/vsfc.py
declare -A JOBS=(
  [cifar_erm]="--config=$C:erm,full"
  [cifar_la]="--config=$C:la,full"
  [cifar_ldam_drw]="--config=$C:ldam_drw,full"
  [cifar_four_stage]="--config=$C:four_stage,full"
  [cifar_focal]="--config=$C:focal,full"
  [cifar_four_stage_sampler0]="--config=$C:four_stage,full --config.sampler_mix=0.0"
  [absa_e5]="--config=$A:e5 --config.checkpoint_every_steps=200"
  [vsfc_e5_four_stage]="--config=$V:e5,four_stage"
  [vsfc_e5_erm]="--config=$V:e5,erm"
  [absa_e5_m0_8ep]="--config=$A:e5 --config.ensemble_focal_weights= --config.num_epochs=8 --config.checkpoint_every_steps=200"
  [absa_e5_m0_ce]="--config=$A:e5 --config.ensemble_focal_weights= --config.loss=ce --config.focal_weight=1.0 --config.contrastive_weight=0.0 --config.checkpoint_every_steps=200"
)
workdir() {  # CIFAR runs where `tools.reports.cifar_table --size full --root
  # $W/cifar10_lt_full --reuse_only` finds them (tables.row_dirname); the others by job name
  case $1 in
    cifar_four_stage_sampler0) echo "$W/cifar10_lt_full/four_stage+full_sampler_mix=0.0_seed=0" ;;
    cifar_*) echo "$W/cifar10_lt_full/${1#cifar_}+full_seed=0" ;;
    *) echo "$W/$1" ;;
  esac
}
chain() {  # runs its jobs one after another; each resumes its workdir if it exists
  for j in "$@"; do
    if [ -f "$(workdir "$j")/summary.json" ] || [ -f "$W/STOP" ]; then continue; fi
    say "start $j: ${JOBS[$j]}"
    $RUN ${JOBS[$j]} --workdir="$(workdir "$j")" >>"$W/logs/$j.log" 2>&1
    say "end $j rc=$?"
  done
}
rm -f "$W/STOP"

if [ "$MODE" = train ]; then
  say "bench: tools.bench.vs_torch on the GPU"
  timeout 100 python3 -m tools.bench.vs_torch --workloads resnet32 resnet8 digits_cnn \
    --threads 16 --steps 20 --repeats 5 --no-compile --torch_device cuda \
    --json "$OUT/vs_torch_gpu.json" --markdown "$OUT/vs_torch_gpu.md" >>"$LOG" 2>&1
  say "bench rc=$?"
fi
pids=()
if [[ $RUN_GROUPS == *,cifar,* ]]; then
  for j in cifar_erm cifar_la cifar_ldam_drw cifar_four_stage; do chain $j & pids+=($!); done
fi
if [[ $RUN_GROUPS == *,cifar_rest,* ]]; then
  for j in cifar_focal cifar_four_stage_sampler0; do chain $j & pids+=($!); done
fi
if [[ $RUN_GROUPS == *,text,* ]]; then
  chain absa_e5 absa_e5_m0_8ep & pids+=($!)
  chain vsfc_e5_four_stage vsfc_e5_erm absa_e5_m0_ce & pids+=($!)
fi

n=0
while :; do
  alive=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ $alive = 0 ] && break
  if [ $(( $(date +%s) - T0 )) -ge "$DEADLINE" ]; then
    # Only this script's runs (their --workdir is under $W), not other jobs of the machine.
    say "deadline: stopping the runs left"; touch "$W/STOP"; pkill -f -- "--workdir=$W/"
    sleep 5; pkill -9 -f -- "--workdir=$W/"; break
  fi
  sleep 10; n=$((n + 1))
  if [ $((n % 6)) = 0 ]; then  # each minute: where every started run is
    for f in "$W"/logs/*.log; do
      say "  $(basename "$f" .log): $(grep -v '^\s*$' "$f" | tail -n 1 | cut -c1-110)"
    done
  fi
done
wait 2>/dev/null
nvidia-smi --query-gpu=memory.used,clocks.sm --format=csv >>"$LOG"
tar czf "$OUT/runs.tgz" --exclude=jax_cache --exclude=checkpoints --exclude=embeddings --exclude='*.orbax-checkpoint-tmp*' -C "$W" . 2>>"$LOG"
for j in $(echo "${!JOBS[@]}" | tr ' ' '\n' | sort); do
  if [ -f "$(workdir "$j")/summary.json" ]; then s=done; else s=unfinished; fi
  if [ $s = unfinished ] && [ ! -f "$W/logs/$j.log" ]; then continue; fi  # not asked for
  say "$j: $s; $(grep -E 'WAR|aspect|Test' "$W/logs/$j.log" 2>/dev/null | tail -n 1 | cut -c1-150)"
  if [ $s = unfinished ] && [ -f "$W/logs/$j.log" ]; then
    tr '\r' '\n' <"$W/logs/$j.log" | grep -v '^\s*$' | tail -n 2 | cut -c1-200 | sed 's/^/    /'
  fi
done
