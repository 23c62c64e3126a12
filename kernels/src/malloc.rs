//! Keeps glibc's malloc from returning activation memory to the kernel
//! between training steps.
//!
//! A ResNet-20 step on 128 images allocates and frees about 300 MB of
//! activations and gradients in 2-8 MB blocks. With glibc's default dynamic
//! thresholds, freed blocks at the top of the heap are trimmed back to the
//! kernel (trim threshold: twice the largest block seen, 16 MB) and the next
//! step faults every page in again: measured on a 2-core Zen 5, 60k page
//! faults and about 20% of a ResNet-20 step's CPU time. Raising both
//! thresholds keeps the memory mapped and reused; the process holds on to its
//! peak heap (a few hundred MB), which a training process needs again
//! anyway.
//!
//! Other allocators (jemalloc, mimalloc) cache freed memory by themselves; on
//! non-glibc targets this does nothing.

/// Largest block glibc serves from its heap rather than a fresh `mmap`; 32
/// MB is the most `mallopt` accepts on 64-bit, above any proxy activation at
/// batch 256 (16 MB).
const MMAP_THRESHOLD: i32 = 32 << 20;

/// Free memory at the top of the heap kept before trimming: 1 GB.
const TRIM_THRESHOLD: i32 = 1 << 30;

/// Tunes glibc's malloc as the module doc describes; once per process,
/// idempotent, and a no-op on other C libraries.
pub fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        // glibc's <malloc.h>: M_TRIM_THRESHOLD = -1, M_MMAP_THRESHOLD = -3.
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        // SAFETY: mallopt only changes glibc's allocation policy; it is
        // thread-safe and valid at any point in the process.
        ONCE.call_once(|| unsafe {
            mallopt(-3, MMAP_THRESHOLD);
            mallopt(-1, TRIM_THRESHOLD);
        });
    }
}
