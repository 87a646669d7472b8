//! What the fast path needs from the kernel's view of the network, over rtnetlink:
//! the interface (index, MAC, MTU, IPv4 and IPv6 addresses, queues), routes
//! (RTM_GETROUTE) and neighbours (RTM_GETNEIGH), both families, and asking the kernel
//! to resolve a neighbour it does not know yet. The kernel stays the owner of ARP,
//! Neighbor Discovery and routes; the fast path follows them.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage, LinkXdp};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

/// One interface as the kernel sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    pub mac: [u8; 6],
    pub mtu: u32,
    /// Queues allocated (IFLA_NUM_RX_QUEUES): not how many are in use; see `queues`.
    pub rx_queues_allocated: u32,
    pub tx_queues_allocated: u32,
    /// Id of the XDP program attached, if any.
    pub xdp_prog_id: Option<u32>,
}

/// The kernel's answer to "how do I reach `dst`".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// Output interface.
    pub oif: u32,
    /// Next hop when not directly connected (of the destination's family).
    pub gateway: Option<IpAddr>,
    /// Source address the kernel would pick.
    pub pref_src: Option<IpAddr>,
}

impl Route {
    /// The address whose MAC frames to `dst` are sent to.
    pub fn next_hop(&self, dst: impl Into<IpAddr>) -> IpAddr {
        self.gateway.unwrap_or(dst.into())
    }
}

/// A neighbour table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub ip: IpAddr,
    pub mac: Option<[u8; 6]>,
    pub state: NeighbourState,
}

impl Neighbour {
    /// True when the MAC can be used (reachable, stale, delay, probe, permanent, noarp).
    pub fn is_usable(&self) -> bool {
        self.mac.is_some()
            && matches!(
                self.state,
                NeighbourState::Reachable
                    | NeighbourState::Stale
                    | NeighbourState::Delay
                    | NeighbourState::Probe
                    | NeighbourState::Permanent
                    | NeighbourState::Noarp
            )
    }
}

fn nl_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("netlink: {e}"))
}

