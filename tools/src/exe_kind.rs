//! What kind of program `fastnet run` is about to start (issue 22): a dynamically linked
//! one loads the shim through `LD_PRELOAD`; a static executable (no PT_INTERP: Go with
//! `CGO_ENABLED=0`, musl- or glibc-static C, static-PIE) never reads `LD_PRELOAD`, so the
//! kernel would run it without the shim, silently.
//!
//! The command is looked up in `PATH` as `execvp` does; a `#!` script is its
//! interpreter's case (the kernel starts the interpreter, which is what the shim has to
//! get into), followed as far as the kernel does.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const PT_INTERP: u32 = 3;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
/// How many `#!` interpreters the kernel follows (BINPRM_MAX_RECURSION).
const MAX_SCRIPT_DEPTH: usize = 4;

/// The kind of executable a program file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExeKind {
    /// An ELF with an interpreter (`ld.so`): `LD_PRELOAD` loads the shim.
    Dynamic,
    /// A static ELF linked at fixed addresses (ET_EXEC without PT_INTERP).
    Static,
    /// A static position-independent ELF (ET_DYN without PT_INTERP).
    StaticPie,
    /// Anything else (not a 64-bit ELF, unreadable, a loop of scripts): left to exec.
    Other,
}

impl ExeKind {
    /// True for the kinds the kernel starts without a dynamic loader.
    pub fn is_static(&self) -> bool {
        matches!(self, ExeKind::Static | ExeKind::StaticPie)
    }
}

