//! Static executables (issue 22): programs with no PT_INTERP (Go with `CGO_ENABLED=0`,
//! musl- or glibc-static C, static-PIE), which the kernel starts without ld.so, so
//! `LD_PRELOAD` never loads the shim. `fastnet run` says so in one line instead of
//! letting them run on the kernel silently. `fastnet-loader` (loader/) starts such a
//! program from inside a process of ours the way the kernel would: the tests run each
//! program directly and through it and compare.

use fastnet_e2e::apps::{random_file, sha256_file};
use fastnet_e2e::shim::{
    build_go_static, compile_c, compile_c_with, fastnet_bin, loader_bin, TempDir,
};
use std::io::{BufRead, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const STATIC_LINE: &str = "(no ELF interpreter, LD_PRELOAD is not read): it runs unaccelerated, every socket on the kernel";

/// `fastnet run -- PROG a b` (with PATH lookup when `prog` has no '/'): exit code,
/// stdout, and the stderr lines that name a static program.
fn fastnet_run(prog: &str, path_var: &std::path::Path) -> (i32, String, Vec<String>) {
    let out = Command::new(fastnet_bin())
        .args(["run", "--", prog, "a", "b c"])
        .env("PATH", path_var)
        .env("FOO", "bar")
        .env_remove("FASTNET_IFACE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = stderr
        .lines()
        .filter(|l| l.contains(STATIC_LINE))
        .map(str::to_string)
        .collect();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        said,
    )
}

/// A static and a static-PIE program (found through PATH, and run through a `#!`
/// script whose interpreter is static) get exactly one line naming them, and still run
/// as they would (argv, environment, exit code); a dynamic program gets none.
#[test]
fn fastnet_run_says_in_one_line_that_a_static_program_runs_unaccelerated() {
    let dir = TempDir::new("static-line");
    let d = dir.path();
    compile_c("static_args", "prog-static", d, &["-static"]);
    compile_c("static_args", "prog-static-pie", d, &["-static-pie"]);
    compile_c("static_args", "prog-dynamic", d, &[]);
    let script = d.join("script");
    std::fs::write(&script, format!("#!{}\n", d.join("prog-static").display())).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    for (prog, kind) in [
        ("prog-static", "a static executable"),
        ("prog-static-pie", "a static-PIE executable"),
    ] {
        let (code, stdout, said) = fastnet_run(prog, d);
        assert_eq!(said.len(), 1, "{prog}: {said:?}");
        let want = format!(
            "fastnet run: {} is {kind} {STATIC_LINE}",
            d.join(prog).display()
        );
        assert_eq!(said[0], want);
        assert_eq!(code, 13, "{prog}: {stdout}");
        assert!(
            stdout.contains("argv[0]=prog")
                && stdout.contains("argv[2]=b c\nFOO=bar\n")
                && stdout.contains("data 42, ok"),
            "{prog}: {stdout}"
        );
    }

    let (code, stdout, said) = fastnet_run(script.to_str().unwrap(), d);
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].contains(&format!(
            "{} (the interpreter of {})",
            d.join("prog-static").display(),
            script.display()
        )),
        "{said:?}"
    );
    assert_eq!(code, 14, "{stdout}");

    let (code, stdout, said) = fastnet_run("prog-dynamic", d);
    assert!(said.is_empty(), "{said:?}");
    assert_eq!(code, 13, "{stdout}");
}

/// `bin a "b c"` with argv[0] `prog` and FOO=bar, directly or through the loader.
fn run_args(bin: &Path, through_loader: bool) -> Output {
    let mut c = if through_loader {
        let mut c = Command::new(loader_bin());
        c.arg(bin);
        c
    } else {
        Command::new(bin)
    };
    c.arg0("prog")
        .args(["a", "b c"])
        .env("FOO", "bar")
        .output()
        .unwrap()
}

