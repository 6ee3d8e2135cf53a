import sys, glob, numpy as np, pandas as pd
from sklearn.metrics import adjusted_rand_score as a
from senca.evaluate import valid_label_mask
for tag in sys.argv[1:]:
    v = []
    for f in sorted(glob.glob(f"/tmp/r24/a1/{tag}/s*/*.clusters.parquet")):
        c = pd.read_parquet(f); k = valid_label_mask(c["label"]); v.append(a(c.loc[k, "label"].astype(str), c.loc[k, "cluster"]))
    print(tag, len(v), np.round(v, 3).tolist(), f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}")
