//! Code that appears after load (issue 22): `syscall` instructions a JIT writes into
//! memory that is already executable are caught by the Syscall User Dispatch backstop
//! at their first call and rewritten (`hook.late.sud`); code made executable with
//! mprotect is rewritten by the mapping path (`hook.late.mapped`). The app's own SIGSYS
//! handlers and seccomp filters keep working. Each test also runs with FASTNET_SUD=0 and
//! shows what is missed then, so it cannot pass without the backstop.

use fastnet_e2e::apps::{
    assert_xdp_attached, exit_counters, fastnet_cmd, kernel_connections, random_file, scratch,
    sha256_file, spawn, wait_listening,
};
use fastnet_e2e::shim::{compile_c, fastnet_bin, shim_path, TempDir};
use fastnet_e2e::{is_root, Side, Topology, TopologyOptions};
use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

fn get(c: &HashMap<String, u64>, k: &str) -> u64 {
    c.get(k).copied().unwrap_or(0)
}

/// tests/c/jit_syscall.c under `fastnet run --loopback process` (the stack carries the
/// program's connection to itself when its socket calls reach the shim); `place`: where
/// the calls run (`here`, a new `thread`, a `fork`ed child).
fn run_jit(
    bin: &std::path::Path,
    mode: &str,
    place: &str,
    sud: &str,
) -> (String, HashMap<String, u64>) {
    let out = Command::new(fastnet_bin())
        .args(["run", "--loopback", "process", "--"])
        .arg(bin)
        .args([mode, place])
        .env("FASTNET_STATS", "1")
        .env("FASTNET_SUD", sud)
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "jit_syscall {mode} {place} (FASTNET_SUD={sud}): {:?}\n{log}",
        out.status
    );
    assert!(log.contains(&format!("ok jit {mode}")), "{log}");
    let c = exit_counters(&log);
    (log, c)
}

/// A `syscall` JIT-ed into read-write-execute memory (no mapping call after the write):
/// its first call traps, the site is rewritten, and every socket call through it is
/// the shim's (the stack carried the connection), also when that first call happens in
/// a thread or a forked child (tasks the kernel starts without SUD). Without the
/// backstop the same program's calls all go to the kernel.
#[test]
fn jit_syscall_in_rwx_memory_is_caught_at_its_first_call() {
    let dir = TempDir::new("jit");
    let bin = compile_c("jit_syscall", "jit_syscall", dir.path(), &["-pthread"]);
    for place in ["here", "thread", "fork"] {
        let (log, c) = run_jit(&bin, "rwx", place, "1");
        assert!(log.contains("site ffd0"), "{place}: not rewritten:\n{log}");
        assert_eq!(get(&c, "hook.late.sud"), 1, "{place}:\n{log}");
        assert!(get(&c, "hook.sud.traps") >= 1, "{place}:\n{log}");
        assert_eq!(
            get(&c, "loopback.connections"),
            1,
            "{place}: the stack did not carry it:\n{log}"
        );
    }

    let (log, c) = run_jit(&bin, "rwx", "here", "0");
    assert!(log.contains("site 0f05"), "{log}");
    assert_eq!(get(&c, "hook.late.sud"), 0, "{log}");
    assert_eq!(
        get(&c, "loopback.connections"),
        0,
        "without the backstop the JIT-ed calls must have reached the kernel:\n{log}"
    );
}

/// A JIT-ed `syscall` the rewriter may not patch (the red zone is live after it): the
/// backstop serves every call of it in its SIGSYS handler, through the same dispatch,
/// so the socket calls are still the shim's; here, in a thread and in a child.
#[test]
fn unpatchable_jit_syscall_is_served_at_every_call() {
    let dir = TempDir::new("jit-redzone");
    let bin = compile_c("jit_syscall", "jit_syscall", dir.path(), &["-pthread"]);
    for place in ["here", "thread", "fork"] {
        let (log, c) = run_jit(&bin, "redzone", place, "1");
        assert!(
            log.contains("site 0f05"),
            "{place}: must stay unpatched:\n{log}"
        );
        assert_eq!(get(&c, "hook.late.sud"), 0, "{place}:\n{log}");
        // socket x2, bind, listen, getsockname, connect, accept4, write, read, close x3
        assert!(get(&c, "hook.sud.traps") >= 12, "{place}:\n{log}");
        assert_eq!(get(&c, "loopback.connections"), 1, "{place}:\n{log}");
    }
}

