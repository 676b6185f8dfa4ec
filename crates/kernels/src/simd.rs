//! Which SIMD code paths this process takes, as the libraries choose them at run time.
//!
//! Floating-point results depend on these choices (vector width changes the order of a
//! reduction's additions) and on the CPU's cache sizes (gemm blocks its inner dimension by the L1
//! size), so two CPUs can give different bits for the same run. Recording the paths next to a
//! result says which results should be bit-identical: same paths and same CPU model.

use std::fmt;

/// The SIMD path of each library that does floating-point work in a training or prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimdPaths {
    /// burn flex's element-wise and reduction kernels (macerator's `Arch::detect`).
    pub flex: &'static str,
    /// gemm's micro-kernels (matmul and spineseg's convolutions).
    pub gemm: &'static str,
    /// spineseg-kernels' fused instance norm + leaky ReLU loops.
    pub norm: &'static str,
}

/// The paths on this CPU, detected with the same feature checks the libraries make (macerator
/// 0.5 with its default `avx512` feature, gemm 0.19 with `x86-v4`, [`crate::cpu`]'s norm).
pub fn simd_paths() -> SimdPaths {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let v2 = has!("sse3") && has!("ssse3") && has!("sse4.1") && has!("sse4.2") && has!("popcnt");
        let v3 = v2 && has!("avx") && has!("avx2") && has!("bmi1") && has!("bmi2") && has!("fma") && has!("lzcnt") && has!("f16c");
        let v4 = v3 && has!("avx512f") && has!("avx512bw") && has!("avx512cd") && has!("avx512dq") && has!("avx512vl");
        let flex = if v4 {
            "avx512 (x86-64-v4)"
        } else if v3 {
            "avx2 (x86-64-v3)"
        } else if v2 {
            "sse4.2 (x86-64-v2)"
        } else {
            "scalar"
        };
        let gemm = if has!("avx512f") {
            "avx512f"
        } else if has!("fma") {
            "fma"
        } else {
            "scalar"
        };
        let norm = if has!("avx512f") {
            "avx512f"
        } else if has!("avx2") {
            "avx2"
        } else {
            "sse2"
        };
        SimdPaths { flex, gemm, norm }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        SimdPaths { flex: "native", gemm: "native", norm: "native" }
    }
}

impl fmt::Display for SimdPaths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flex {}, gemm {}, norm {}", self.flex, self.gemm, self.norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_consistent_with_each_other() {
        let paths = simd_paths();
        // `cargo test -p spineseg-kernels simd -- --nocapture` shows what a CPU (or an emulated
        // one, scripts/test_simd_paths.sh) takes.
        println!("SIMD paths: {paths}");
        #[cfg(target_arch = "x86_64")]
        {
            // AVX2 without FMA exists on no CPU these libraries target; a wide flex path implies
            // the wide gemm and norm paths.
            if paths.flex.starts_with("avx512") {
                assert_eq!((paths.gemm, paths.norm), ("avx512f", "avx512f"), "{paths}");
            } else if paths.flex.starts_with("avx2") {
                assert_eq!((paths.gemm, paths.norm), ("fma", "avx2"), "{paths}");
            }
            assert!(paths.to_string().starts_with("flex "));
        }
    }
}
