//! Link settings of the `kura` binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        // Packed relative relocations (DT_RELR, glibc 2.36+, GNU ld 2.38+):
        // the position-independent binary keeps its address-space layout
        // randomisation, but its ~100,000 relative relocations take 36 KB
        // instead of 2.5 MB, which the loader reads at every start and
        // which stayed resident (BENCHMARKS.md, "Idle memory"). A linker
        // or C library without support leaves the relocations unpacked.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
