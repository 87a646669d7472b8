//! `fastnet handoff`: asks a running fastnet process, through its control socket (an
//! abstract Unix socket in its network namespace, see the shim's `control`), to move
//! its connections, and prints the answer.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// How long the process may take to answer (its driver reads requests every ~0.1 s).
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Sends the request; returns the exit status (0: the process answered ok).
pub fn main(pid: u32, port: Option<u16>, to: &str) -> io::Result<i32> {
    let mut request = format!("handoff to={to}");
    if let Some(p) = port {
        request += &format!(" port={p}");
    }
    let answer = crate::sys::in_netns_of(pid, move || ask(pid, &request))
        .map_err(|e| io::Error::new(e.kind(), format!("process {pid}: {e}")))??;
    println!("{answer}");
    Ok(if answer.starts_with("ok") { 0 } else { 1 })
}

fn ask(pid: u32, request: &str) -> io::Result<String> {
    let addr = fastnet_stats::control_address(pid);
    // sockaddr_un: the family (2 bytes), then the abstract name after its NUL.
    let name = &addr[3..];
    let sock = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(
        format!("fastnet-cli-{}", std::process::id()).as_bytes(),
    )?)?;
    sock.set_read_timeout(Some(ANSWER_WITHIN))?;
    sock.send_to_addr(request.as_bytes(), &SocketAddr::from_abstract_name(name)?)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("no fastnet control socket ({e}): is it a fastnet process with the fast path on?"),
            )
        })?;
    let mut buf = vec![0u8; 64 << 10];
    let n = sock.recv(&mut buf).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("no answer within {ANSWER_WITHIN:?} ({e})"),
        )
    })?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}
