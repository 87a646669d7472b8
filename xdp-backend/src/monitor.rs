//! Notices, without polling, when an interface changes in a way the fast path must
//! follow: the kernel's link notifications (RTNLGRP_LINK: the interface gone, an XDP
//! program detached, a veth's queues changed) and ethtool's (the "monitor" group of the
//! ethtool generic-netlink family: `ethtool -L` on any driver). Both sockets are
//! non-blocking; whoever sleeps on the XSKs sleeps on them too and calls
//! [`LinkMonitor::drain`] when one is readable.

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_generic::ctrl::nlas::{GenlCtrlAttrs, McastGrpAttrs};
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::GenlMessage;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::protocols::{NETLINK_GENERIC, NETLINK_ROUTE};
use netlink_sys::{Socket, SocketAddr};
use std::io;
use std::os::fd::{AsRawFd, RawFd};

/// rtnetlink's multicast group of link changes (RTNLGRP_LINK).
const RTNLGRP_LINK: u32 = 1;

/// Sockets that become readable when an interface changes.
pub struct LinkMonitor {
    route: Socket,
    /// None on kernels without ethtool netlink (before 5.6): then only rtnetlink's
    /// notifications are seen, which cover veth but not every NIC driver's `ethtool -L`.
    ethtool: Option<Socket>,
}

impl LinkMonitor {
    pub fn open() -> io::Result<LinkMonitor> {
        let mut route = high_socket(NETLINK_ROUTE)?;
        route.bind_auto()?;
        route.add_membership(RTNLGRP_LINK)?;
        route.set_non_blocking(true)?;
        let ethtool = ethtool_monitor().ok();
        Ok(LinkMonitor { route, ethtool })
    }

    /// The fds to sleep on.
    pub fn fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        std::iter::once(self.route.as_raw_fd()).chain(self.ethtool.as_ref().map(|s| s.as_raw_fd()))
    }

    /// Reads every pending notification; true when one may concern `ifindex` (a link
    /// message for it, any ethtool notification, or an overrun that lost some).
    pub fn drain(&mut self, ifindex: u32) -> bool {
        let mut concerned = false;
        let mut buf = vec![0u8; 16384];
        loop {
            match self.route.recv(&mut &mut buf[..], 0) {
                Ok(0) => break,
                Ok(n) => concerned |= link_messages_concern(&buf[..n], ifindex),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ENOBUFS: notifications were lost; look at the interface again.
                Err(_) => {
                    concerned = true;
                    break;
                }
            }
        }
        if let Some(s) = &self.ethtool {
            loop {
                match s.recv(&mut &mut buf[..], 0) {
                    Ok(0) => break,
                    Ok(_) => concerned = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        concerned = true;
                        break;
                    }
                }
            }
        }
        concerned
    }
}

/// True when a datagram of rtnetlink messages holds a link message for `ifindex`.
pub fn link_messages_concern(mut buf: &[u8], ifindex: u32) -> bool {
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
        if len < 16 || len > buf.len() {
            // Malformed: be safe and look at the interface.
            return true;
        }
        if let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[..len]) {
            if let NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewLink(l) | RouteNetlinkMessage::DelLink(l),
            ) = m.payload
            {
                if l.header.index == ifindex {
                    return true;
                }
            }
        }
        buf = &buf[(len + 3) & !3..];
        if buf.len() < 16 {
            break;
        }
    }
    false
}

/// A netlink socket of `protocol`, kept (so numbered above the crate's fd floor).
fn high_socket(protocol: isize) -> io::Result<Socket> {
    use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
    let s = Socket::new(protocol)?;
    // SAFETY: the socket's fd is ours alone; ownership moves from `s` to the OwnedFd.
    let fd = unsafe { OwnedFd::from_raw_fd(s.into_raw_fd()) };
    let fd = crate::sys::above_floor(fd);
    // SAFETY: as above, back into a netlink socket.
    Ok(unsafe { Socket::from_raw_fd(fd.into_raw_fd()) })
}

/// A generic-netlink socket joined to ethtool's "monitor" multicast group.
fn ethtool_monitor() -> io::Result<Socket> {
    let mut s = high_socket(NETLINK_GENERIC)?;
    s.bind_auto()?;
    s.connect(&SocketAddr::new(0, 0))?;
    let mut msg = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName("ethtool".to_string())],
    });
    msg.finalize();
    let mut nl = NetlinkMessage::from(msg);
    nl.header.flags = NLM_F_REQUEST;
    nl.finalize();
    let mut tx = vec![0u8; nl.buffer_len()];
    nl.serialize(&mut tx);
    s.send(&tx, 0)?;
    let mut rx = vec![0u8; 16384];
    let n = s.recv(&mut &mut rx[..], 0)?;
    let reply = NetlinkMessage::<GenlMessage<GenlCtrl>>::deserialize(&rx[..n])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("genetlink: {e}")))?;
    let NetlinkPayload::InnerMessage(family) = reply.payload else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no ethtool netlink family",
        ));
    };
    let group = family
        .payload
        .nlas
        .iter()
        .filter_map(|a| match a {
            GenlCtrlAttrs::McastGroups(groups) => Some(groups),
            _ => None,
        })
        .flatten()
        .find_map(|attrs| {
            let named = attrs
                .iter()
                .any(|a| matches!(a, McastGrpAttrs::Name(n) if n == "monitor"));
            attrs.iter().find_map(|a| match a {
                McastGrpAttrs::Id(id) if named => Some(*id),
                _ => None,
            })
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "no ethtool monitor group"))?;
    s.add_membership(group)?;
    s.set_non_blocking(true)?;
    Ok(s)
}
