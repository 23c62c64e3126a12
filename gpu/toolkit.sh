#!/usr/bin/env bash
# Installs the CUDA 13.0 toolkit that `make build-cuda` compiles against, from
# NVIDIA's PyPI wheels, into PREFIX (default .cuda), and prepares what a
# dynamic link against it needs: unversioned library names and a libcuda.so
# stub (the wheels carry no driver; the real libcuda.so.1 comes with the
# NVIDIA driver on the machine that runs the binary).
#
# Prints the toolkit root (the CUDA_HOME to build with) on its last line.
#
# Why 13.0 exactly: PTX from a newer nvcc does not load on a CUDA 13.0 driver,
# and cudarc 0.19 refuses nvcc 13.5. nvvm and crt must match nvcc (pip would
# otherwise take 13.5, whose PTX the 13.0 ptxas rejects); cccl supplies the
# `nv/target` header.
set -euo pipefail

prefix=$(realpath -m "${1:-.cuda}")
root="$prefix/nvidia/cu13"
wheels=(
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96
    nvidia-cuda-nvrtc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
    nvidia-cuda-cccl==13.0.85 nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
)
stamp="$prefix/.installed"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "${wheels[*]}" ]]; then
    echo "installing CUDA 13.0 wheels into $prefix" >&2
    python3 -m pip install --quiet --disable-pip-version-check --upgrade \
        --target "$prefix" "${wheels[@]}" >&2
    echo "${wheels[*]}" >"$stamp"
fi

# cudarc searches $CUDA_HOME/lib/stubs: unversioned names for the linker.
stubs="$root/lib/stubs"
mkdir -p "$stubs"
for lib in cublas cublasLt cudart curand nvrtc; do
    real=$(ls "$root/lib/lib$lib.so."* | grep -v builtins | grep -v alt | head -n1)
    ln -sf "$real" "$stubs/lib$lib.so"
done

# The driver API stub: every cu* entry point cudarc declares, soname
# libcuda.so.1 like the driver's own, so the binary asks for the real one.
# Each returns CUDA_ERROR_NO_DEVICE (100), so a binary run against the stub
# behaves as on a machine with a driver and no GPU (the error strings say so).
cudarc=$(cargo metadata --format-version 1 --features sieve/cuda 2>/dev/null |
    python3 -c 'import json,sys,os
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "cudarc": print(os.path.dirname(p["manifest_path"]))' | head -n1)
if [[ -z "$cudarc" ]]; then
    echo "toolkit.sh: cudarc is not in the dependency graph (run from the workspace)" >&2
    exit 1
fi
{
    echo 'static const char *stub = "no CUDA driver (libcuda stub)";'
    echo 'int cuGetErrorString(int e, const char **s) { *s = stub; return 0; }'
    echo 'int cuGetErrorName(int e, const char **s) { *s = stub; return 0; }'
    grep -ho 'pub unsafe fn cu[A-Za-z0-9_]*' "$cudarc/src/driver/sys/mod.rs" |
        awk '{print $4}' | sort -u | grep -v -x -e cuGetErrorString -e cuGetErrorName |
        awk '{print "int " $1 "(void) { return 100; }"}'
} >"$stubs/libcuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so" "$stubs/libcuda_stub.c"

echo "$root"
