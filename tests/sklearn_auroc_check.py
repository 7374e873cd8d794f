"""Test helper (Scores.AurocOfEveryScoreAsScikitLearnComputesIt in test_apps): recomputes the AUROC of
every (run, unknown set, score) from cac_eval's scores.csv with scikit-learn's roc_auc_score (unknown
= positive, as cac_eval orients every score) and compares it with eval.json's by_score.runs.

  python3 tests/sklearn_auroc_check.py SCORES.csv EVAL.json

Prints one line per entry; exit 0 when every AUROC agrees within 1e-9, 1 otherwise (or when an
entry has no rows, or a score in the CSV has no entry).
"""
import csv
import json
import sys

from sklearn.metrics import roc_auc_score


def main(scores_csv, eval_json):
    rows = {}  # (run, scorer) -> {"known": [...], set name: [...]}
    with open(scores_csv, newline="") as f:
        for r in csv.DictReader(f):
            key = (r["run"], r["scorer"])
            name = "known" if r["split"] == "known" else r["set"]
            rows.setdefault(key, {}).setdefault(name, []).append(float(r["score"]))
    with open(eval_json) as f:
        entries = json.load(f)["by_score"]["runs"]
    seen, bad = set(), 0
    for e in entries:
        key = (e["run"], e["scorer"])
        sets = rows.get(key, {})
        known, unknown = sets.get("known", []), sets.get(e["unknown_set"], [])
        if not known or not unknown:
            print(f"{key} {e['unknown_set']}: no rows in {scores_csv}")
            bad += 1
            continue
        y = [0] * len(known) + [1] * len(unknown)
        ours = roc_auc_score(y, known + unknown)
        ok = abs(ours - e["auroc"]) <= 1e-9
        bad += not ok
        seen.add(key)
        print(f"{'ok ' if ok else 'BAD'} {e['run']} {e['unknown_set']} {e['scorer']}: sklearn {ours:.12f} "
              f"cac_eval {e['auroc']:.12f}")
    missing = set(rows) - seen
    for key in sorted(missing):
        print(f"{key}: in {scores_csv} but not in {eval_json}")
    return 1 if bad or missing else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
