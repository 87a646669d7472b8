//! The socket layer: socket calls on the fast-path interface go to the in-process
//! stack; everything else stays the kernel's.
//!
//! Its modules form layers; each uses only its own layer and those below it (the test
//! at the bottom checks every `super::` path against this table):
//!
//! 1. **Calls** — what the hook sends here: `calls` (which calls come here, the life of
//!    a socket, exit), `data` (send/recv), `options` (options, fcntl, dup, ioctl),
//!    `readiness` (epoll, poll, select), `splice` (splice between a socket and a pipe).
//! 2. **Process** — `process`: this process's fast path: the engine it drives behind
//!    one lock, its start, its background driver, fork and exit, joining the family,
//!    how a thread sleeps until a socket changes.
//! 3. **Engine** — `engine`: the stack, the interface and the fd table behind one lock,
//!    driven by whoever holds it; `handoff`: sockets shared with the processes of the
//!    family (connections move, tethers, listener groups); `relay`: connections
//!    carried to a program exec'd with them; `kernel_handoff`: connections handed to
//!    kernel sockets, `carried_options`: the socket options that go with them.
//! 4. **Interface** — `netdev`: the AF_XDP interface (or loopback only) the engine
//!    drives; `hostlo`: loopback between two fastnet processes through shared memory.
//! 5. **Parts** — `kernel` (raw system calls, the only place they are made), `log`,
//!    `config`, `fdtable`, `sockaddr`, `appmem` (the app's memory), `cmsg` (UDP
//!    ancillary data), `epoll` (the app's epoll sets), `lock` (a fork-safe lock),
//!    `signals` (signals held while the shim holds its lock), `family` (the shared page
//!    of a family of processes), `mailbox` (messages between them), `repair` (a
//!    connection made a kernel socket through TCP repair), `control` (requests from
//!    `fastnet handoff`).

pub mod appmem;
pub mod calls;
pub mod carried_options;
pub mod cmsg;
pub mod config;
pub mod control;
pub mod data;
pub mod engine;
pub mod epoll;
pub mod family;
pub mod fdtable;
pub mod handoff;
pub mod hostlo;
pub mod kernel;
pub mod kernel_handoff;
pub mod lock;
pub mod log;
pub mod mailbox;
pub mod netdev;
pub mod options;
pub mod process;
pub mod readiness;
pub mod relay;
pub mod repair;
pub mod signals;
pub mod sockaddr;
pub mod splice;

pub use calls::{exit_work, handle};
pub use process::init;

/// Each module's layer (1 is the top; see above).
#[cfg(test)]
const LAYERS: &[(&str, u8, &str)] = &[
    ("calls", 1, include_str!("calls.rs")),
    ("data", 1, include_str!("data.rs")),
    ("options", 1, include_str!("options.rs")),
    ("readiness", 1, include_str!("readiness.rs")),
    ("splice", 1, include_str!("splice.rs")),
    ("process", 2, include_str!("process.rs")),
    ("engine", 3, include_str!("engine.rs")),
    ("handoff", 3, include_str!("handoff.rs")),
    ("relay", 3, include_str!("relay.rs")),
    ("kernel_handoff", 3, include_str!("kernel_handoff.rs")),
    ("carried_options", 3, include_str!("carried_options.rs")),
    ("netdev", 4, include_str!("netdev.rs")),
    ("hostlo", 4, include_str!("hostlo.rs")),
    ("kernel", 5, include_str!("kernel.rs")),
    ("log", 5, include_str!("log.rs")),
    ("config", 5, include_str!("config.rs")),
    ("control", 5, include_str!("control.rs")),
    ("fdtable", 5, include_str!("fdtable.rs")),
    ("sockaddr", 5, include_str!("sockaddr.rs")),
    ("appmem", 5, include_str!("appmem.rs")),
    ("cmsg", 5, include_str!("cmsg.rs")),
    ("epoll", 5, include_str!("epoll.rs")),
    ("lock", 5, include_str!("lock.rs")),
    ("signals", 5, include_str!("signals.rs")),
    ("family", 5, include_str!("family.rs")),
    ("mailbox", 5, include_str!("mailbox.rs")),
    ("repair", 5, include_str!("repair.rs")),
];

#[cfg(test)]
mod tests {
    use super::LAYERS;

    /// Every sibling module a module's source names (`super::NAME`,
    /// `crate::sockets::NAME`).
    fn uses(src: &str) -> Vec<String> {
        let mut out = Vec::new();
        for prefix in ["super::", "crate::sockets::"] {
            let mut rest = src;
            while let Some(i) = rest.find(prefix) {
                rest = &rest[i + prefix.len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        out
    }

    #[test]
    fn every_module_is_in_the_table() {
        let declared: Vec<&str> = include_str!("mod.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("pub mod "))
            .map(|l| l.trim_end_matches(';'))
            .collect();
        for m in &declared {
            assert!(LAYERS.iter().any(|(n, _, _)| n == m), "{m} has no layer");
        }
        assert_eq!(declared.len(), LAYERS.len());
    }

    #[test]
    fn no_module_uses_a_layer_above_its_own() {
        let layer = |name: &str| LAYERS.iter().find(|(n, _, _)| *n == name).map(|l| l.1);
        let mut wrong = Vec::new();
        for (name, own, src) in LAYERS {
            // Unit tests inside a module may reach anywhere.
            let code = src.split("#[cfg(test)]").next().unwrap_or(src);
            for used in uses(code) {
                if let Some(l) = layer(&used) {
                    if l < *own {
                        wrong.push(format!("{name} (layer {own}) uses {used} (layer {l})"));
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn the_check_sees_a_use_from_above() {
        assert_eq!(
            uses("use super::calls::debug; super::process::x()"),
            ["calls", "process"]
        );
    }
}
