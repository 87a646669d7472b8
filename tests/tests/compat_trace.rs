//! `fastnet trace -c` against `strace -f -c` for the same deterministic commands, and
//! `fastnet run`.

use fastnet_e2e::shim::{compile_c, fastnet_bin, shim_path, TempDir};
use std::collections::BTreeMap;
use std::process::Command;

/// What ld.so does before the shim's constructor runs (loading the program, its
/// libraries and the shim; TLS, robust list and rseq setup), what other libraries'
/// constructors that run before ours do (libselinux: statfs), and the shim's own raw
/// calls (reading /proc/self/maps, patching code): strace sees these, the hook cannot.
const BEFORE_CTOR: &[&str] = &[
    "execve",
    "brk",
    "arch_prctl",
    "set_tid_address",
    "set_robust_list",
    "rseq",
    "prlimit64",
    "mmap",
    "munmap",
    "mprotect",
    "mremap",
    "mincore",
    "openat",
    "read",
    "pread64",
    "newfstatat",
    "fstat",
    "close",
    "access",
    "getrandom",
    "statfs",
];

/// Calls that never return: strace -c counts a call when it returns, the hook when it
/// is made.
/// (`pause` here: a process ends while a thread sleeps in it.)
const NEVER_RETURN: &[&str] = &["exit_group", "exit", "pause"];

/// Counts that depend on timing, not on the command: futex waits (thread joins),
/// sched_yield spins, and signals (SIGCHLD arriving while the shell waits or not:
/// rt_sigreturn, and the wait4 calls it interrupts).
const TIMING: &[&str] = &["futex", "sched_yield", "rt_sigreturn", "wait4"];

/// Calls the kernel restarts by itself (ERESTARTNOINTR: a fork interrupted by a
/// SIGCHLD): strace counts every attempt, the hook the one call the program made.
const RESTARTED: &[&str] = &["clone", "clone3", "vfork", "fork"];

/// `calls` per syscall name from strace -c's table (calls is the 4th column, the name
/// the last).
fn parse_strace(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<_> = l.split_whitespace().collect();
            let name = *f.last()?;
            let calls = f.get(3)?.parse().ok()?;
            (name != "total").then(|| (name.to_string(), calls))
        })
        .collect()
}

/// `calls name` rows from fastnet trace's table.
fn parse_fastnet(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let calls = f.next()?.parse().ok()?;
            let name = f.next()?;
            (name != "total" && f.next().is_none()).then(|| (name.to_string(), calls))
        })
        .collect()
}

/// Runs `cmd` under both counters and compares name by name; names in `off_by_one` may
/// differ by one.
fn compare(cmd: &[&str], off_by_one: &[&str]) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let dir = TempDir::new("strace");
    let st_file = dir.path().join("strace.txt");
    let st = Command::new("strace")
        .args(["-f", "-c", "-o"])
        .arg(&st_file)
        .arg("--")
        .args(cmd)
        .output()
        .expect("run strace");
    let fa = Command::new(fastnet_bin())
        .args(["trace", "-c", "--"])
        .args(cmd)
        .output()
        .expect("run fastnet trace");
    assert_eq!(st.stdout, fa.stdout, "the command's own output differs");
    assert_eq!(st.status.code(), fa.status.code(), "exit codes differ");
    let s = parse_strace(&std::fs::read_to_string(&st_file).unwrap());
    let table = String::from_utf8_lossy(&fa.stderr).into_owned();
    let f = parse_fastnet(&table);
    assert!(!s.is_empty() && !f.is_empty(), "empty tables: {table}");
    let names: std::collections::BTreeSet<_> = s.keys().chain(f.keys()).collect();
    let mut compared = 0;
    for name in names {
        let (sc, fc) = (
            s.get(name).copied().unwrap_or(0),
            f.get(name).copied().unwrap_or(0),
        );
        if TIMING.contains(&name.as_str()) {
            continue;
        } else if BEFORE_CTOR.contains(&name.as_str()) || RESTARTED.contains(&name.as_str()) {
            assert!(fc <= sc, "{name}: fastnet {fc} > strace {sc}\n{table}");
        } else if NEVER_RETURN.contains(&name.as_str()) {
            assert!(fc >= sc, "{name}: fastnet {fc} < strace {sc}\n{table}");
        } else if off_by_one.contains(&name.as_str()) {
            assert!(
                fc.abs_diff(sc) <= 1,
                "{name}: fastnet {fc}, strace {sc}\n{table}"
            );
        } else {
            assert_eq!(fc, sc, "{name}: fastnet {fc}, strace {sc}\n{table}");
            compared += sc;
        }
    }
    assert!(
        compared > 20,
        "too few calls compared exactly: {compared}\n{table}"
    );
    (s, f)
}