/// glibc-static, glibc-static-PIE, musl-static C programs, with a non-executable and
/// an executable stack (PT_GNU_STACK): through the loader each prints exactly what it
/// prints when the kernel starts it (argv without the loader's, the environment,
/// AT_EXECFN, AT_BASE 0, AT_RANDOM and the vDSO kept, .bss zeroed, data initialised,
/// malloc working, the stack's permissions) and exits with the same code.
#[test]
fn the_loader_starts_static_c_programs_as_the_kernel_would() {
    let dir = TempDir::new("loader-c");
    let d = dir.path();
    let builds = [
        compile_c("static_args", "glibc-static", d, &["-static"]),
        compile_c("static_args", "glibc-static-pie", d, &["-static-pie"]),
        compile_c(
            "static_args",
            "glibc-static-execstack",
            d,
            &["-static", "-Wl,-z,execstack"],
        ),
        compile_c_with("musl-gcc", "static_args", "musl-static", d, &["-static"]),
    ];
    for bin in &builds {
        let direct = run_args(bin, false);
        let loaded = run_args(bin, true);
        let (want, got) = (
            String::from_utf8_lossy(&direct.stdout),
            String::from_utf8_lossy(&loaded.stdout),
        );
        let name = bin.file_name().unwrap().to_string_lossy();
        assert_eq!(direct.status.code(), Some(13), "{name}: {want}");
        assert!(
            want.starts_with("argv[0]=prog\nargv[1]=a\nargv[2]=b c\nFOO=bar\n")
                && want.contains(&format!("AT_EXECFN={} AT_BASE=0\n", bin.display()))
                && want.contains("AT_RANDOM set, AT_SYSINFO_EHDR set\n")
                && want.contains("data 42, ok"),
            "{name}: {want}"
        );
        let stack = if name.contains("execstack") {
            "stack rwxp"
        } else {
            "stack rw-p"
        };
        assert!(want.contains(stack), "{name}: {want}");
        assert_eq!(
            got,
            want,
            "{name} through the loader; stderr {}",
            String::from_utf8_lossy(&loaded.stderr)
        );
        assert_eq!(loaded.status.code(), Some(13), "{name}");
        assert!(loaded.stderr.is_empty(), "{name}: {loaded:?}");
    }
}

/// A Go program built with `CGO_ENABLED=0` (ET_EXEC at 0x400000, its runtime's
/// threads, its own reading of auxv) through the loader: its argv, environment and
/// exit code, then as an HTTP server (net/http) serving 8 MB byte-exact on loopback.
#[test]
fn the_loader_runs_a_cgo_disabled_go_http_server() {
    let dir = TempDir::new("loader-go");
    let d = dir.path();
    let bin = build_go_static("static_http", d);
    let out = Command::new(loader_bin())
        .arg0("static_http")
        .arg(&bin)
        .args(["args", "x y", "7"])
        .env("FOO", "from env")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "argv[0]=static_http\nargv[1]=args\nargv[2]=x y\nargv[3]=7\nFOO=from env\n",
        "{out:?}"
    );
    assert_eq!(out.status.code(), Some(7), "{out:?}");

    let www = d.join("www");
    std::fs::create_dir_all(&www).unwrap();
    random_file(&www.join("blob"), 8 << 20, 22);
    let mut server = Command::new(loader_bin())
        .arg(&bin)
        .arg("serve")
        .arg(&www)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let fetched = first
        .strip_prefix("listening ")
        .and_then(|p| p.trim().parse::<u16>().ok())
        .map(|port| http_get(port, "/blob"));
    let _ = server.kill();
    let _ = server.wait();
    let body = fetched.unwrap_or_else(|| panic!("server said {first:?}"));
    let got = d.join("got");
    std::fs::write(&got, &body).unwrap();
    assert_eq!(body.len(), 8 << 20);
    assert_eq!(sha256_file(&got), sha256_file(&www.join("blob")));
}

/// The body of `GET path` from 127.0.0.1:port (HTTP/1.0: the server closes after it).
fn http_get(port: u16, path: &str) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let head_end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP header");
    assert!(all.starts_with(b"HTTP/1.0 200") || all.starts_with(b"HTTP/1.1 200"));
    all.split_off(head_end + 4)
}

/// What the loader refuses, in one line and exit status 127 (a shell's "cannot
/// execute"): a dynamic program (start it directly), a missing file, no program.
#[test]
fn the_loader_refuses_what_it_cannot_start_in_one_line() {
    let dir = TempDir::new("loader-refuse");
    let dynamic = compile_c("static_args", "dynamic", dir.path(), &[]);
    let missing = dir.path().join("missing");
    for (args, want) in [
        (vec![dynamic.as_os_str()], "has an ELF interpreter"),
        (vec![missing.as_os_str()], "cannot open (errno 2)"),
        (vec![], "usage: fastnet-loader PROGRAM"),
    ] {
        let out = Command::new(loader_bin()).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(127), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
