//! Links the loader as a static-PIE with no C runtime and no libc: the kernel maps it
//! at its ELF_ET_DYN_BASE (far from the 0x400000 a non-PIE static target wants) and
//! jumps to our `_start`, which applies the loader's own relocations first.
fn main() {
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static-pie",
        "-Wl,-z,noexecstack",
        "-Wl,--gc-sections",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