/// On a kernel without Syscall User Dispatch (simulated: a seccomp filter makes the
/// prctl fail with EINVAL, as kernels before 5.11 answer) the program runs as before,
/// hooked, the JIT-ed site unhooked; asked for with FASTNET_SUD=1, one line says why.
#[test]
fn without_sud_in_the_kernel_one_line_and_the_program_runs() {
    let dir = TempDir::new("no-sud");
    let bin = compile_c("jit_syscall", "jit_syscall", dir.path(), &["-pthread"]);
    let wrapper = compile_c("without_sud", "without_sud", dir.path(), &[]);
    for sud in ["1", ""] {
        let out = Command::new(fastnet_bin())
            .args(["run", "--loopback", "process", "--"])
            .arg(&wrapper)
            .arg(&bin)
            .arg("rwx")
            .env("FASTNET_SUD", sud)
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "FASTNET_SUD={sud}: {out:?}");
        assert!(
            stdout.contains("ok jit rwx") && stdout.contains("site 0f05"),
            "{stdout}"
        );
        let said = stderr
            .lines()
            .filter(|l| l.contains("no Syscall User Dispatch (needs Linux 5.11+"))
            .count();
        assert_eq!(said, usize::from(sud == "1"), "FASTNET_SUD={sud}: {stderr}");
    }
}

/// Code written read-write and then made executable with mprotect: the rewriter's
/// mapping path rewrites it before mprotect returns, with or without the backstop.
#[test]
fn jit_syscall_made_executable_by_mprotect_is_rewritten_by_the_mapping_path() {
    let dir = TempDir::new("jit-mprotect");
    let bin = compile_c("jit_syscall", "jit_syscall", dir.path(), &["-pthread"]);
    for sud in ["1", "0"] {
        let (log, c) = run_jit(&bin, "mprotect", "here", sud);
        assert!(log.contains("site ffd0"), "{log}");
        assert!(get(&c, "hook.late.mapped") >= 1, "{log}");
        assert_eq!(get(&c, "hook.late.sud"), 0, "{log}");
        assert_eq!(get(&c, "loopback.connections"), 1, "{log}");
    }
}

/// An app with its own SIGSYS handler and a seccomp filter (SECCOMP_RET_TRAP): the
/// same output plainly and under the shim with the backstop on (its handler gets its
/// siginfo and answers through the context; a `syscall` it JITs while SIGSYS is blocked
/// does not kill it; a red-zone site the rewriter left alone is served). Under the
/// shim both with the hook alone and with the socket layer on (which wraps handlers).
#[test]
fn app_sigsys_handlers_and_seccomp_traps_keep_working() {
    let dir = TempDir::new("app-sigsys");
    let bin = compile_c("app_sigsys", "app_sigsys", dir.path(), &[]);
    let plain = Command::new(&bin).output().unwrap();
    assert!(plain.status.success(), "{plain:?}");
    let plain_out = String::from_utf8_lossy(&plain.stdout).into_owned();
    assert!(
        plain_out
            .contains("getppid = 4242, handler calls 1, si_code 1, si_syscall 110, si_errno 77"),
        "{plain_out}"
    );
    let hooked = |sud: &str, socket_layer: bool| {
        let mut c = if socket_layer {
            let mut c = Command::new(fastnet_bin());
            c.args(["run", "--loopback", "process", "--"]).arg(&bin);
            c
        } else {
            let mut c = Command::new(&bin);
            c.env("LD_PRELOAD", shim_path())
                .env("FASTNET_HOOK", "always");
            c
        };
        c.env("FASTNET_SUD", sud).env("FASTNET_LOG", "1");
        c.output().unwrap()
    };
    for (sud, socket_layer) in [("1", false), ("1", true), ("0", false)] {
        let out = hooked(sud, socket_layer);
        let err = String::from_utf8_lossy(&out.stderr);
        let want = if sud == "1" {
            "syscall user dispatch on"
        } else {
            "syscall user dispatch off"
        };
        assert!(err.contains(want), "FASTNET_SUD={sud}: {err}");
        assert!(
            out.status.success(),
            "FASTNET_SUD={sud} socket layer {socket_layer}: {out:?}"
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            plain_out,
            "FASTNET_SUD={sud} socket layer {socket_layer}; stderr {err}"
        );
    }
}

