//! Connections handed from the stack to kernel sockets (issue 18), through TCP repair
//! (`repair`). The order keeps every byte and never confuses the peer: the kernel
//! socket is made from a snapshot while the stack still holds the connection (if the
//! kernel refuses, nothing changed); then the connection's flow goes to the kernel in
//! the XDP program, and only then does the stack let the connection go, quietly.
//! Frames that were already on our rings are dropped (the peer sends them again), not
//! answered with a RST.
//!
//! The flow entry lives as long as the kernel has the connection (TIME-WAIT too): while
//! the family counts such entries, its drivers look every second for those whose
//! kernel connection ended (`sweep_kernel_flows`) and remove them, so that a later
//! connection on the same 4-tuple is the stack's again.
//!
//! First use: exit. Connections the app closed whose data or FIN is not yet delivered
//! become kernel sockets, which the kernel finishes as it finishes any socket a
//! process closed, and the process ends at once instead of lingering.

use super::engine::Engine;
use super::log::{debug, log};
use super::mailbox::ConnKey;
use super::repair::{self, RepairError, RepairPlan};
use fastnet_stats::Counter;
use stack::socket::SocketHandle;
use stack::tcp::State;

/// What an exit's handoff did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitHandoff {
    pub handed: usize,
    /// Left in the stack (exit lingers for them).
    pub kept: usize,
    /// TCP repair is not permitted here (no CAP_NET_ADMIN).
    pub not_permitted: bool,
}

impl Engine {
    /// Makes connection `h` a kernel socket; returns its fd (blocking, close-on-exec),
    /// which the caller owns. On error the connection is still the stack's, unchanged.
    pub fn hand_to_kernel(&mut self, h: SocketHandle) -> Result<i32, RepairError> {
        let now = self.now();
        let st = self
            .iface
            .tcp
            .snapshot(now, h)
            .map_err(|_| RepairError::NotMovable(State::Closed))?;
        let fd = repair::kernel_socket(&RepairPlan::new(&st)?)?;
        let conn = ConnKey {
            local: st.local,
            remote: st.remote,
        };
        if let Err(e) = self.dev.flow_to_kernel(conn) {
            // The program may be gone already (loopback-only, or the link went away):
            // then every frame reaches the kernel anyway.
            debug(format_args!("handoff {conn:?}: no flow entry: {e}"));
        }
        // The kernel entry replaced ours: the end of the stack's connection must not
        // remove it.
        self.forget_steering(h);
        self.handed_to_kernel.push(conn);
        super::family::add_kernel_flows(1);
        let _ = self.iface.tcp.export(now, h);
        Ok(fd)
    }

    /// At exit: every connection the app closed that still has data or a FIN to
    /// deliver (or waits for the peer's FIN) becomes a kernel socket, closed at once as
    /// the app closed it; the kernel finishes it. Handshakes under way stay (exit
    /// lingers for them), as does everything when repair is not permitted.
    pub fn hand_closing_to_kernel(&mut self) -> ExitHandoff {
        let mut out = ExitHandoff::default();
        for h in self.closing_handles() {
            let pending = match self.iface.tcp.state(h) {
                Ok(State::Established | State::CloseWait) => {
                    self.iface.tcp.send_queued(h).is_ok_and(|n| n > 0)
                }
                Ok(State::FinWait1 | State::FinWait2 | State::Closing | State::LastAck) => true,
                _ => false,
            };
            if !pending {
                continue;
            }
            if out.not_permitted {
                out.kept += 1;
                continue;
            }
            match self.hand_to_kernel(h) {
                Ok(fd) => {
                    // Closed as the app closed it: the kernel keeps the connection
                    // (orphaned) until it has delivered the data and the FIN.
                    let _ = super::kernel::close(fd);
                    out.handed += 1;
                    self.count(Counter::HandoffToKernelExit);
                }
                Err(e) => {
                    out.kept += 1;
                    out.not_permitted |= e == RepairError::NotPermitted;
                    if e != RepairError::NotPermitted {
                        self.count(Counter::HandoffFailed);
                        debug(format_args!("exit: a connection stays in the stack: {e}"));
                    }
                }
            }
        }
        if out.not_permitted {
            self.count(Counter::HandoffFailed);
            log(
                super::config::LogLevel::Warn,
                format_args!(
                    "exit: TCP repair is not permitted (needs CAP_NET_ADMIN): lingering for {} connection(s) instead of handing them to the kernel",
                    out.kept
                ),
            );
        } else if out.handed > 0 {
            log(
                super::config::LogLevel::Info,
                format_args!(
                    "exit: {} connection(s) handed to the kernel (TCP repair), {} lingering",
                    out.handed, out.kept
                ),
            );
        }
        out
    }
}

/// How often a driver looks for ended connections among the kernel flow entries.
const SWEEP_EVERY_US: u64 = 1_000_000;

impl Engine {
    /// Removes the flow entries of connections handed to the kernel that the kernel no
    /// longer has (at most once a second; only while the family counts such entries).
    pub fn sweep_kernel_flows(&mut self) {
        if super::family::kernel_flows() == 0 {
            return;
        }
        let now = self.now();
        if now.micros() < self.kernel_sweep_at.micros() {
            return;
        }
        self.kernel_sweep_at = now + stack::time::Duration::from_micros(SWEEP_EVERY_US);
        for conn in self.dev.kernel_flows() {
            if super::kernel::tcp_connection_exists(conn.local, conn.remote) == Ok(false)
                && self.dev.unsteer_flow(conn).unwrap_or(false)
            {
                super::family::remove_kernel_flow();
                self.handed_to_kernel.retain(|c| *c != conn);
                debug(format_args!(
                    "handoff {conn:?}: the kernel's connection ended"
                ));
            }
        }
    }
}