/// Sends one request and collects the replies (all parts of a dump).
fn request(msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = 1;
    let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    nl.finalize();
    let mut buf = vec![0u8; nl.buffer_len()];
    nl.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
    let mut out = Vec::new();
    loop {
        let (data, _) = socket.recv_from_full()?;
        if data.is_empty() {
            return Err(nl_err("empty reply"));
        }
        let mut off = 0;
        while off < data.len() {
            let m =
                NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..]).map_err(nl_err)?;
            let len = m.header.length as usize;
            if len == 0 {
                return Err(nl_err("zero-length message"));
            }
            off += (len + 3) & !3;
            match m.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    if e.code.is_none() {
                        return Ok(out); // ACK
                    }
                    return Err(e.to_io());
                }
                NetlinkPayload::InnerMessage(inner) => {
                    out.push(inner);
                    if !dump && flags & NLM_F_ACK == 0 {
                        return Ok(out);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Index of the interface called `name` in this network namespace.
pub fn ifindex(name: &str) -> io::Result<u32> {
    crate::sys::if_nametoindex(name)
}

/// The interface with this index.
pub fn link(index: u32) -> io::Result<LinkInfo> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    let replies = request(RouteNetlinkMessage::GetLink(msg), 0)?;
    for r in replies {
        if let RouteNetlinkMessage::NewLink(l) = r {
            return Ok(parse_link(&l));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no link {index}"),
    ))
}

/// The interface called `name`.
pub fn link_by_name(name: &str) -> io::Result<LinkInfo> {
    link(ifindex(name)?)
}

fn parse_link(l: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: l.header.index,
        name: String::new(),
        mac: [0; 6],
        mtu: 0,
        rx_queues_allocated: 1,
        tx_queues_allocated: 1,
        xdp_prog_id: None,
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => info.name = n.clone(),
            LinkAttribute::Address(m) if m.len() == 6 => info.mac.copy_from_slice(m),
            LinkAttribute::Mtu(m) => info.mtu = *m,
            LinkAttribute::NumRxQueues(q) => info.rx_queues_allocated = *q,
            LinkAttribute::NumTxQueues(q) => info.tx_queues_allocated = *q,
            LinkAttribute::Xdp(x) => {
                for x in x {
                    if let LinkXdp::ProgId(id) = x {
                        if *id != 0 {
                            info.xdp_prog_id = Some(*id);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    info
}

/// IPv4 addresses (with prefix length) of the interface.
pub fn ipv4_addresses(index: u32) -> io::Result<Vec<(Ipv4Addr, u8)>> {
    Ok(addresses(index, AddressFamily::Inet)?
        .into_iter()
        .filter_map(|(ip, len)| match ip {
            IpAddr::V4(v4) => Some((v4, len)),
            IpAddr::V6(_) => None,
        })
        .collect())
}

/// IPv6 addresses (with prefix length) of the interface, link-local ones included,
/// tentative ones (duplicate address detection still running, or failed) left out:
/// the kernel would not use them either.
pub fn ipv6_addresses(index: u32) -> io::Result<Vec<(Ipv6Addr, u8)>> {
    Ok(addresses(index, AddressFamily::Inet6)?
        .into_iter()
        .filter_map(|(ip, len)| match ip {
            IpAddr::V6(v6) => Some((v6, len)),
            IpAddr::V4(_) => None,
        })
        .collect())
}

/// IFA_F_TENTATIVE and IFA_F_DADFAILED (linux/if_addr.h).
const IFA_F_NOT_USABLE: u32 = 0x40 | 0x08;

fn addresses(index: u32, family: AddressFamily) -> io::Result<Vec<(IpAddr, u8)>> {
    let mut msg = AddressMessage::default();
    msg.header.family = family;
    let replies = request(RouteNetlinkMessage::GetAddress(msg), NLM_F_DUMP)?;
    let mut out = Vec::new();
    for r in replies {
        let RouteNetlinkMessage::NewAddress(a) = r else {
            continue;
        };
        if a.header.index != index || a.header.family != family {
            continue;
        }
        let mut local = None;
        let mut address = None;
        let mut flags = a.header.flags.bits() as u32;
        for attr in &a.attributes {
            match attr {
                AddressAttribute::Local(ip) => local = Some(*ip),
                AddressAttribute::Address(ip) => address = Some(*ip),
                AddressAttribute::Flags(f) => flags = f.bits(),
                _ => {}
            }
        }
        if flags & IFA_F_NOT_USABLE != 0 {
            continue;
        }
        if let Some(ip) = local.or(address) {
            out.push((ip, a.header.prefix_len));
        }
    }
    Ok(out)
}

/// Asks the kernel's routing table how it would reach `dst` (like `ip route get`).
pub fn route_get(dst: impl Into<IpAddr>) -> io::Result<Route> {
    let dst = dst.into();
    let mut msg = RouteMessage::default();
    msg.header.address_family = family_of(dst);
    msg.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
    msg.attributes
        .push(RouteAttribute::Destination(route_address(dst)));
    let replies = request(RouteNetlinkMessage::GetRoute(msg), 0)?;
    for r in replies {
        let RouteNetlinkMessage::NewRoute(r) = r else {
            continue;
        };
        let mut route = Route {
            oif: 0,
            gateway: None,
            pref_src: None,
        };
        for a in &r.attributes {
            match a {
                RouteAttribute::Oif(i) => route.oif = *i,
                RouteAttribute::Gateway(g) => route.gateway = ip_of(g),
                RouteAttribute::PrefSource(s) => route.pref_src = ip_of(s),
                _ => {}
            }
        }
        return Ok(route);
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no route to {dst}"),
    ))
}

fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn route_address(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

fn neighbour_address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}

/// The neighbour table entry for `ip` (IPv4: ARP, IPv6: Neighbor Discovery) on
/// `ifindex`, if any: one RTM_GETNEIGH for that address (a table dump on kernels
/// older than 5.0, which lack the single get).
pub fn neighbour(ifindex: u32, ip: impl Into<IpAddr>) -> io::Result<Option<Neighbour>> {
    let ip = ip.into();
    let mut msg = NeighbourMessage::default();
    msg.header.family = family_of(ip);
    msg.header.ifindex = ifindex;
    msg.attributes
        .push(NeighbourAttribute::Destination(neighbour_address(ip)));
    let replies = match request(RouteNetlinkMessage::GetNeighbour(msg), 0) {
        Ok(r) => r,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let mut msg = NeighbourMessage::default();
            msg.header.family = family_of(ip);
            request(RouteNetlinkMessage::GetNeighbour(msg), NLM_F_DUMP)?
        }
        Err(e) => return Err(e),
    };
    for r in replies {
        let RouteNetlinkMessage::NewNeighbour(n) = r else {
            continue;
        };
        if n.header.ifindex != ifindex {
            continue;
        }
        let mut dst = None;
        let mut mac = None;
        for a in &n.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) => {
                    dst = Some(IpAddr::V4(*d))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(d)) => {
                    dst = Some(IpAddr::V6(*d))
                }
                NeighbourAttribute::LinkLayerAddress(m) if m.len() == 6 => {
                    let mut b = [0u8; 6];
                    b.copy_from_slice(m);
                    mac = Some(b);
                }
                _ => {}
            }
        }
        if dst == Some(ip) {
            return Ok(Some(Neighbour {
                ip,
                mac,
                state: n.header.state,
            }));
        }
    }
    Ok(None)
}

/// Asks the kernel to start resolving `ip` on `ifindex` (ARP or Neighbor
/// Solicitation), without waiting: RTM_NEWNEIGH with NTF_USE, which makes the kernel
/// probe as if a packet were queued.
pub fn start_neighbour_resolution(ifindex: u32, ip: impl Into<IpAddr>) -> io::Result<()> {
    let ip = ip.into();
    let mut msg = NeighbourMessage::default();
    msg.header.family = family_of(ip);
    msg.header.ifindex = ifindex;
    msg.header.state = NeighbourState::None;
    msg.header.flags = NeighbourFlags::Use;
    msg.attributes
        .push(NeighbourAttribute::Destination(neighbour_address(ip)));
    request(
        RouteNetlinkMessage::NewNeighbour(msg),
        NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
    )
    .map(|_| ())
}

/// The MAC of `ip` on `ifindex`: from the table, or after asking the kernel to resolve
/// it and waiting up to `timeout`. `TimedOut` when it does not answer in time.
pub fn resolve_neighbour(
    ifindex: u32,
    ip: impl Into<IpAddr>,
    timeout: Duration,
) -> io::Result<[u8; 6]> {
    let ip = ip.into();
    let deadline = Instant::now() + timeout;
    let mut asked = false;
    loop {
        let entry = neighbour(ifindex, ip)?;
        if let Some(n) = entry.filter(Neighbour::is_usable) {
            return Ok(n.mac.expect("usable has a MAC"));
        }
        let in_progress = entry.is_some_and(|n| {
            matches!(
                n.state,
                NeighbourState::Incomplete | NeighbourState::Probe | NeighbourState::Delay
            )
        });
        if !asked && !in_progress {
            start_neighbour_resolution(ifindex, ip)?;
            asked = true;
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("neighbour {ip} on ifindex {ifindex} not resolved"),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
