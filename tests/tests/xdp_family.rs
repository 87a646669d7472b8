//! A family of processes on one interface (issue 17's foundation): slots in the XDP
//! program, the flow map, listener groups, and forked children binding AF_XDP sockets
//! that share the UMEM (and the one fill and completion ring) of the parent's on the
//! same queue. Frames of a flow reach the process it is steered to, byte-exact; a
//! child killed with -9 costs no frame; a lock left held by a dead process is taken
//! over; a child's sockets keep working after the parent closed its own.

use fastnet_e2e::{is_root, QueueLayout, Topology, TopologyOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};
use xdp_backend::program::{XDP_DROP, XDP_PASS, XDP_REDIRECT};
use xdp_backend::{netlink, AttachedIface, FlowKey, Transport, XdpProgram, XskConfig, XskSocket};

const ECHO_PORT: u16 = 7200;
const GROUP_PORT: u16 = 7300;

/// Runs `f` on a thread that has entered network namespace `ns`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        enter_netns(&path);
        f()
    })
    .join()
    .unwrap()
}

fn enter_netns(path: &str) {
    let file = std::fs::File::open(path).expect("netns file");
    // SAFETY: setns on a namespace fd; it changes only this thread's namespace.
    let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
}

// ---------------------------------------------------------------------------------
// Frames

/// Ethernet + IPv4 + UDP/TCP from `src` to `dst` (checksums are not the program's
/// business).
fn frame(proto: Transport, src: SocketAddrV4, dst: SocketAddrV4) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    let l4 = if proto == Transport::Tcp { 20 } else { 8 };
    let total = 20 + l4 + 4;
    let p = proto.ip_proto();
    f.extend_from_slice(&[0x45, 0, 0, total as u8, 0, 1, 0x40, 0, 64, p, 0, 0]);
    f.extend_from_slice(&src.ip().octets());
    f.extend_from_slice(&dst.ip().octets());
    f.extend_from_slice(&src.port().to_be_bytes());
    f.extend_from_slice(&dst.port().to_be_bytes());
    if proto == Transport::Tcp {
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        f.extend_from_slice(&((l4 + 4) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
    }
    f.extend_from_slice(b"data");
    f
}

/// (IP header offset, IP header length, protocol) of an untagged IPv4 frame.
fn ipv4(f: &[u8]) -> Option<(usize, usize, u8)> {
    if f.len() < 34 || f[12..14] != [0x08, 0x00] {
        return None;
    }
    let ihl = (f[14] & 0x0f) as usize * 4;
    (f.len() >= 14 + ihl + 8).then_some((14, ihl, f[23]))
}

/// The reply to a UDP datagram to ECHO_PORT: addresses and ports swapped, the UDP
/// checksum off, the payload's first two bytes replaced by `tag` (the same length:
/// the IP checksum stays valid, its sum does not depend on the order of addresses).
fn udp_echo(f: &[u8], tag: [u8; 2]) -> Option<Vec<u8>> {
    let (ip, ihl, proto) = ipv4(f)?;
    let udp = ip + ihl;
    if proto != 17 || f[udp + 2..udp + 4] != ECHO_PORT.to_be_bytes() || f.len() < udp + 10 {
        return None;
    }
    let mut r = f.to_vec();
    r[0..6].copy_from_slice(&f[6..12]);
    r[6..12].copy_from_slice(&f[0..6]);
    r[ip + 12..ip + 16].copy_from_slice(&f[ip + 16..ip + 20]);
    r[ip + 16..ip + 20].copy_from_slice(&f[ip + 12..ip + 16]);
    r[udp..udp + 2].copy_from_slice(&f[udp + 2..udp + 4]);
    r[udp + 2..udp + 4].copy_from_slice(&f[udp..udp + 2]);
    r[udp + 6..udp + 8].copy_from_slice(&[0, 0]);
    r[udp + 8..udp + 10].copy_from_slice(&tag);
    Some(r)
}

/// The source port of a TCP SYN to GROUP_PORT.
fn syn_source_port(f: &[u8]) -> Option<u16> {
    let (ip, ihl, proto) = ipv4(f)?;
    let tcp = ip + ihl;
    if proto != 6 || f.len() < tcp + 20 || f[tcp + 2..tcp + 4] != GROUP_PORT.to_be_bytes() {
        return None;
    }
    (f[tcp + 13] & 0x02 != 0).then(|| u16::from_be_bytes([f[tcp], f[tcp + 1]]))
}

/// Receives on every socket once: echoes UDP, reports SYNs (source port, RX queue).
/// Returns frames handled.
fn serve(xsks: &mut [XskSocket], tag: [u8; 2], on_syn: &mut dyn FnMut(u16, u32)) -> usize {
    let mut n = 0;
    for x in xsks.iter_mut() {
        let mut replies = Vec::new();
        let queue = x.queue();
        n += x.receive(64, |f| {
            if let Some(r) = udp_echo(f, tag) {
                replies.push(r);
            } else if let Some(p) = syn_source_port(f) {
                on_syn(p, queue);
            }
        });
        for r in &replies {
            assert!(x.send(r), "no TX frame for a reply");
        }
        x.flush();
    }
    n
}

fn wait_any(xsks: &mut [XskSocket]) {
    if let Some(x) = xsks.first_mut() {
        let _ = x.wait(Some(Duration::from_millis(1)));
    }
}

// ---------------------------------------------------------------------------------
// The forked child: joins as a slot, serves, reports over a pipe.

/// Reports from a child: `R` ready (port 0), `S` a SYN with its source port and the
/// RX queue it came on.
fn report(fd: RawFd, kind: u8, port: u16, queue: u32) {
    let msg = [kind, queue as u8, (port >> 8) as u8, port as u8];
    // SAFETY: writing 4 bytes from our stack to a pipe (atomic below PIPE_BUF).
    unsafe { libc::write(fd, msg.as_ptr().cast(), 4) };
}

/// The body of a forked child: joins the family of `inherited` as `slot` (dropping
/// the inherited value first when `drop_inherited`), reports ready, serves forever.
fn child_main(
    inherited: AttachedIface,
    slot: u32,
    tag: [u8; 2],
    fd: RawFd,
    drop_inherited: bool,
) -> ! {
    let mut me = match AttachedIface::join(&inherited, slot) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("child: join: {e}");
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(2) }
        }
    };
    if drop_inherited {
        // As a child that drops its parent's stack: closes its copies of the fds only.
        drop(inherited);
    } else {
        std::mem::forget(inherited);
    }
    report(fd, b'R', 0, 0);
    loop {
        if serve(me.xsks_mut(), tag, &mut |p, q| report(fd, b'S', p, q)) == 0 {
            wait_any(me.xsks_mut());
        }
    }
}

