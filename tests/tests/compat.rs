//! The compatibility battery: each program runs plainly and under the shim (the hook
//! installed, every call passed through) and must print the same stdout and exit with the
//! same code. The shim run has FASTNET_LOG=1, so its stderr proves the hook was active.
//! With no interface named the shim leaves a program unhooked, so the shim runs ask for
//! the hook with FASTNET_HOOK=always.

use fastnet_e2e::shim::{compile_c, shim_path, TempDir};
use std::path::Path;
use std::process::{Command, Output};

/// Runs `make()` twice, plainly and under the shim; asserts equal stdout and exit code
/// and that the hook was installed in the shim run. Returns the plain run's output.
fn same_under_shim(what: &str, make: impl Fn() -> Command) -> Output {
    let plain = make().output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let hooked = make()
        .env("LD_PRELOAD", shim_path())
        .env("FASTNET_HOOK", "always")
        .env("FASTNET_LOG", "1")
        .output()
        .unwrap_or_else(|e| panic!("{what} under the shim: {e}"));
    let stderr = String::from_utf8_lossy(&hooked.stderr);
    assert!(
        stderr.contains("fastnet: hook installed"),
        "{what}: hook not active under the shim; stderr: {stderr}"
    );
    assert!(!stderr.contains("hook inactive"), "{what}: {stderr}");
    assert_eq!(
        String::from_utf8_lossy(&plain.stdout),
        String::from_utf8_lossy(&hooked.stdout),
        "{what}: stdout differs under the shim; shim stderr: {stderr}"
    );
    assert_eq!(
        plain.status.code(),
        hooked.status.code(),
        "{what}: exit status differs ({:?} vs {:?}); shim stderr: {stderr}",
        plain.status,
        hooked.status
    );
    plain
}

fn sh(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", script]);
    c
}

#[test]
fn coreutils_ls_recursive_sorted() {
    let out = same_under_shim("ls -lR | sort", || sh("ls -lR /usr/share/doc | sort"));
    assert!(out.stdout.len() > 10_000, "ls printed too little");
}

#[test]
fn coreutils_sha256sum_200mb() {
    let dir = TempDir::new("sha");
    let file = dir.path().join("big");
    write_pseudo_random(&file, 200 << 20);
    let out = same_under_shim("sha256sum 200 MB", || {
        let mut c = Command::new("sha256sum");
        c.arg(&file);
        c
    });
    assert!(out.status.success());
}

/// Deterministic, incompressible content (xorshift64).
fn write_pseudo_random(path: &Path, len: usize) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..len / chunk.len() {
        for w in chunk.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&chunk).unwrap();
    }
}

#[test]
fn coreutils_tar_czf_then_xzf() {
    let plain_dir = TempDir::new("tar-plain");
    let shim_dir = TempDir::new("tar-shim");
    let which = std::sync::atomic::AtomicUsize::new(0);
    same_under_shim("tar czf / xzf", || {
        // First call: plain run's directory; second: the shim run's.
        let dir = if which.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
            plain_dir.path()
        } else {
            shim_dir.path()
        };
        let mut c = sh(
            "set -e; cd \"$D\"; tar czf a.tgz -C /usr/include linux; mkdir x; \
                        tar xzf a.tgz -C x; tar tzf a.tgz | sort | sha256sum; \
                        cd x && find . -type f | sort | xargs sha256sum | sha256sum; \
                        diff -r /usr/include/linux linux && echo identical",
        );
        c.env("D", dir);
        c
    });
}

