#!/usr/bin/env bash
# Grayscale every photo under a folder into a mirror tree, doing only what is
# missing: rerun it after an interruption and it picks up where it stopped.
#
#   scripts/gray-tree.sh PHOTOS_DIR MIRROR_DIR
set -euo pipefail
source_dir=${1:?usage: gray-tree.sh PHOTOS_DIR MIRROR_DIR}
mirror_dir=${2:?usage: gray-tree.sh PHOTOS_DIR MIRROR_DIR}

# -r descends into subfolders; --out-dir mirrors their layout; --skip-existing
# skips inputs whose outputs exist (outputs are written atomically, so an
# existing file is whole). The exit code is the worst of all inputs.
cnnfilters grayscale "$source_dir" -r --out-dir "$mirror_dir" --name "{stem}.png" \
    --skip-existing --quiet