fn read_reports(fd: RawFd, quiet: Duration) -> Vec<(u8, u16, u32)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4];
    loop {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd on our stack.
        if unsafe { libc::poll(&mut p, 1, quiet.as_millis() as i32) } <= 0 {
            return out;
        }
        // SAFETY: reading 4 bytes into our buffer from the pipe we created.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), 4) };
        assert_eq!(n, 4, "short report");
        out.push((buf[0], u16::from_be_bytes([buf[2], buf[3]]), buf[1] as u32));
    }
}

/// Waits for a report of `kind` from a child.
fn wait_report(fd: RawFd, kind: u8) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let mut buf = [0u8; 4];
        // SAFETY: one pollfd on our stack; reading 4 bytes into our buffer.
        if unsafe { libc::poll(&mut p, 1, 100) } > 0
            && unsafe { libc::read(fd, buf.as_mut_ptr().cast(), 4) } == 4
            && buf[0] == kind
        {
            return;
        }
    }
    panic!("no report {:?} from the child", kind as char);
}

fn kill9(pid: libc::pid_t) {
    // SAFETY: signalling a child we forked.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
}

fn reap(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: waiting for a child we forked.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

// ---------------------------------------------------------------------------------
// The server thread: serves slot 0 and runs jobs between batches.

struct Server {
    iface: Option<AttachedIface>,
    /// A handle on the program that outlives `iface` (the parent closes its sockets).
    program: XdpProgram,
    /// SYNs slot 0 received: (source port, RX queue).
    syn_ports: Vec<(u16, u32)>,
    children: Vec<libc::pid_t>,
    pipe: (RawFd, RawFd),
}

type Job = Box<dyn FnOnce(&mut Server) + Send>;

impl Drop for Server {
    /// Whatever happened (a failed assertion too): no child outlives the test. Runs
    /// only in the test process (children leave with _exit).
    fn drop(&mut self) {
        for &pid in &self.children {
            // SAFETY: signalling and reaping children we forked.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

impl Server {
    /// Forks a child that joins as `slot` and waits for it to be ready.
    fn fork_member(&mut self, slot: u32, tag: [u8; 2], drop_inherited: bool) -> libc::pid_t {
        // SAFETY: the child only uses memory it inherited and exits with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let inherited = self.iface.take().expect("iface");
            let fd = self.pipe.1;
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                child_main(inherited, slot, tag, fd, drop_inherited)
            }));
            // SAFETY: a panicking child leaves without unwinding into the test.
            unsafe { libc::_exit(3) };
        }
        self.children.push(pid);
        wait_report(self.pipe.0, b'R');
        pid
    }

    fn iface(&mut self) -> &mut AttachedIface {
        self.iface.as_mut().expect("iface open")
    }
}