/// The program `execvp(prog)` would run: `prog` itself when it names a path (has a
/// `/`), else the first executable regular file called `prog` in `path_var` (`PATH`;
/// an empty entry is the current directory, as for `execvp`).
pub fn lookup(prog: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    if prog.contains('/') {
        return Some(PathBuf::from(prog));
    }
    if prog.is_empty() {
        return None;
    }
    let path_var = path_var.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    path_var
        .as_bytes()
        .split(|&b| b == b':')
        .map(|dir| {
            let dir = if dir.is_empty() { b"." } else { dir };
            Path::new(OsStr::from_bytes(dir)).join(prog)
        })
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The file the kernel ends up mapping when it executes `path`: `path` itself, or for
/// a `#!` script its interpreter (and so on, as deep as the kernel goes); with its kind.
pub fn classify(path: &Path) -> (PathBuf, ExeKind) {
    let mut path = path.to_path_buf();
    for _ in 0..=MAX_SCRIPT_DEPTH {
        let mut head = [0u8; 256];
        let Ok(n) = std::fs::File::open(&path).and_then(|mut f| read_up_to(&mut f, &mut head))
        else {
            return (path, ExeKind::Other);
        };
        let head = &head[..n];
        if let Some(interp) = shebang_interpreter(head) {
            path = interp;
            continue;
        }
        let kind = elf_kind(&path).unwrap_or(ExeKind::Other);
        return (path, kind);
    }
    (path, ExeKind::Other)
}

fn read_up_to(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The interpreter named by a `#!` line (the first word after `#!`, as the kernel reads
/// it), or `None` when `head` does not start with `#!`.
fn shebang_interpreter(head: &[u8]) -> Option<PathBuf> {
    let line = head.strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    let word = line
        .split(|&b| b == b' ' || b == b'\t')
        .find(|w| !w.is_empty())?;
    Some(PathBuf::from(OsStr::from_bytes(word)))
}

/// Reads the ELF header and program headers of `path`: `None` when it is not a
/// 64-bit little-endian ELF whose headers can be read.
fn elf_kind(path: &Path) -> Option<ExeKind> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).ok()?;
    let mut ehdr = [0u8; 64];
    f.read_exact_at(&mut ehdr, 0).ok()?;
    if ehdr[..4] != *b"\x7fELF" || ehdr[4] != 2 || ehdr[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    let e_type = u16_at(&ehdr, 0x10);
    let phoff = u64::from_le_bytes(ehdr[0x20..0x28].try_into().ok()?);
    let phentsize = usize::from(u16_at(&ehdr, 0x36));
    let phnum = usize::from(u16_at(&ehdr, 0x38));
    if phentsize < 56 || phnum == 0 {
        return None;
    }
    let mut phdrs = vec![0u8; phentsize * phnum];
    f.read_exact_at(&mut phdrs, phoff).ok()?;
    let has_interp = phdrs
        .chunks_exact(phentsize)
        .any(|ph| u32::from_le_bytes(ph[..4].try_into().unwrap()) == PT_INTERP);
    Some(match (e_type, has_interp) {
        (_, true) => ExeKind::Dynamic,
        (ET_EXEC, false) => ExeKind::Static,
        (ET_DYN, false) => ExeKind::StaticPie,
        _ => ExeKind::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A directory of its own under the temp dir, removed on drop.
    struct Scratch(PathBuf);
    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let p =
                std::env::temp_dir().join(format!("fastnet-exe-kind-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const HELLO_C: &str = "#include <stdio.h>\nint main(void) { puts(\"hi\"); return 0; }\n";

    fn gcc(dir: &Path, out: &str, flags: &[&str]) -> PathBuf {
        let src = dir.join("hello.c");
        std::fs::write(&src, HELLO_C).unwrap();
        let bin = dir.join(out);
        let st = Command::new("gcc")
            .args(flags)
            .arg("-o")
            .arg(&bin)
            .arg(&src)
            .status()
            .expect("run gcc");
        assert!(st.success(), "gcc {flags:?} failed");
        bin
    }

    #[test]
    fn gcc_binaries_are_told_apart() {
        let d = Scratch::new("gcc");
        let dynamic = gcc(&d.0, "dyn", &[]);
        let stat = gcc(&d.0, "static", &["-static", "-no-pie"]);
        let pie = gcc(&d.0, "static-pie", &["-static-pie"]);
        assert_eq!(classify(&dynamic).1, ExeKind::Dynamic);
        assert_eq!(classify(&stat).1, ExeKind::Static);
        assert_eq!(classify(&pie).1, ExeKind::StaticPie);
        assert!(classify(&stat).1.is_static() && classify(&pie).1.is_static());
        assert!(!classify(&dynamic).1.is_static());
    }

    #[test]
    fn a_cgo_disabled_go_binary_is_static() {
        let d = Scratch::new("go");
        std::fs::write(
            d.0.join("main.go"),
            "package main\nimport \"os\"\nfunc main() { os.Stdout.WriteString(\"hi\\n\") }\n",
        )
        .unwrap();
        let bin = d.0.join("hello-go");
        let mut go = Command::new("go");
        go.args(["build", "-o"])
            .arg(&bin)
            .arg("main.go")
            .current_dir(&d.0)
            .env("CGO_ENABLED", "0")
            .env("GO111MODULE", "off");
        if std::env::var_os("HOME").is_none() {
            go.env("GOCACHE", d.0.join("gocache"));
        }
        let st = go
            .status()
            .expect("run go (golang-go, scripts/install-deps.sh)");
        assert!(st.success(), "go build failed");
        assert_eq!(classify(&bin).1, ExeKind::Static);
    }

    #[test]
    fn a_script_is_its_interpreters_kind_and_path_lookup_finds_programs() {
        let d = Scratch::new("script");
        let stat = gcc(&d.0, "static-interp", &["-static"]);
        let script = d.0.join("script");
        std::fs::write(&script, format!("#! {} -x\necho\n", stat.display())).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(classify(&script), (stat.clone(), ExeKind::Static));
        // A script run by a script run by a static interpreter.
        let outer = d.0.join("outer");
        std::fs::write(&outer, format!("#!{}\n", script.display())).unwrap();
        assert_eq!(classify(&outer), (stat, ExeKind::Static));
        // A script whose interpreter is missing, and text that is no ELF.
        std::fs::write(&script, "#!/nonexistent/sh\n").unwrap();
        assert_eq!(classify(&script).1, ExeKind::Other);
        std::fs::write(&script, "plain text\n").unwrap();
        assert_eq!(classify(&script).1, ExeKind::Other);

        // PATH lookup: the first executable match wins; a path with '/' is taken as is.
        let (a, b) = (d.0.join("a"), d.0.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("prog"), "not executable").unwrap();
        std::fs::write(b.join("prog"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(b.join("prog"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path_var = std::env::join_paths([&a, &b]).unwrap();
        assert_eq!(lookup("prog", Some(&path_var)), Some(b.join("prog")));
        assert_eq!(lookup("missing", Some(&path_var)), None);
        assert_eq!(lookup("./x/prog", Some(&path_var)), Some("./x/prog".into()));
        assert_eq!(classify(&b.join("prog")).0, PathBuf::from("/bin/sh"));
    }
}