#[test]
fn trace_matches_strace_for_a_shell_pipeline_with_children() {
    let (_, f) = compare(
        &[
            "sh",
            "-c",
            "ls -la /usr/share/doc > /dev/null; echo x | cat > /dev/null; \
         cat /etc/passwd | wc -l; (exit 3) || true; exit 4",
        ],
        &[],
    );
    // Children were counted: more than one process executed commands (cat, wc, ls).
    assert!(f.get("execve").copied().unwrap_or(0) >= 4, "{f:?}");
}

#[test]
fn trace_counts_raw_syscalls_in_dlopened_code() {
    let dir = TempDir::new("trace-dl");
    let lib = compile_c("rawlib", "librawlib.so", dir.path(), &["-shared", "-fPIC"]);
    let bin = compile_c("dlopen", "dlopen", dir.path(), &["-ldl"]);
    let (s, f) = compare(&[bin.to_str().unwrap(), lib.to_str().unwrap(), "777"], &[]);
    // 777 raw calls in the library, 2 through libc in main.
    assert_eq!(s.get("getppid"), Some(&779));
    assert_eq!(f.get("getppid"), Some(&779));
}

#[test]
fn trace_counts_threads_clone3_and_signals() {
    let dir = TempDir::new("trace-thr");
    let bin = compile_c("threads", "threads", dir.path(), &["-lpthread"]);
    // A process that ends by exit_group from one thread flushes its counts then: a call
    // another thread completes meanwhile (main's rt_sigprocmask after pthread_create)
    // can miss the flush.
    let (_, f) = compare(&[bin.to_str().unwrap(), "--no-raw"], &["rt_sigprocmask"]);
    assert!(f.get("clone3").copied().unwrap_or(0) >= 17, "{f:?}");
}

#[test]
fn fastnet_run_preloads_the_shim_and_passes_the_exit_code() {
    let out = Command::new(fastnet_bin())
        // No such interface here: --fallback=kernel runs the program anyway.
        .args([
            "run",
            "--iface",
            "veth-x",
            "--fallback=kernel",
            "--",
            "sh",
            "-c",
        ])
        .arg("echo \"$LD_PRELOAD|$FASTNET_IFACE\"; exit 5")
        .env("FASTNET_LOG", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        format!("{}|veth-x", shim_path().display()),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("fastnet: hook installed"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("running on the kernel (--fallback=kernel)")
    );

    // Without the .so next to the binary: one clear line, exit 1.
    let dir = TempDir::new("run-noso");
    let lonely = dir.path().join("fastnet");
    std::fs::copy(fastnet_bin(), &lonely).unwrap();
    let out = Command::new(&lonely)
        .args(["run", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("libfastnet.so not found"), "{err}");
    assert!(out.stdout.is_empty());
}

/// Under `trace -c` every system call goes through the Rust dispatch (alternate stack,
/// vector state saved): the hazard programs and python still behave exactly as without.
#[test]
fn programs_behave_the_same_when_every_call_is_handled() {
    let dir = TempDir::new("trace-all");
    let progs = [
        (compile_c("signals", "signals", dir.path(), &[]), vec![]),
        (compile_c("spawn", "spawn", dir.path(), &[]), vec!["50"]),
        (
            compile_c("threads", "threads", dir.path(), &["-lpthread"]),
            vec![],
        ),
        (compile_c("redzone", "redzone", dir.path(), &[]), vec![]),
    ];
    for (bin, args) in &progs {
        let plain = Command::new(bin).args(args).output().unwrap();
        let traced = Command::new(fastnet_bin())
            .args(["trace", "-c", "--"])
            .arg(bin)
            .args(args)
            .output()
            .unwrap();
        let table = String::from_utf8_lossy(&traced.stderr);
        assert_eq!(
            String::from_utf8_lossy(&plain.stdout),
            String::from_utf8_lossy(&traced.stdout),
            "{}: {table}",
            bin.display()
        );
        assert_eq!(plain.status.code(), Some(0), "{}", bin.display());
        assert_eq!(traced.status.code(), Some(0), "{}: {table}", bin.display());
        assert!(table.contains(" total"), "{table}");
    }
    let py = "import threading, subprocess, os\n\
              t = [threading.Thread(target=os.getppid) for _ in range(4)]\n\
              [x.start() for x in t]; [x.join() for x in t]\n\
              print(subprocess.check_output(['echo', 'hi']))";
    let plain = Command::new("python3").args(["-c", py]).output().unwrap();
    let traced = Command::new(fastnet_bin())
        .args(["trace", "-c", "--", "python3", "-c", py])
        .output()
        .unwrap();
    assert_eq!(plain.stdout, traced.stdout);
    assert_eq!(traced.status.code(), Some(0));
}
