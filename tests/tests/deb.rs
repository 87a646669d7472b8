//! The Debian package (issue 24): `make deb` builds it, `dpkg -i` installs it, the
//! installed /usr/bin/fastnet runs redis-server on the fast path with no path in the
//! environment, `man fastnet-run` and the bash completion work, and `dpkg --purge`
//! leaves nothing behind.

use fastnet_e2e::apps::{exit_counters, scratch, spawn, wait_listening};
use fastnet_e2e::{is_root, run_ok, Side, Topology, TopologyOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

/// dpkg runs under the same lock as scripts/install-deps.sh, so a `make test` next
/// door does not fight over the package database.
fn dpkg(args: &[&str]) -> std::process::Output {
    Command::new("flock")
        .args(["/tmp/fastnet-apt.lock", "dpkg"])
        .args(args)
        .output()
        .expect("run dpkg")
}

/// Held for the whole test: the package is one per machine, so two `make test` runs
/// at once take turns installing it instead of finding each other's copy.
fn machine_lock() -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/fastnet-deb-test.lock")
        .expect("lock file");
    use std::os::fd::AsRawFd;
    // SAFETY: flock(2) on an fd we hold open; released when the file is dropped.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(r, 0, "flock: {}", std::io::Error::last_os_error());
    f
}

fn installed() -> bool {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "fastnet"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("installed")
}

/// Purges the package when the test ends, passed or not.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if installed() {
            let _ = dpkg(&["--purge", "fastnet"]);
        }
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn newest_deb(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .max_by_key(|p| p.metadata().unwrap().modified().unwrap())
        .expect("a .deb")
}

#[test]
fn deb_installs_runs_redis_on_the_fast_path_and_purges_clean() {
    assert!(is_root(), "installing a package needs root");
    let _turn = machine_lock();
    assert!(
        !installed(),
        "a fastnet package is already installed here: this test will not replace it"
    );
    let ws = workspace();
    run_ok(Command::new("make").arg("deb").current_dir(&ws));
    let deb = newest_deb(&ws.join("target/debian"));
    let _guard = Installed;
    let out = dpkg(&["-i", deb.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "dpkg -i: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed =
        String::from_utf8(run_ok(Command::new("dpkg").args(["-L", "fastnet"])).stdout).unwrap();
    let files: Vec<&str> = listed.lines().filter(|l| Path::new(l).is_file()).collect();
    for want in [
        "/usr/bin/fastnet",
        "/usr/lib/fastnet/libfastnet.so",
        "/usr/share/man/man1/fastnet.1.gz",
        "/usr/share/man/man1/fastnet-run.1.gz",
        "/usr/share/bash-completion/completions/fastnet",
        "/usr/share/zsh/vendor-completions/_fastnet",
        "/usr/share/fish/vendor_completions.d/fastnet.fish",
        "/usr/share/doc/fastnet/README.md",
        "/usr/share/doc/fastnet/copyright",
        "/usr/share/doc/fastnet/LICENSE-MIT",
        "/usr/share/doc/fastnet/LICENSE-APACHE",
    ] {
        assert!(
            files.contains(&want),
            "{want} not in the package:\n{listed}"
        );
    }

    // redis-server under the installed fastnet, which finds its shim by itself.
    let t = Topology::up(&TopologyOptions::default()).expect("topology");
    let dir = scratch("deb");
    let mut c = Command::new("ip");
    c.args([
        "netns",
        "exec",
        t.ns(Side::Server),
        "/usr/bin/fastnet",
        "run",
    ])
    .args(["--iface", t.iface(Side::Server), "--"])
    .args([
        "redis-server",
        "--port",
        "6397",
        "--save",
        "",
        "--appendonly",
        "no",
    ])
    .args(["--protected-mode", "no"])
    .env_remove("LD_PRELOAD")
    .env_remove("LD_LIBRARY_PATH")
    .env("FASTNET_STATS", "1")
    .env("FASTNET_LOG", "debug");
    let mut srv = spawn(c, &dir.join("redis.log"));
    wait_listening(&t, Side::Server, 6397, &mut srv);
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", srv.pid())).unwrap();
    assert!(
        maps.contains("/usr/lib/fastnet/libfastnet.so"),
        "the installed shim is not loaded"
    );
    let ip = t.server_ip.to_string();
    let got = run_ok(
        t.command(Side::Client, "redis-cli")
            .args(["-h", &ip, "-p", "6397", "SET", "pkg", "deb"]),
    );
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "OK");
    run_ok(t.command(Side::Client, "redis-benchmark").args([
        "-h", &ip, "-p", "6397", "-n", "2000", "-c", "4", "-q", "-t", "get",
    ]));
    let log = srv.stop();
    assert!(
        log.contains(":6397 (fast path)"),
        "the listener was not on the fast path:\n{log}"
    );
    let counters = exit_counters(&log);
    assert!(
        counters.get("tcp.segments_in").copied().unwrap_or(0) > 2000,
        "the stack did not carry the traffic: {counters:?}"
    );
    drop(t);

    // man fastnet-run, rendered as text.
    let man = run_ok(
        Command::new("man")
            .arg("fastnet-run")
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100"),
    );
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(
        page.contains("fastnet-run") && page.contains("--iface"),
        "{page}"
    );

    // The bash completion completes subcommands and options.
    let complete = |words: &str| {
        let script = format!(
            "source /usr/share/bash-completion/completions/fastnet; COMP_WORDS=({words}); \
             COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMP_LINE=\"{words}\"; COMP_POINT=${{#COMP_LINE}}; \
             _fastnet fastnet \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        String::from_utf8(run_ok(Command::new("bash").args(["-c", &script])).stdout).unwrap()
    };
    let subs = complete("fastnet st");
    assert!(subs.lines().any(|l| l == "stat"), "{subs}");
    let opts = complete("fastnet run --if");
    assert!(opts.lines().any(|l| l == "--iface"), "{opts}");

    // Remove, then purge: nothing of the package is left.
    let out = dpkg(&["-r", "fastnet"]);
    assert!(
        out.status.success(),
        "dpkg -r: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = dpkg(&["--purge", "fastnet"]);
    assert!(
        out.status.success(),
        "dpkg --purge: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!installed());
    let left: Vec<&&str> = files.iter().filter(|f| Path::new(f).exists()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(
        !Path::new("/usr/lib/fastnet").exists() && !Path::new("/usr/share/doc/fastnet").exists()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
