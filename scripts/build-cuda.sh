#!/usr/bin/env bash
# Builds the CUDA binaries of loramux on a machine without a GPU (the recipe of
# shared/CUDA.md, scripted): a CUDA 13.0 toolkit from pinned PyPI wheels in .cuda-venv/, a
# link-time-only libcuda stub, then cargo with its own target dir (.cuda/target), and the
# results plus NVRTC 13.0 copied into .cuda/dist/ for the GPU machine (driver 580, sm_90).
#
#   scripts/build-cuda.sh            the loramux binary (cargo build --release --features cuda)
#   scripts/build-cuda.sh --kernels  only loramux-kernels: its test binaries and bench_cuda
#   scripts/build-cuda.sh --clippy   clippy -D warnings on loramux-kernels and loramux-runtime
#   scripts/build-cuda.sh --model    the loramux binary and the runtime's integration-test
#                                    binary (the device backend's GPU tests), packed with
#                                    NVRTC into .cuda/dist/model-gpu.tar.xz for a GPU session
#
# Every step is idempotent: a second run reuses the venv, the links, the stub and the build.
# On the GPU machine: LD_LIBRARY_PATH=.cuda/dist:/usr/local/cuda/lib64 .cuda/dist/<binary>
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
mode=${1:-all}
case "$mode" in
all | --kernels | --clippy | --model) ;;
*)
    echo "usage: $0 [--kernels | --clippy | --model]" >&2
    exit 2
    ;;
esac

# 1. Toolkit: 13.0 exactly. nvcc 13.1+ emits PTX the 580 driver rejects, cudarc's build
# script refuses unknown versions, and a 12.x toolkit links against *.so.12 (absent there).
venv=$root/.cuda-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check \
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-cccl==13.0.85 \
    nvidia-cublas==13.0.0.19 nvidia-curand==10.4.0.35
cuda_home=$("$venv/bin/python" - <<'EOF'
import pathlib, nvidia
roots = [pathlib.Path(p) / "cu13" for p in nvidia.__path__]
print(next(str(r) for r in roots if (r / "bin" / "nvcc").exists()))
EOF
)
echo "CUDA 13.0 tree: $cuda_home"

# 2. The wheels ship only versioned libraries: the linker wants the unversioned names.
for lib in cudart:13 nvrtc:13 cublas:13 cublasLt:13 curand:10; do
    name=${lib%%:*}
    ln -sfn "lib$name.so.${lib##*:}" "$cuda_home/lib/lib$name.so"
done

# 3. A link-time-only libcuda (soname libcuda.so.1): every cu* driver symbol cudarc can
# call, each returning 34 (CUDA_ERROR_STUB_LIBRARY). The real driver replaces it at run
# time; it must never be shipped next to a binary.
cudarc_src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$(
    grep -A1 '^name = "cudarc"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p'
)" | head -n1)
if [ ! -d "$cudarc_src" ]; then
    cargo fetch
    cudarc_src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* | head -n1)
fi
stubs=$cuda_home/lib/stubs
mkdir -p "$stubs" "$root/.cuda"
stub_c=$root/.cuda/libcuda_stub.c
grep -oh 'load::<_F>("cu[A-Za-z0-9_]*")' "$cudarc_src/src/driver/sys/mod.rs" |
    sed 's/.*("\(.*\)")/\1/' | sort -u |
    awk '{ printf "int %s(void) { return 34; }\n", $1 }' >"$stub_c.new"
echo "libcuda stub: $(wc -l <"$stub_c.new") symbols from $cudarc_src"
if ! cmp -s "$stub_c.new" "$stub_c" || [ ! -f "$stubs/libcuda.so" ]; then
    mv "$stub_c.new" "$stub_c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so" "$stub_c"
else
    rm "$stub_c.new"
fi

# 4. Build. cudarc adds $CUDA_HOME/lib and lib/stubs to the link path; candle-kernels
# compiles its .cu files for CUDA_COMPUTE_CAP (90 becomes sm_90a).
export CUDA_HOME=$cuda_home
export PATH=$cuda_home/bin:$PATH
export CUDA_COMPUTE_CAP=90 CUDARC_CUDA_VERSION=13000 CUDAFORGE_THREADS=2
export CARGO_TARGET_DIR=$root/.cuda/target
dist=$root/.cuda/dist
mkdir -p "$dist"
started=$(date +%s)
if [ "$mode" = --clippy ]; then
    # --release: the same profile as the builds, so candle-kernels' nvcc step is reused.
    cargo clippy --release -p loramux-kernels --features cuda --all-targets -- -D warnings
    cargo clippy --release -p loramux-runtime --features cuda --all-targets -- -D warnings
    echo "clippy took $(($(date +%s) - started)) s"
    exit 0
elif [ "$mode" = --model ]; then
    cargo build --release --features cuda
    strip -o "$dist/loramux" "$CARGO_TARGET_DIR/release/loramux"
    cargo test --release -p loramux-runtime --features cuda --test integration --no-run \
        --message-format=json-render-diagnostics >"$root/.cuda/model-tests-build.json"
    jq -r 'select(.reason == "compiler-artifact" and .executable != null)
        | .executable' "$root/.cuda/model-tests-build.json" |
        while read -r exe; do
            strip -o "$dist/runtime-integration" "$exe"
        done
    echo "built $dist/loramux and $dist/runtime-integration"
elif [ "$mode" = --kernels ]; then
    # The test binary and the bench are found in cargo's JSON messages: their file names
    # carry a hash.
    cargo build --release -p loramux-kernels --features cuda --examples --tests \
        --message-format=json-render-diagnostics >"$root/.cuda/kernels-build.json"
    jq -r 'select(.reason == "compiler-artifact" and .executable != null)
        | "\(.target.name) \(.executable)"' "$root/.cuda/kernels-build.json" |
        while read -r name exe; do
            # Stripped: panics keep their file:line, and a GPU session can carry them.
            strip -o "$dist/$name" "$exe"
            echo "built $dist/$name"
        done
else
    cargo build --release --features cuda
    cp "$CARGO_TARGET_DIR/release/loramux" "$dist/loramux"
    strip "$dist/loramux"
    echo "built $dist/loramux"
fi
echo "cargo took $(($(date +%s) - started)) s"

# 5. NVRTC 13.0 beside the binaries, in case the GPU machine's own NVRTC is newer (its PTX
# would be too new for the 580 driver). Not the stub.
cp "$cuda_home/lib/libnvrtc.so.13" "$cuda_home/lib/libnvrtc-builtins.so.13.0" "$dist/"
if [ "$mode" = --kernels ]; then
    # One archive (about 45 MB) of the kernels' binaries and NVRTC: it fits what a session
    # may carry to a GPU machine. There: tar xJf kernels-gpu.tar.xz, then run them with
    # LD_LIBRARY_PATH=kernels-gpu:<CUDA 13 libraries>.
    (cd "$dist" && tar -cJf ../kernels-gpu.tar.xz --transform 's,^,kernels-gpu/,' \
        lora_mix loramux_kernels bench_cuda libnvrtc.so.13 libnvrtc-builtins.so.13.0)
    mv "$root/.cuda/kernels-gpu.tar.xz" "$dist/"
fi
echo "dist: $dist"
ls -l "$dist"
