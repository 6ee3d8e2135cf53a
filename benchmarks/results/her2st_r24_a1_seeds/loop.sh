#!/bin/bash
# usage: loop.sh TAG SAMPLE "train args" "cluster args"
TAG=$1; S=$2; TA=$3; CA=$4
B=/tmp/r24/a1/base/$S; SEN=/work/main/.venv/bin/senca
for seed in 0 1 2 3 4 5 6 7; do
  O=/tmp/r24/a1/$TAG/s$seed; mkdir -p $O; cd $O
  P=""; [ -f $B/$S.patches.parquet ] && P="--patches $B/$S.patches.parquet"
  $SEN train-senca --spots $B/$S.spots.parquet --expr $B/$S.expr.parquet --graph $B/$S.graph.parquet $P --seed $seed --quiet $TA >/dev/null 2>&1
  $SEN cluster --embeddings $S.embeddings.parquet --spots $B/$S.spots.parquet --h5ad $B/$S.h5ad --seed $seed --quiet $CA >/dev/null 2>&1
  /work/main/.venv/bin/python -c "
import pandas as pd; from sklearn.metrics import adjusted_rand_score as a
c=pd.read_parquet('$S.clusters.parquet'); from senca.evaluate import valid_label_mask; k=valid_label_mask(c['label'])
print('$TAG', $seed, round(a(c.loc[k,'label'].astype(str), c.loc[k,'cluster']),3))"
done