/// Starts the server thread in `ns`: opens `iface` (slot 0), then serves it and runs
/// the jobs it is sent until the channel closes. Returns the job sender.
fn start_server(ns: &str, iface: &str) -> (Sender<Job>, std::thread::JoinHandle<()>) {
    let (tx, rx): (Sender<Job>, Receiver<Job>) = channel();
    let path = format!("/var/run/netns/{ns}");
    let iface = iface.to_string();
    let handle = std::thread::spawn(move || {
        enter_netns(&path);
        let attached = AttachedIface::open(&iface, &XskConfig::default()).expect("open");
        let program = attached.program().try_clone().unwrap();
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two fds into our array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let mut st = Server {
            iface: Some(attached),
            program,
            syn_ports: Vec::new(),
            children: Vec::new(),
            pipe: (fds[0], fds[1]),
        };
        loop {
            match rx.try_recv() {
                Ok(job) => job(&mut st),
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
                Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
            }
            if let Some(i) = st.iface.as_mut() {
                let mut syns = Vec::new();
                if serve(i.xsks_mut(), *b"P0", &mut |p, q| syns.push((p, q))) == 0 {
                    wait_any(i.xsks_mut());
                }
                st.syn_ports.extend(syns);
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    (tx, handle)
}

fn on_server<T: Send + 'static>(
    tx: &Sender<Job>,
    f: impl FnOnce(&mut Server) -> T + Send + 'static,
) -> T {
    let (rtx, rrx) = channel();
    tx.send(Box::new(move |st: &mut Server| {
        let _ = rtx.send(f(st));
    }))
    .expect("server thread alive");
    rrx.recv().expect("server job panicked")
}

// ---------------------------------------------------------------------------------
// The client side (kernel sockets in the client namespace).

/// Sends `count` datagrams from `src_port` to the echo port, `window` at a time, and
/// checks every reply byte by byte: the payload back with its first two bytes `tag`.
fn udp_exchange(server: Ipv4Addr, client: Ipv4Addr, src_port: u16, count: usize, tag: [u8; 2]) {
    let s = UdpSocket::bind((client, src_port)).unwrap();
    s.connect((server, ECHO_PORT)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let window = 32;
    let mut buf = [0u8; 2048];
    let mut seq = 0;
    while seq < count {
        let n = window.min(count - seq);
        let mut want = BTreeSet::new();
        for i in 0..n {
            let payload = format!(
                "xx-{src_port}-{:06}-{}",
                seq + i,
                "z".repeat((seq + i) % 300)
            );
            s.send(payload.as_bytes()).unwrap();
            let mut reply = payload.into_bytes();
            reply[0..2].copy_from_slice(&tag);
            want.insert(reply);
        }
        for _ in 0..n {
            let got = s
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("flow {src_port}: reply {seq}+ missing: {e}"));
            let got = buf[..got].to_vec();
            assert!(
                want.remove(&got),
                "flow {src_port}: unexpected reply {:?}",
                String::from_utf8_lossy(&got)
            );
        }
        seq += n;
    }
}

/// Starts `n` TCP connections to the group port (SYNs only: nobody answers them) and
/// returns their source ports; the sockets close after `hold`.
fn syn_burst(server: Ipv4Addr, n: usize, hold: Duration) -> Vec<u16> {
    let mut fds = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..n {
        // SAFETY: plain socket calls on fds we own; the sockaddrs live on our stack.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
            assert!(fd >= 0);
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            sa.sin_family = libc::AF_INET as u16;
            sa.sin_port = GROUP_PORT.to_be();
            sa.sin_addr.s_addr = u32::from_ne_bytes(server.octets());
            libc::connect(fd, (&sa as *const libc::sockaddr_in).cast(), 16);
            let mut local: libc::sockaddr_in = std::mem::zeroed();
            let mut len = 16;
            libc::getsockname(fd, (&mut local as *mut libc::sockaddr_in).cast(), &mut len);
            ports.push(u16::from_be(local.sin_port));
            fds.push(fd);
        }
    }
    std::thread::sleep(hold);
    for fd in fds {
        // SAFETY: closing the sockets we opened.
        unsafe { libc::close(fd) };
    }
    ports
}

// ---------------------------------------------------------------------------------

fn family_end_to_end(queues: QueueLayout) {
    assert!(is_root(), "end-to-end tests need root");
    let topo = Topology::up(&TopologyOptions {
        queues,
        ..Default::default()
    })
    .unwrap();
    let (server, client) = (topo.server_ip, topo.client_ip);
    let (jobs, server_thread) = start_server(&topo.server_ns, &topo.server_if);
    let nqueues = on_server(&jobs, |st| st.iface().xsks().len());
    assert_eq!(nqueues as u32, queues.in_use());

    // A child joins as slot 1 on every queue; one UDP flow is steered to it.
    let child = on_server(&jobs, move |st| {
        st.iface().claim_port(Transport::Udp, ECHO_PORT).unwrap();
        let pid = st.fork_member(1, *b"C1", false);
        let flow = FlowKey::new(
            Transport::Udp,
            SocketAddrV4::new(server, ECHO_PORT),
            SocketAddrV4::new(client, 30001),
        );
        st.iface().steer_flow(&flow, 1).unwrap();
        for x in st.iface().xsks_mut() {
            assert_eq!(x.census().members, 2, "parent's and child's sockets");
        }
        pid
    });
    let cns = topo.client_ns.clone();
    in_netns(&cns, move || {
        udp_exchange(server, client, 30001, 300, *b"C1");
        udp_exchange(server, client, 30002, 300, *b"P0");
        udp_exchange(server, client, 30001, 10, *b"C1");
    });

    // A listener group of slots 0 and 1 spreads connections' SYNs: by the group hash
    // on one queue; on two, by the queue they arrive on (each member its own).
    let queues_in_use = on_server(&jobs, |st| st.iface().program().queues_in_use().unwrap());
    assert_eq!(queues_in_use, queues.in_use());
    on_server(&jobs, |st| {
        let ports = st.iface().program().port_map();
        ports.claim(Transport::Tcp, GROUP_PORT).unwrap();
        ports.join_group(Transport::Tcp, GROUP_PORT, 0).unwrap();
        ports.join_group(Transport::Tcp, GROUP_PORT, 1).unwrap();
        st.syn_ports.clear();
    });
    let client_ports = in_netns(&cns, move || {
        syn_burst(server, 64, Duration::from_millis(500))
    });
    let (parent_syns, child_syns, entry) = on_server(&jobs, |st| {
        let child: BTreeMap<u16, u32> = read_reports(st.pipe.0, Duration::from_millis(300))
            .into_iter()
            .filter(|r| r.0 == b'S')
            .map(|r| (r.1, r.2))
            .collect();
        let parent: BTreeMap<u16, u32> = st.syn_ports.iter().copied().collect();
        let entry = st
            .iface()
            .program()
            .port_map()
            .entry(Transport::Tcp, GROUP_PORT)
            .unwrap()
            .unwrap();
        (parent, child, entry)
    });
    assert_eq!(entry.members, vec![0, 1]);
    let mut queues_seen = BTreeSet::new();
    for &p in &client_ports {
        let (slot, queue) = match (parent_syns.get(&p), child_syns.get(&p)) {
            (Some(&q), None) => (0, q),
            (None, Some(&q)) => (1, q),
            seen => panic!("SYN from port {p} seen by (parent, child) {seen:?}"),
        };
        queues_seen.insert(queue);
        let remote = SocketAddrV4::new(client, p);
        assert_eq!(
            entry.slot_for(remote, queue, queues_in_use),
            slot,
            "SYN from port {p} on queue {queue} reached the wrong slot"
        );
        if queues_in_use == 1 {
            assert_eq!(entry.slot_by_hash(remote), slot);
        }
    }
    // 64 connections' SYNs leave the client on its queues by their own hash.
    assert_eq!(queues_seen.len() as u32, queues_in_use, "{queues_seen:?}");
    assert!(
        !parent_syns.is_empty() && !child_syns.is_empty(),
        "{parent_syns:?} {child_syns:?}"
    );

    // Kill -9 the child (left a zombie at first: its entries are still reaped), clean
    // its slot up as the shim would, and the parent goes on for thousands of frames.
    on_server(&jobs, move |st| {
        let flow = FlowKey::new(
            Transport::Udp,
            SocketAddrV4::new(server, ECHO_PORT),
            SocketAddrV4::new(client, 30001),
        );
        kill9(child);
        // Wait until it is a zombie (gone, not reaped).
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(format!("/proc/{child}/stat"))
            .map(|s| !s.contains(") Z"))
            .unwrap_or(false)
        {
            assert!(Instant::now() < deadline, "child not dead");
            std::thread::sleep(Duration::from_millis(5));
        }
        let i = st.iface();
        i.unsteer_flow(&flow).unwrap();
        i.unregister_slot(1).unwrap();
        assert!(i.program().port_map().remove_slot(1).unwrap().is_empty());
        for x in i.xsks_mut() {
            let c = x.census();
            assert_eq!(c.members, 1, "the dead child's sockets reaped");
            assert_eq!(c.tx_pool + c.tx_cached, 2048, "TX frames all back: {c:?}");
        }
        reap(child);
        st.children.retain(|&p| p != child);
    });
    in_netns(&cns, move || {
        udp_exchange(server, client, 30001, 5000, *b"P0");
        udp_exchange(server, client, 30002, 100, *b"P0");
    });
    let before_lock = on_server(&jobs, |st| {
        let mut out = Vec::new();
        for x in st.iface().xsks_mut() {
            let c = x.census();
            assert_eq!(
                c.fill_ring + x.rx_available(),
                2048,
                "RX frames all back: {c:?}"
            );
            assert_eq!(c.tx_pool + c.tx_cached, 2048, "{c:?}");
            assert_eq!(x.stats().kernel_fill_ring_empty, 0);
            out.push(c.lock_takeovers);
        }
        out
    });
    assert!(before_lock.iter().all(|&t| t == 0));

    // A process killed while holding the family lock: the next one takes it over.
    on_server(&jobs, |st| {
        // SAFETY: the child takes the lock through its inherited copy, reports, and
        // waits to be killed.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            st.iface().xsks()[0].leak_family_lock();
            report(st.pipe.1, b'L', 0, 0);
            loop {
                // SAFETY: sleeping until killed.
                unsafe { libc::pause() };
            }
        }
        st.children.push(pid);
        wait_report(st.pipe.0, b'L');
        kill9(pid);
        let c = st.iface().xsks_mut()[0].census(); // would hang without the takeover
        assert_eq!(c.lock_takeovers, 1);
        reap(pid);
        st.children.retain(|&p| p != pid);
    });
    in_netns(&cns, move || {
        udp_exchange(server, client, 30002, 200, *b"P0")
    });

    // A member's sockets keep working after the parent closed its own: a child joins
    // as slot 2 and drops what it inherited, a flow is steered to it, the parent
    // closes its sockets.
    on_server(&jobs, move |st| {
        st.fork_member(2, *b"B2", true);
        let flow = FlowKey::new(
            Transport::Udp,
            SocketAddrV4::new(server, ECHO_PORT),
            SocketAddrV4::new(client, 30003),
        );
        st.program.steer_flow(&flow, 2).unwrap();
        drop(st.iface.take());
    });
    in_netns(&cns, move || {
        udp_exchange(server, client, 30003, 2000, *b"B2")
    });
    let counters = on_server(&jobs, |st| st.program.counters().unwrap());
    // Every request and SYN went through the program to an XSK (replies leave by TX).
    assert!(counters.redirected >= 300 + 300 + 10 + 64 + 5000 + 100 + 200 + 2000);
    assert_eq!(counters.malformed, 0);
    drop(jobs);
    server_thread.join().unwrap();
}

#[test]
fn family_on_one_queue_flows_groups_kill9_and_parent_gone() {
    family_end_to_end(QueueLayout::KernelDefault);
}

#[test]
fn family_on_two_of_four_queues() {
    family_end_to_end(QueueLayout::Partial {
        allocated: 4,
        in_use: 2,
    });
}

/// Runs `f` in the server namespace of a new topology with a loaded (not attached)
/// program whose slot 1 has a real XSK on queue 0 (test runs use RX queue 0), so
/// REDIRECT tells a frame went to slot 1 and DROP that it went to a slot without one.
fn with_test_program(f: impl FnOnce(&XdpProgram) + Send + 'static) {
    assert!(is_root(), "end-to-end tests need root");
    let topo = Topology::up(&TopologyOptions::default()).unwrap();
    let iface = topo.server_if.clone();
    in_netns(&topo.server_ns, move || {
        let link = netlink::link_by_name(&iface).unwrap();
        let prog = XdpProgram::load().expect("load (verifier)");
        let xsk = XskSocket::bind(link.index, 0, &XskConfig::default()).unwrap();
        prog.register_slot_xsk(1, 0, xsk.fd()).unwrap();
        f(&prog);
        drop(xsk);
    });
}

/// Verdicts in BPF_PROG_TEST_RUN with a real XSK registered for slot 1 on queue 0
/// (test runs use RX queue 0): REDIRECT tells the frame went to slot 1.
#[test]
fn flow_map_and_group_verdicts_in_kernel_test_run() {
    with_test_program(|prog| {
        let local = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 80);
        let remote = |port| SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), port);
        let tcp = |port| frame(Transport::Tcp, remote(port), local);
        let flow = |port| FlowKey::new(Transport::Tcp, local, remote(port));
        let run = |f: &[u8]| prog.test_run(f).unwrap() as i32;

        // Unclaimed port: the kernel's, flow entry or not.
        prog.steer_flow(&flow(40000), 1).unwrap();
        assert_eq!(run(&tcp(40000)), XDP_PASS);
        let ports = prog.port_map();
        ports.claim(Transport::Tcp, 80).unwrap();
        // Claimed, owner slot 0 has no XSK: dropped, counted; the steered flow goes
        // to slot 1's XSK.
        assert_eq!(run(&tcp(40001)), XDP_DROP);
        assert_eq!(run(&tcp(40000)), XDP_REDIRECT);
        // A flow steered to a slot with no XSK: dropped, counted.
        prog.steer_flow(&flow(40002), 5).unwrap();
        assert_eq!(run(&tcp(40002)), XDP_DROP);
        assert!(prog.steer_flow(&flow(40002), 64).is_err());
        // A flow handed to the kernel (TCP repair) passes, on a port that stays ours.
        prog.flow_map().to_kernel(&flow(40004)).unwrap();
        assert_eq!(run(&tcp(40004)), XDP_PASS);
        assert!(prog.unsteer_flow(&flow(40004)).unwrap());
        // UDP with the same ports is another flow.
        assert_eq!(run(&frame(Transport::Udp, remote(40000), local)), XDP_PASS);
        // Unsteered: back to the owner.
        assert!(prog.unsteer_flow(&flow(40000)).unwrap());
        assert_eq!(run(&tcp(40000)), XDP_DROP);
        // The owner moves to slot 1: every flow without an entry goes there.
        ports.set_owner(Transport::Tcp, 80, 1).unwrap();
        assert_eq!(run(&tcp(40003)), XDP_REDIRECT);
        assert_eq!(run(&tcp(40002)), XDP_DROP); // its entry (slot 5) wins
        let c = prog.counters().unwrap();
        assert_eq!((c.redirected, c.dropped_no_xsk, c.passed), (2, 4, 3));

        // Group [1, 2]: slot 1 has an XSK, slot 2 none, so the verdict shows which
        // member the program chose; it must be the one `slot_for` predicts, the same
        // every time, and both members get flows.
        ports.set_owner(Transport::Tcp, 80, 0).unwrap();
        ports.join_group(Transport::Tcp, 80, 1).unwrap();
        ports.join_group(Transport::Tcp, 80, 2).unwrap();
        let entry = ports.entry(Transport::Tcp, 80).unwrap().unwrap();
        assert_eq!((entry.owner, entry.members.clone()), (0, vec![1, 2]));
        let mut to = [0; 3];
        for port in 41000..41200 {
            let want = entry.slot_by_hash(remote(port));
            to[want as usize] += 1;
            let verdict = if want == 1 { XDP_REDIRECT } else { XDP_DROP };
            assert_eq!(run(&tcp(port)), verdict, "port {port}");
            assert_eq!(run(&tcp(port)), verdict, "port {port} again");
        }
        assert!(to[1] > 50 && to[2] > 50, "{to:?}");
        // Told that two queues are in use, the program sends a group of two by the
        // queue: test runs come on queue 0, so every flow goes to members[0] (slot 1,
        // which has the XSK); with one queue in use, by the hash again.
        assert_eq!(prog.queues_in_use().unwrap(), 0, "never written");
        prog.set_queues_in_use(2).unwrap();
        for port in 41000..41200 {
            assert_eq!(entry.slot_for(remote(port), 0, 2), 1);
            assert_eq!(run(&tcp(port)), XDP_REDIRECT, "port {port} by queue");
        }
        prog.set_queues_in_use(1).unwrap();
        for port in 41000..41050 {
            let want = entry.slot_for(remote(port), 0, 1);
            assert_eq!(want, entry.slot_by_hash(remote(port)));
            let verdict = if want == 1 { XDP_REDIRECT } else { XDP_DROP };
            assert_eq!(run(&tcp(port)), verdict, "port {port} by hash again");
        }
        // A steered flow is not moved by the group.
        prog.steer_flow(&flow(41000), 1).unwrap();
        assert_eq!(run(&tcp(41000)), XDP_REDIRECT);
        // Leaving: slot 2 alone remains; a group of one takes everything.
        assert!(ports.leave_group(Transport::Tcp, 80, 1).unwrap());
        assert!(!ports.leave_group(Transport::Tcp, 80, 1).unwrap());
        assert_eq!(run(&tcp(41001)), XDP_DROP);
        assert!(ports.remove_slot(2).unwrap().is_empty());
        assert!(ports
            .entry(Transport::Tcp, 80)
            .unwrap()
            .unwrap()
            .members
            .is_empty());
        assert_eq!(ports.remove_slot(0).unwrap(), vec![(Transport::Tcp, 80)]);
        // Group changes need a claimed port.
        assert_eq!(
            ports.join_group(Transport::Udp, 9, 1).unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        );
        for s in 3..3 + xdp_backend::GROUP_MAX as u32 {
            let _ = ports.join_group(Transport::Tcp, 80, s);
        }
        assert!(
            ports.join_group(Transport::Tcp, 80, 1).is_err(),
            "group full"
        );

        // Forgetting a slot's flows.
        prog.steer_flow(&flow(42000), 9).unwrap();
        prog.steer_flow(&flow(42001), 9).unwrap();
        assert_eq!(prog.flow_map().slot(&flow(42000)).unwrap(), Some(9));
        assert_eq!(prog.flow_map().remove_slot(9).unwrap(), 2);
        assert_eq!(prog.flow_map().slot(&flow(42000)).unwrap(), None);
        assert_eq!(prog.flow_map().slot(&flow(40002)).unwrap(), Some(5));

        // Malformed frames are still counted (a claimed port's, cut in its TCP header).
        let before = prog.counters().unwrap().malformed;
        let mut cut = tcp(40005);
        cut.truncate(14 + 20 + 10);
        cut[17] = 30; // total length within the frame
        assert_eq!(run(&cut), XDP_DROP);
        assert_eq!(prog.counters().unwrap().malformed, before + 1);

        // A port whose owner is gone: its group's first slot takes it; with an empty
        // group it goes back to the kernel (frames pass); released, it stays so.
        ports.hand_on(Transport::Tcp, 80).unwrap();
        let entry = ports.entry(Transport::Tcp, 80).unwrap().unwrap();
        assert_eq!(entry.owner, 3);
        for s in 3..3 + xdp_backend::GROUP_MAX as u32 {
            assert!(ports.leave_group(Transport::Tcp, 80, s).unwrap());
        }
        ports.hand_on(Transport::Tcp, 80).unwrap();
        assert!(!ports.is_claimed(Transport::Tcp, 80).unwrap());
        assert_eq!(run(&tcp(41002)), XDP_PASS);
        ports.hand_on(Transport::Tcp, 80).unwrap();
        assert!(!ports.is_claimed(Transport::Tcp, 80).unwrap());
    });
}

