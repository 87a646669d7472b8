//! HAProxy in HTTP mode (no splicing) under fastnet in front of a kernel nginx in the
//! other namespace (issue 25): its watchdog aborted it under parallel downloads when a
//! deferred signal came back as SI_TKILL. 50 parallel 20 MB downloads, byte-exact,
//! five runs in a row on one HAProxy.

use fastnet_e2e::apps::{
    fastnet_cmd, kernel_connections, random_file, scratch, sha256_file, spawn, wait_listening,
};
use fastnet_e2e::{is_root, Side, Topology, TopologyOptions};
use std::process::Stdio;

#[test]
fn haproxy_http_mode_serves_fifty_parallel_20mb_downloads_five_times() {
    assert!(is_root(), "end-to-end tests need root");
    let t = Topology::up(&TopologyOptions::default()).expect("topology");
    let dir = scratch("haproxy");
    let d = dir.display();
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let file = dir.join("www/data.bin");
    random_file(&file, 20 << 20, 17);
    let _ = std::process::Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&dir)
        .status();
    let want = sha256_file(&file);
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "user nobody nogroup;\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log;\nevents {{ worker_connections 1024; }}\n\
             http {{ access_log off; sendfile on; client_body_temp_path {d}/tmp;\n\
             proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp;\n\
             scgi_temp_path {d}/tmp; server {{ listen 8085; root {d}/www; }} }}\n"
        ),
    )
    .unwrap();
    let mut c = t.command(Side::Client, "nginx");
    c.args(["-c", dir.join("nginx.conf").to_str().unwrap()]);
    let mut backend = spawn(c, &dir.join("nginx.log"));
    wait_listening(&t, Side::Client, 8085, &mut backend);
    std::fs::write(
        dir.join("haproxy.cfg"),
        format!(
            "global\n  nbthread 1\ndefaults\n  mode http\n  timeout connect 5s\n\
             timeout client 60s\n  timeout server 60s\nfrontend f\n  bind 0.0.0.0:8086\n\
             default_backend b\nbackend b\n  server s1 {}:8085\n",
            t.client_ip
        ),
    )
    .unwrap();
    let mut c = fastnet_cmd(&t, Side::Server, "haproxy");
    c.args(["-db", "-f", dir.join("haproxy.cfg").to_str().unwrap()]);
    let mut srv = spawn(c, &dir.join("haproxy.log"));
    wait_listening(&t, Side::Server, 8086, &mut srv);
    let url = format!("http://{}:8086/data.bin", t.server_ip);
    for run in 0..5 {
        let kids: Vec<_> = (0..50)
            .map(|i| {
                t.command(Side::Client, "curl")
                    .args(["-sS", "--fail", "-m", "300", "-o"])
                    .arg(dir.join(format!("got{i}")))
                    .arg(&url)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        // Sampled while the downloads run (1 GB takes seconds here): the proxy's client
        // side is the fast path's.
        std::thread::sleep(std::time::Duration::from_secs(1));
        assert_eq!(kernel_connections(&t, Side::Server, 8086), 0, "run {run}");
        for (i, k) in kids.into_iter().enumerate() {
            let out = k.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "run {run}, download {i}: {} {}\nhaproxy: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                srv.output()
            );
            assert_eq!(
                sha256_file(&dir.join(format!("got{i}"))),
                want,
                "run {run}, download {i}"
            );
        }
        assert!(
            srv.child.try_wait().unwrap().is_none(),
            "haproxy exited in run {run}: {}",
            srv.output()
        );
    }
    let log = srv.output();
    assert!(!log.contains("about to kill"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