/// Node serving HTTP on the fast path, with a native addon that JITs a fresh `syscall`
/// for every request (getsockname on the request's socket through it): ten stock curl
/// clients download 4 MB each byte for byte, every request's fresh site is caught
/// (`hook.late.sud` = requests), the answer came from the stack's socket, and the
/// fast path carried the traffic (XDP attached, the stack's counters, no kernel
/// connection on the port).
#[test]
fn node_http_on_the_fast_path_with_its_late_sites_caught() {
    assert!(is_root(), "end-to-end tests need root");
    let t = Topology::up(&TopologyOptions::for_tests()).expect("topology");
    let dir = scratch("node-late");
    let addon = compile_c("jit_addon", "jit_addon.node", &dir, &["-shared", "-fPIC"]);
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    random_file(&www.join("data.bin"), 4 << 20, 22);
    let sha = sha256_file(&www.join("data.bin"));
    const CLIENTS: usize = 10;
    const PORT: u16 = 8094;
    let script = format!(
        "const http=require('http'),fs=require('fs');\
         const addon=require('{addon}');let served=0;\
         const srv=http.createServer((q,r)=>{{\
           r.setHeader('x-local-port',String(addon.freshGetsockname(q.socket._handle.fd)));\
           fs.createReadStream('{www}'+q.url).on('error',()=>{{r.statusCode=404;r.end();}}).pipe(r);\
           r.on('finish',()=>{{if(++served==={CLIENTS})srv.close(()=>process.exit(0));}});\
         }}).listen({PORT},'0.0.0.0');",
        addon = addon.display(),
        www = www.display()
    );
    let mut c = fastnet_cmd(&t, Side::Server, "node");
    c.args(["-e", &script]);
    let mut srv = spawn(c, &dir.join("node.log"));
    wait_listening(&t, Side::Server, PORT, &mut srv);
    assert_xdp_attached(&t, Side::Server);

    let url = format!("http://{}:{PORT}/data.bin", t.server_ip);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let body = dir.join(format!("body{i}"));
            let headers = dir.join(format!("headers{i}"));
            let child = t
                .command(Side::Client, "curl")
                .args(["-sS", "--max-time", "60", "-o"])
                .arg(&body)
                .arg("-D")
                .arg(&headers)
                .arg(&url)
                .spawn()
                .unwrap();
            (child, body, headers)
        })
        .collect();
    let mut most_kernel_conns = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut done = Vec::new();
    for (mut child, body, headers) in clients {
        loop {
            most_kernel_conns = most_kernel_conns.max(kernel_connections(&t, Side::Server, PORT));
            if let Some(st) = child.try_wait().unwrap() {
                assert!(st.success(), "curl failed:\n{}", srv.output());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "downloads stuck:\n{}",
                srv.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        done.push((body, headers));
    }
    for (body, headers) in &done {
        assert_eq!(sha256_file(body), sha, "a download differs");
        let h = std::fs::read_to_string(headers)
            .unwrap()
            .to_ascii_lowercase();
        assert!(
            h.contains(&format!("x-local-port: {PORT}")),
            "the JIT-ed getsockname did not answer the port: {h}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while srv.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "node did not exit:\n{}",
            srv.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = srv.output();
    let c = exit_counters(&log);
    assert_eq!(
        most_kernel_conns, 0,
        "the kernel held connections on {PORT}:\n{log}"
    );
    assert!(
        get(&c, "tx.bytes") >= (CLIENTS as u64) * (4 << 20) && get(&c, "rx.bytes") > 0,
        "the stack did not carry the downloads:\n{log}"
    );
    assert!(!log.contains("kernel: "), "fell back to the kernel:\n{log}");
    assert_eq!(
        get(&c, "hook.late.sud"),
        CLIENTS as u64,
        "one fresh site per request, each caught at its first call:\n{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