/// Ethernet + IPv6 + `next` from `src` to `dst`; for TCP (a SYN) and UDP the ports,
/// for any other next header `body` as it is (checksums are not the program's
/// business). The payload length is what follows the fixed header.
fn frame6(next: u8, src: SocketAddrV6, dst: SocketAddrV6, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    match next {
        6 => {
            payload.extend_from_slice(&src.port().to_be_bytes());
            payload.extend_from_slice(&dst.port().to_be_bytes());
            payload
                .extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        }
        17 => {
            payload.extend_from_slice(&src.port().to_be_bytes());
            payload.extend_from_slice(&dst.port().to_be_bytes());
            payload.extend_from_slice(&((8 + body.len()) as u16).to_be_bytes());
            payload.extend_from_slice(&[0, 0]);
        }
        _ => {}
    }
    payload.extend_from_slice(body);
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x86, 0xdd];
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.extend_from_slice(&[next, 64]);
    f.extend_from_slice(&src.ip().octets());
    f.extend_from_slice(&dst.ip().octets());
    f.extend_from_slice(&payload);
    f
}

/// IPv6 in BPF_PROG_TEST_RUN, with a real XSK registered for slot 1 on queue 0: a TCP
/// SYN or UDP datagram to a claimed port goes to the XSK (REDIRECT) through the same
/// port map, flow map and listener group as IPv4; unclaimed ports, ICMPv6 (Neighbor
/// Solicitation, echo) and packets with extension headers pass to the kernel;
/// truncated or inconsistent headers are dropped and counted as malformed.
#[test]
fn ipv6_verdicts_in_kernel_test_run() {
    with_test_program(|prog| {
        let server: Ipv6Addr = "fd77::1".parse().unwrap();
        let peer: Ipv6Addr = "fd77::2".parse().unwrap();
        let local = |port| SocketAddrV6::new(server, port, 0, 0);
        let remote = |port| SocketAddrV6::new(peer, port, 0, 0);
        let syn = |sport, dport| frame6(6, remote(sport), local(dport), &[]);
        let run = |f: &[u8]| prog.test_run(f).unwrap() as i32;
        let ports = prog.port_map();

        // IPv6 steering off (the default, until a stack with IPv6 addresses turns it
        // on): a claimed port's IPv6 frames stay the kernel's.
        assert!(!prog.ipv6_steering().unwrap());
        ports.claim(Transport::Tcp, 80).unwrap();
        assert_eq!(run(&syn(40000, 80)), XDP_PASS);
        ports.release(Transport::Tcp, 80).unwrap();
        prog.set_ipv6_steering(true).unwrap();
        assert!(prog.ipv6_steering().unwrap());

        // Unclaimed: the kernel's.
        assert_eq!(run(&syn(40000, 80)), XDP_PASS);
        // Claimed (one port map for both families), owner slot 1: to its XSK.
        ports.claim(Transport::Tcp, 80).unwrap();
        ports.set_owner(Transport::Tcp, 80, 1).unwrap();
        assert_eq!(run(&syn(40000, 80)), XDP_REDIRECT);
        assert_eq!(run(&syn(40000, 81)), XDP_PASS, "another port");
        // The IPv4 frame to the same port goes the same way.
        let v4 = frame(
            Transport::Tcp,
            SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 40000),
            SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 80),
        );
        assert_eq!(run(&v4), XDP_REDIRECT);
        // UDP: its own claims.
        let udp = |dport| frame6(17, remote(40000), local(dport), b"ping");
        assert_eq!(run(&udp(80)), XDP_PASS, "TCP's claim is not UDP's");
        ports.claim(Transport::Udp, 5353).unwrap();
        ports.set_owner(Transport::Udp, 5353, 1).unwrap();
        assert_eq!(run(&udp(5353)), XDP_REDIRECT);
        // 802.1Q-tagged.
        let mut tagged = syn(40000, 80);
        tagged.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        assert_eq!(run(&tagged), XDP_REDIRECT);

        // ICMPv6 is the kernel's, Neighbor Discovery included (it owns ND as ARP):
        // a Neighbor Solicitation for our address and an echo request.
        let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
        ns.extend_from_slice(&server.octets());
        assert_eq!(run(&frame6(58, remote(0), local(0), &ns)), XDP_PASS);
        assert_eq!(
            run(&frame6(
                58,
                remote(0),
                local(0),
                &[128, 0, 0, 0, 0, 1, 0, 1]
            )),
            XDP_PASS
        );
        // Extension headers pass, also before TCP to a claimed port: Hop-by-Hop
        // (next header TCP, 8 bytes of padding options), Fragment, Destination Options.
        for ext in [0u8, 44, 60] {
            let mut body = vec![6, 0, 1, 4, 0, 0, 0, 0];
            body.extend_from_slice(&syn(40000, 80)[14 + 40..]);
            assert_eq!(
                run(&frame6(ext, remote(40000), local(80), &body)),
                XDP_PASS,
                "next header {ext}"
            );
        }

        // Flow entries for IPv6 flows: a steered flow wins over the owner, the kernel
        // slot passes; the IPv4 flow with the same ports is another key.
        let flow = |port| FlowKey::new(Transport::Tcp, local(80), remote(port));
        prog.steer_flow(&flow(40001), 5).unwrap();
        assert_eq!(run(&syn(40001, 80)), XDP_DROP, "slot 5 has no XSK");
        assert_eq!(prog.flow_map().slot(&flow(40001)).unwrap(), Some(5));
        prog.flow_map().to_kernel(&flow(40002)).unwrap();
        assert_eq!(run(&syn(40002, 80)), XDP_PASS);
        let flows = prog.flow_map().flows().unwrap();
        assert!(
            flows.contains(&(flow(40002), xdp_backend::KERNEL_SLOT)),
            "{flows:?}"
        );
        prog.steer_flow(
            &FlowKey::new(
                Transport::Tcp,
                SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 80),
                SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 40000),
            ),
            5,
        )
        .unwrap();
        assert_eq!(run(&v4), XDP_DROP, "the IPv4 flow's own entry");
        assert_eq!(run(&syn(40000, 80)), XDP_REDIRECT, "not the IPv6 flow's");

        // The listener group by hash: the member `slot_by_hash` predicts for the IPv6
        // peer, every time; both members get flows.
        ports.set_owner(Transport::Tcp, 80, 0).unwrap();
        ports.join_group(Transport::Tcp, 80, 1).unwrap();
        ports.join_group(Transport::Tcp, 80, 2).unwrap();
        let entry = ports.entry(Transport::Tcp, 80).unwrap().unwrap();
        let mut to = [0; 3];
        for port in 41000..41200 {
            let want = entry.slot_by_hash(remote(port));
            to[want as usize] += 1;
            let verdict = if want == 1 { XDP_REDIRECT } else { XDP_DROP };
            assert_eq!(run(&syn(port, 80)), verdict, "port {port}");
        }
        assert!(to[1] > 50 && to[2] > 50, "{to:?}");
        // By queue: two queues in use, test runs come on queue 0, so members[0].
        prog.set_queues_in_use(2).unwrap();
        for port in 41000..41050 {
            assert_eq!(run(&syn(port, 80)), XDP_REDIRECT, "port {port} by queue");
        }

        // Malformed: counted and dropped.
        let before = prog.counters().unwrap().malformed;
        let mut long = syn(40000, 80);
        long[18..20].copy_from_slice(&100u16.to_be_bytes()); // payload beyond the frame
        let mut cut = syn(40000, 80);
        cut.truncate(14 + 40 + 10);
        cut[18..20].copy_from_slice(&10u16.to_be_bytes()); // TCP header cut
        let mut v4_version = syn(40000, 80);
        v4_version[14] = 0x45;
        let short = syn(40000, 80)[..14 + 30].to_vec();
        let mut tiny_udp = udp(5353);
        tiny_udp[14 + 40 + 4..14 + 40 + 6].copy_from_slice(&4u16.to_be_bytes());
        for f in [&long, &cut, &v4_version, &short, &tiny_udp] {
            assert_eq!(run(f), XDP_DROP);
        }
        assert_eq!(prog.counters().unwrap().malformed, before + 5);
    });
}

