#!/bin/bash
# Issue 21 ("What a new user hit"): the ten findings, as a new user, from a fresh clone.
# Usage: git clone REPO clone && cd clone && make venv && bash bench/new_user_check.sh   (~2 min)
H=".venv/bin/hwnas"; W=/tmp/nu/w; rm -rf $W; mkdir -p $W
py() { .venv/bin/python "$@"; }
run() { echo; echo "\$ hwnas $*"; $H "$@" > $W/out.txt 2> $W/err.txt; rc=$?; tail -n 3 $W/err.txt | cut -c1-400; echo "[exit $rc]"; }
py - <<'P'
import numpy as np
from sklearn.datasets import load_digits
d = load_digits(); rng = np.random.default_rng(0)
x = (d.images * 16).clip(0, 255).astype(np.uint8); y = d.target
np.savez("/tmp/nu/w/d.npz", x=x[:400], y=(9 - y[:400]))            # 10 classes, labels permuted
m = y < 3; np.savez("/tmp/nu/w/d3.npz", x=x[m][:300], y=y[m][:300])  # 3 classes
np.savez("/tmp/nu/w/d1.npz", x=x[:50], y=np.zeros(50, dtype=int))    # 1 class
P
echo "== 1. train RUN takes the search run's data"
$H predictor fit --help >/dev/null
# a tiny predictor for digits from a synthetic store
py - <<'P'
import sys; sys.path.insert(0, "tests")
from pathlib import Path
from searchkit import make_predictor
from hwnas.space import get_space
print(make_predictor(Path("/tmp/nu/w"), get_space("digits"), n=80))
P
P=$(ls /tmp/nu/w/*.pt | head -1)
S="--epochs 1 --subset 64 --search-resolution 8 --search-channels 4 --batch-size 16 --threads 1 --no-progress"
run search --space digits --dataset npz:$W/d.npz --predictor $P $S --out $W/s-npz
run train $W/s-npz --epochs 1 --subset 64 --threads 1 --no-progress --out $W/t-npz
py -c "import json; print('train config dataset:', json.load(open('$W/t-npz/config.json'))['config']['dataset'])"
run train $W/s-npz --dataset digits --epochs 1 --out $W/t-dig
echo "== 2. run kinds"
run search --space digits --predictor $P $S --out $W/t-npz
echo "== 3. tracebacks -> one line"
run search --space digits --predictor $P $S --arch-lr -1 --out $W/x1
run search --space digits --predictor $P $S --arch-lr nan --out $W/x2
run search --space digits --predictor $P $S --threads 0 --out $W/x3
echo "== 5. classes"
run search --space tiny --dataset npz:$W/d3.npz --predictor $P $S --out $W/s3
run search --space digits --dataset npz:$W/d3.npz --predictor $P $S --out $W/s3
py -c "import json; print('space recorded:', json.load(open('$W/s3/architecture.json'))['space']['name'])"
run search --space digits --dataset npz:$W/d1.npz --predictor $P $S --out $W/s1
echo "== 6. Ctrl-C"
echo "\$ timeout -s INT 25 hwnas search ... --epochs 50"
timeout -s INT 25 $H search --space digits --predictor $P --epochs 50 --subset 400 --search-resolution 8 --threads 1 --no-progress --out $W/sint 2>&1 | tail -n 1 | cut -c1-300; echo "[exit ${PIPESTATUS[0]}]"
echo "== 7. help"
$H --help | grep -A1 " run " | head -2
$H search --help | grep -A3 "search-resolution" | head -4
echo "== 8. damaged checkpoint"
head -c 3000 $W/t-npz/checkpoint.pt > $W/half.pt; cp $W/half.pt $W/t-npz/checkpoint.pt
run export $W/t-npz --out $W/e1
echo "== 9. accepted in silence before"
run train $W/s-npz --aux-weight nan --epochs 1 --out $W/t-nan
run search --space digits --predictor $P $S --max-param-free 99 --out $W/x4
echo "== 4 + 10. run --samples 60 on npz data, --no-deploy; no -wal/-shm left"
run run --samples 60 --dataset npz:$W/d.npz --no-deploy --repeat 5 --fresh 4 --out $W/r60 --no-progress
grep -E "usable|profiling up to" $W/out.txt | head -5
ls $W/r60 | grep -E "wal|shm" || echo "no -wal/-shm files in $W/r60"
