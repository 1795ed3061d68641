#!/usr/bin/env bash
# Gradient maps of every PNG and JPEG matching a pattern, with one combined JSON
# report, and a line per failed check.
#
#   scripts/gradient-report.sh 'photos/**/*.jpg' OUT_DIR
set -euo pipefail
pattern=${1:?usage: gradient-report.sh PATTERN OUT_DIR}
out_dir=${2:?usage: gradient-report.sh PATTERN OUT_DIR}

# The pattern is quoted: cnnfilters expands it itself, ** included, so the
# script behaves the same in every shell.
status=0
cnnfilters gradient "$pattern" --out-dir "$out_dir" --report "$out_dir/report.json" \
    --quiet || status=$?
python3 - "$out_dir/report.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
for entry in report["inputs"]:
    for check in entry["checks"]:
        if not check["passed"]:
            print(f"{entry['input']}: {check['name']} differs by {check['max_abs']}")
print(f"{len(report['inputs'])} inputs, all checks passed: {report['passed']}")
PY
exit "$status"
