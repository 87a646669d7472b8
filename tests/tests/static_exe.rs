//! Static executables (issue 22): programs with no PT_INTERP (Go with `CGO_ENABLED=0`,
//! musl- or glibc-static C, static-PIE), which the kernel starts without ld.so, so
//! `LD_PRELOAD` never loads the shim. `fastnet run` says so in one line instead of
//! letting them run on the kernel silently.

use fastnet_e2e::shim::{compile_c, fastnet_bin, TempDir};
use std::process::Command;

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