#[test]
fn bash_pipes_subshells_jobs_and_500_posix_spawns() {
    let dir = TempDir::new("bash");
    let spawn = compile_c("spawn", "spawn", dir.path(), &[]);
    let script = r#"
        set -e
        seq 1 5000 | grep 7 | sort -rn | head -3
        echo "$( (echo sub; (echo subsub | tr a-z A-Z)) | paste -sd, )"
        out=$(mktemp -d)
        for i in 1 2 3 4 5 6 7 8; do ( sleep 0.0$i; echo "job $i" > "$out/$i" ) & done
        wait
        cat "$out"/*; rm -rf "$out"
        { echo a; echo b; } | while read -r l; do echo "line $l"; done
        x=0; for i in $(seq 1 200); do x=$((x+i)); done; echo "sum $x"
        "$SPAWN" 500
        echo done
    "#;
    let out = same_under_shim("bash script", || {
        let mut c = Command::new("bash");
        c.args(["-c", script]).env("SPAWN", &spawn);
        c
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("posix_spawn: 500 of 500"), "{text}");
    assert!(text.contains("job 8") && text.ends_with("done\n"), "{text}");
}

const PYTHON: &str = r#"
import asyncio, hashlib, os, signal, subprocess, threading, time

results = [None] * 8
def work(i):
    h = hashlib.sha256()
    for j in range(2000):
        h.update(f"{i}-{j}".encode())
        os.getppid()
    results[i] = h.hexdigest()[:12]
ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
for t in ts: t.start()
for t in ts: t.join()
print("threads", results)

out = subprocess.run(["sh", "-c", "echo from-sh; exit 3"], capture_output=True)
print("subprocess", out.returncode, out.stdout)
print("check_output", subprocess.check_output(["seq", "3"]).split())

async def echo_over_loopback():
    async def handle(r, w):
        w.write((await r.readline()).upper())
        await w.drain()
        w.close()
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async def client(i):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(f"hello {i}\n".encode())
        await w.drain()
        line = await r.readline()
        w.close()
        return line
    replies = await asyncio.gather(*(client(i) for i in range(20)))
    srv.close()
    await srv.wait_closed()
    return sorted(replies)
print("asyncio", asyncio.run(echo_over_loopback()))

count = 0
def on_alarm(sig, frame):
    global count
    count += 1
    os.getppid()
    os.stat("/")
signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
end = time.monotonic() + 1.0
while time.monotonic() < end:
    with open("/proc/self/stat", "rb") as f:
        f.read()
signal.setitimer(signal.ITIMER_REAL, 0, 0)
print("SIGALRM handler:", "over 100 runs" if count > 100 else f"only {count} runs")
"#;

#[test]
fn python_threads_subprocess_asyncio_sigalrm() {
    let out = same_under_shim("python3", || {
        let mut c = Command::new("python3");
        c.args(["-c", PYTHON]);
        c
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("subprocess 3 b'from-sh\\n'"), "{text}");
    assert!(text.contains("b'HELLO 19\\n'"), "{text}");
    assert!(text.contains("over 100 runs"), "{text}");
}

#[test]
fn git_init_add_commit_log() {
    let plain_dir = TempDir::new("git-plain");
    let shim_dir = TempDir::new("git-shim");
    let which = std::sync::atomic::AtomicUsize::new(0);
    let out = same_under_shim("git", || {
        let dir = if which.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
            plain_dir.path()
        } else {
            shim_dir.path()
        };
        let mut c = sh(
            "set -e; cd \"$D\"; git init -q repo; cd repo; echo hello > a; \
                        mkdir d; seq 1 100 > d/b; git add .; git commit -q -m first; \
                        echo more >> a; git commit -q -am second; \
                        git log --format='%H %an %s'; git status --short; \
                        git show --stat --format=%s HEAD",
        );
        c.env("D", dir)
            .env("HOME", dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Test")
            .env("GIT_AUTHOR_EMAIL", "t@example.org")
            .env("GIT_COMMITTER_NAME", "Test")
            .env("GIT_COMMITTER_EMAIL", "t@example.org")
            .env("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z");
        c
    });
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 6);
}

#[test]
fn perl_script() {
    let script = r#"
        use strict; use warnings;
        my %h; $h{$_ % 17} += $_ for 1..100000;
        print join(",", map { "$_=$h{$_}" } sort { $a <=> $b } keys %h), "\n";
        my $pid = fork(); if ($pid == 0) { exit 7 } waitpid($pid, 0);
        print "child exit ", $? >> 8, "\n";
        open(my $fh, "-|", "echo", "pipe", "from", "echo") or die; print scalar <$fh>; close $fh;
        print `printf 'a\nb\nc\n' | sort -r`;
        my $text = join "", map { chr(65 + $_ % 26) } 0..9999;
        my @m = ($text =~ /(ABC)/g); print scalar(@m), " matches\n";
        opendir(my $d, "/usr/share/perl5") or die;
        print scalar(grep { !/^\./ } readdir $d) > 0 ? "readdir ok\n" : "empty\n";
    "#;
    let out = same_under_shim("perl", || {
        let mut c = Command::new("perl");
        c.args(["-e", script]);
        c
    });
    assert!(String::from_utf8_lossy(&out.stdout).contains("child exit 7"));
}

/// Each C hazard program checks itself and exits non-zero when something broke.
fn c_hazard(name: &str, args: &[&str], libs: &[&str]) -> String {
    let dir = TempDir::new(name);
    let bin = compile_c(name, name, dir.path(), libs);
    let out = same_under_shim(name, || {
        let mut c = Command::new(&bin);
        c.args(args);
        c
    });
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{name} failed: {text}");
    text
}

#[test]
fn c_red_zone() {
    let t = c_hazard("redzone", &[], &[]);
    assert!(t.contains("0 of 1000 values lost"), "{t}");
}

#[test]
fn c_threads_clone3_clone_exit_group() {
    let t = c_hazard("threads", &[], &["-lpthread"]);
    assert!(t.contains("raw clone3 + clone: added 3200"), "{t}");
    assert!(t.contains("exit_group from a thread: exit code 3"), "{t}");
}

#[test]
fn c_vfork_posix_spawn_fork_exec() {
    let t = c_hazard("spawn", &["100"], &[]);
    assert!(t.contains("vfork: child exit 5, shared 42"), "{t}");
    assert!(t.contains("vfork+exec says hello") && t.contains("fork+exec says hello"));
}

#[test]
fn c_dlopen_library_with_raw_syscalls() {
    let dir = TempDir::new("rawlib");
    let lib = compile_c("rawlib", "librawlib.so", dir.path(), &["-shared", "-fPIC"]);
    let t = c_hazard("dlopen", &[lib.to_str().unwrap()], &["-ldl"]);
    assert!(t.contains("matches"), "{t}");
}

#[test]
fn c_signals_sigreturn_altstack_alarm_storm() {
    let t = c_hazard("signals", &[], &[]);
    assert!(
        t.contains("SIGUSR1: 1000 of 1000") && t.contains("over 100"),
        "{t}"
    );
}

/// Without CAP_SYS_RAWIO (and mmap_min_addr > 0) the shim says so in one line on stderr
/// and the program runs unhooked with the same output.
#[test]
fn without_address_zero_runs_unhooked() {
    let min_addr = std::fs::read_to_string("/proc/sys/vm/mmap_min_addr").unwrap();
    if min_addr.trim() == "0" {
        eprintln!("skipped: vm.mmap_min_addr=0 lets every process map address 0");
        return;
    }
    let run = |preload: bool| {
        let mut c = Command::new("capsh");
        c.args([
            "--drop=cap_sys_rawio",
            "--",
            "-c",
            "echo hello; ls /usr/share/doc | wc -l",
        ]);
        if preload {
            c.env("LD_PRELOAD", shim_path())
                .env("FASTNET_HOOK", "always");
        }
        c.output().unwrap()
    };
    let (plain, hooked) = (run(false), run(true));
    assert_eq!(plain.stdout, hooked.stdout);
    assert_eq!(plain.status.code(), hooked.status.code());
    let err = String::from_utf8_lossy(&hooked.stderr);
    let lines: Vec<_> = err.lines().filter(|l| l.contains("fastnet")).collect();
    // One line per process that loaded the shim (sh, ls, wc), each naming the cause.
    assert!(!lines.is_empty(), "no explanation on stderr");
    for l in &lines {
        assert!(
            l.contains("hook inactive") && l.contains("mmap_min_addr"),
            "{l}"
        );
    }
}

/// A call through a NULL function pointer lands on the trampoline page at 0; the hook
/// must refuse it (SIGSEGV, as without the shim) rather than make a system call.
#[test]
fn c_null_function_pointer_still_crashes() {
    use std::os::unix::process::ExitStatusExt;
    let dir = TempDir::new("nullcall");
    let bin = compile_c("nullcall", "nullcall", dir.path(), &[]);
    let out = same_under_shim("nullcall", || Command::new(&bin));
    assert_eq!(out.stdout, b"calling NULL\n");
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV));
    let hooked = Command::new(&bin)
        .env("LD_PRELOAD", shim_path())
        .env("FASTNET_HOOK", "always")
        .output()
        .unwrap();
    assert_eq!(hooked.status.signal(), Some(libc::SIGSEGV));
}