/// Kills a process we know by PID (a grandchild) when dropped: no test leaves one.
struct KillOnDrop(libc::pid_t);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0 > 0 {
            // SAFETY: signalling a process this test started.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

/// Reads reports until one of each of `kinds` came; returns them in that order.
fn read_kinds(fd: RawFd, kinds: &[u8]) -> Vec<u16> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got: Vec<(u8, u16, u32)> = Vec::new();
    while !kinds.iter().all(|k| got.iter().any(|r| r.0 == *k)) {
        assert!(Instant::now() < deadline, "reports {got:?}, want {kinds:?}");
        got.extend(read_reports(fd, Duration::from_millis(100)));
    }
    kinds
        .iter()
        .map(|k| got.iter().find(|r| r.0 == *k).unwrap().1)
        .collect()
}

/// The shim's model today: a child takes over the sockets it inherited (slot 0) and
/// the parent exits. With `adopt`, the socket's entry in the family page names the
/// child, so the survivors' reaping leaves it alone and every frame stays accounted.
#[test]
fn adopted_sockets_survive_the_parent_that_opened_them() {
    assert!(is_root(), "end-to-end tests need root");
    let topo = Topology::up(&TopologyOptions::default()).unwrap();
    let (server, client) = (topo.server_ip, topo.client_ip);
    let (ns, iface) = (topo.server_ns.clone(), topo.server_if.clone());
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds into our array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (rd, wr) = (fds[0], fds[1]);
    let parent = in_netns(&ns, move || {
        // SAFETY: the child runs only the code below and leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid != 0 {
            return pid;
        }
        let r = std::panic::catch_unwind(move || {
            let mut attached = AttachedIface::open(&iface, &XskConfig::default()).unwrap();
            attached.claim_port(Transport::Udp, ECHO_PORT).unwrap();
            let me = std::process::id();
            // SAFETY: as above, for the grandchild.
            let child = unsafe { libc::fork() };
            if child != 0 {
                report(wr, b'C', child as u16, 0);
                // The parent lets go without dropping anything (the shim closes raw
                // fds; exit runs no destructors of its state).
                std::mem::forget(attached);
                // SAFETY: leaving the forked process.
                unsafe { libc::_exit(0) };
            }
            attached.adopt();
            // SAFETY: getppid has no preconditions.
            while unsafe { libc::getppid() } as u32 == me {
                std::thread::sleep(Duration::from_millis(5));
            }
            for x in attached.xsks_mut() {
                let c = x.census();
                report(wr, b'M', c.members as u16, 0);
                report(wr, b'T', (c.tx_pool + c.tx_cached) as u16, 0);
            }
            report(wr, b'R', 0, 0);
            loop {
                if serve(attached.xsks_mut(), *b"A0", &mut |_, _| {}) == 0 {
                    wait_any(attached.xsks_mut());
                }
            }
        });
        let _ = r;
        // SAFETY: leaving the forked process.
        unsafe { libc::_exit(3) }
    });
    let got = read_kinds(rd, b"CMTR");
    let _guard = KillOnDrop(got[0] as libc::pid_t);
    assert_eq!(reap(parent), 0);
    assert_eq!(got[1], 1, "the adopted socket is still a member");
    assert_eq!(got[2], 2048, "every TX frame accounted");
    in_netns(&topo.client_ns, move || {
        udp_exchange(server, client, 30009, 3000, *b"A0")
    });
}
