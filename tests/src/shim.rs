//! Locating (and building) libfastnet.so and the `fastnet` binary for the tests, and
//! compiling the small C programs in `tests/c/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// `target/<dir>/<profile>` of the running test binary (`.../<profile>/deps/<test>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps")
        .to_path_buf()
}

/// Builds the shim and the `fastnet` binary with the tests' own profile and target
/// directory (once per test process), so the tests never run a stale shim.
pub fn build_shim() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = profile_dir();
        let target = dir.parent().expect("target dir");
        let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "-q",
            "-p",
            "shim",
            "-p",
            "fastnet-tools",
            "-p",
            "fastnet-loader",
        ])
        .env("CARGO_TARGET_DIR", target)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
        match profile {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        let st = cmd.status().expect("run cargo build");
        assert!(
            st.success(),
            "cargo build -p shim -p fastnet-tools -p fastnet-loader failed"
        );
        dir
    })
}

/// Path of the built libfastnet.so.
pub fn shim_path() -> PathBuf {
    build_shim().join("libfastnet.so")
}

/// Path of the built `fastnet` binary.
pub fn fastnet_bin() -> PathBuf {
    build_shim().join("fastnet")
}

/// Path of the built `fastnet-loader` (static executables, issue 22).
pub fn loader_bin() -> PathBuf {
    build_shim().join("fastnet-loader")
}

/// Builds the Go program in `tests/go/<name>/` with `CGO_ENABLED=0` (a static
/// executable) into `out_dir/<name>`; Go's build cache is the user's (or one in
/// `out_dir` when there is no HOME).
pub fn build_go_static(name: &str, out_dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("go").join(name);
    let out = out_dir.join(name);
    let mut go = Command::new("go");
    go.args(["build", "-o"])
        .arg(&out)
        .arg("main.go")
        .current_dir(&src)
        .env("CGO_ENABLED", "0")
        .env("GO111MODULE", "off");
    if std::env::var_os("HOME").is_none() {
        go.env("GOCACHE", out_dir.join("gocache"));
    }
    let st = go
        .status()
        .expect("run go (golang-go: scripts/install-deps.sh)");
    assert!(st.success(), "go build {} failed", src.display());
    out
}

/// Compiles `tests/c/<name>.c` with gcc into `out_dir`; `extra` goes after the source
/// (libraries, `-shared -fPIC`, ...). Returns the output path (`out_dir/<output>`).
pub fn compile_c(name: &str, output: &str, out_dir: &Path, extra: &[&str]) -> PathBuf {
    compile_c_with("gcc", name, output, out_dir, extra)
}

/// [`compile_c`] with another C compiler driver (`musl-gcc`).
pub fn compile_c_with(
    cc: &str,
    name: &str,
    output: &str,
    out_dir: &Path,
    extra: &[&str],
) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("c")
        .join(format!("{name}.c"));
    let out = out_dir.join(output);
    let st = Command::new(cc)
        .args(["-O2", "-Wall", "-o"])
        .arg(&out)
        .arg(&src)
        .args(extra)
        .status()
        .unwrap_or_else(|e| panic!("run {cc}: {e}"));
    assert!(st.success(), "{cc} {} failed", src.display());
    out
}

/// A directory under the system temp dir, unique per call, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("fastnet-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
