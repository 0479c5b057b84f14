#!/bin/bash
# Issue 18 (session 6): the latency sweep (weights 0/0.5/2/8 + a budget, 3 seeds) with the
# current code, then every architecture of OLD and NEW sweeps measured together (3 passes).
#   PREDICTOR=... OLD=/tmp/m18 NEW=/tmp/m18b [DERIVE=priced] bash bench/issue18_sweep.sh [sweep|measure]
# (the session-6 NEW sweep ran at commit 91301e9, where priced was the default: DERIVE=priced now)
set -eu
: "${NEW:?output folder}"
PY=${PY:-python}
what=${1:-sweep}
if [ "$what" = sweep ]; then
  : "${PREDICTOR:?a fitted digits predictor}"
  for s in 0 1 2; do
    sfx=$([ $s = 0 ] && echo "" || echo "-s$s")
    $PY bench/search_latency_sweep.py --predictor "$PREDICTOR" --out "$NEW/sweep$sfx" --weights 0,0.5,2,8 \
      --epochs 6 --subset 800 --seed $s --repeats 3 --parallel \
      -- --threads 1 --mode full --search-resolution 8 --arch-lr 3e-3 --derive "${DERIVE:-argmax}" > "$NEW/sweep$sfx.log" 2>&1
  done
else
  archs=()
  for base in ${OLD:-} "$NEW"; do for s in "" -s1 -s2; do
    for d in "$base/sweep$s"/weight-0 "$base/sweep$s"/weight-0.5 "$base/sweep$s"/weight-2 "$base/sweep$s"/weight-8 "$base/sweep$s"/budget-*; do
      archs+=("$d/architecture.json"); done; done; done
  printf '%s\n' "${archs[@]}" > "$NEW/remeasure.list"
  for rep in 0 1 2; do
    $PY -m hwnas measure "${archs[@]}" --target ort-cpu --json --seed $rep > "$NEW/remeasure-$rep.json"
  done
fi
