//! Interface counters: frames and bytes each way, drops by reason.

use core::fmt;

/// Why a received frame (or a packet the stack wanted to send) was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than an Ethernet header (or a VLAN tag cut off).
    EthernetTruncated,
    /// Destination MAC neither ours nor broadcast.
    EthernetNotForUs,
    /// VLAN tag absent/present/different from the configured VLAN, or stacked tags.
    VlanMismatch,
    /// EtherType other than IPv4 and ARP.
    UnknownEthertype,
    /// ARP packet too short or not Ethernet/IPv4.
    ArpMalformed,
    /// ARP received while neighbours are managed externally (kernel owns ARP).
    ArpIgnored,
    /// IPv4 header truncated or total length beyond the frame.
    Ipv4Truncated,
    /// IPv4 version, header length or total length invalid.
    Ipv4Malformed,
    Ipv4BadChecksum,
    /// An IPv4 fragment: the stack does not reassemble.
    Ipv4Fragment,
    /// Destination address not one of ours (nor a broadcast we accept).
    Ipv4NotForUs,
    /// Source address is broadcast or multicast.
    Ipv4BadSource,
    /// IP protocol other than ICMP, TCP, UDP.
    UnknownProtocol,
    IcmpMalformed,
    IcmpBadChecksum,
    /// ICMP type the stack does not handle (or an echo request to a broadcast address).
    IcmpIgnored,
    UdpMalformed,
    UdpBadChecksum,
    /// No socket bound to the destination port.
    UdpNoSocket,
    /// The socket's receive buffer was full.
    UdpBufferFull,
    /// TCP segment shorter than a TCP header, or sent to a broadcast address.
    TcpMalformed,
    TcpBadChecksum,
    /// A control reply (ARP reply, ICMP) found the reply queue full.
    ReplyQueueFull,
    /// A packet to send had no route (no on-link network, no gateway).
    NoRoute,
    /// A packet to send was dropped because its next hop does not answer ARP.
    NeighborFailed,
    /// A transport asked to send a packet larger than the MTU.
    TxTooBig,
    /// A packet for a next hop being resolved found the held-frames queue full.
    NeighborQueueFull,
    /// IPv6 header truncated or payload length beyond the frame.
    Ipv6Truncated,
    /// IPv6 version field not 6.
    Ipv6Malformed,
    /// Destination neither one of our IPv6 addresses nor a group we listen to.
    Ipv6NotForUs,
    /// Source is multicast or one of our own addresses.
    Ipv6BadSource,
    /// A malformed or refused extension-header chain (`wire::ipv6_ext::ExtHeaderError`).
    Ipv6ExtHeaders,
    /// An IPv6 fragment the reassembly buffer dropped (the reason is counted in
    /// `Interface::reassembly_stats`), or a reassembled datagram of a protocol other
    /// than UDP and TCP.
    Ipv6Fragment,
    /// Upper layer other than ICMPv6, TCP and UDP.
    Ipv6UnknownProtocol,
    /// ICMPv6 message too short, malformed, or an ND message with a hop limit not 255.
    Icmpv6Malformed,
    Icmpv6BadChecksum,
    /// ICMPv6 message the stack does not act on (or an NS for another target).
    Icmpv6Ignored,
}

impl DropReason {
    pub const COUNT: usize = 37;
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::EthernetTruncated,
        DropReason::EthernetNotForUs,
        DropReason::VlanMismatch,
        DropReason::UnknownEthertype,
        DropReason::ArpMalformed,
        DropReason::ArpIgnored,
        DropReason::Ipv4Truncated,
        DropReason::Ipv4Malformed,
        DropReason::Ipv4BadChecksum,
        DropReason::Ipv4Fragment,
        DropReason::Ipv4NotForUs,
        DropReason::Ipv4BadSource,
        DropReason::UnknownProtocol,
        DropReason::IcmpMalformed,
        DropReason::IcmpBadChecksum,
        DropReason::IcmpIgnored,
        DropReason::UdpMalformed,
        DropReason::UdpBadChecksum,
        DropReason::UdpNoSocket,
        DropReason::UdpBufferFull,
        DropReason::TcpMalformed,
        DropReason::TcpBadChecksum,
        DropReason::ReplyQueueFull,
        DropReason::NoRoute,
        DropReason::NeighborFailed,
        DropReason::TxTooBig,
        DropReason::NeighborQueueFull,
        DropReason::Ipv6Truncated,
        DropReason::Ipv6Malformed,
        DropReason::Ipv6NotForUs,
        DropReason::Ipv6BadSource,
        DropReason::Ipv6ExtHeaders,
        DropReason::Ipv6Fragment,
        DropReason::Ipv6UnknownProtocol,
        DropReason::Icmpv6Malformed,
        DropReason::Icmpv6BadChecksum,
        DropReason::Icmpv6Ignored,
    ];

    pub const fn index(self) -> usize {
        self as usize
    }

    /// A short snake_case name for `fastnet stat`.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::EthernetTruncated => "eth_truncated",
            DropReason::EthernetNotForUs => "eth_not_for_us",
            DropReason::VlanMismatch => "vlan_mismatch",
            DropReason::UnknownEthertype => "unknown_ethertype",
            DropReason::ArpMalformed => "arp_malformed",
            DropReason::ArpIgnored => "arp_ignored",
            DropReason::Ipv4Truncated => "ipv4_truncated",
            DropReason::Ipv4Malformed => "ipv4_malformed",
            DropReason::Ipv4BadChecksum => "ipv4_bad_checksum",
            DropReason::Ipv4Fragment => "ipv4_fragment",
            DropReason::Ipv4NotForUs => "ipv4_not_for_us",
            DropReason::Ipv4BadSource => "ipv4_bad_source",
            DropReason::UnknownProtocol => "unknown_protocol",
            DropReason::IcmpMalformed => "icmp_malformed",
            DropReason::IcmpBadChecksum => "icmp_bad_checksum",
            DropReason::IcmpIgnored => "icmp_ignored",
            DropReason::UdpMalformed => "udp_malformed",
            DropReason::UdpBadChecksum => "udp_bad_checksum",
            DropReason::UdpNoSocket => "udp_no_socket",
            DropReason::UdpBufferFull => "udp_buffer_full",
            DropReason::TcpMalformed => "tcp_malformed",
            DropReason::TcpBadChecksum => "tcp_bad_checksum",
            DropReason::ReplyQueueFull => "reply_queue_full",
            DropReason::NoRoute => "no_route",
            DropReason::NeighborFailed => "neighbor_failed",
            DropReason::TxTooBig => "tx_too_big",
            DropReason::NeighborQueueFull => "neighbor_queue_full",
            DropReason::Ipv6Truncated => "ipv6_truncated",
            DropReason::Ipv6Malformed => "ipv6_malformed",
            DropReason::Ipv6NotForUs => "ipv6_not_for_us",
            DropReason::Ipv6BadSource => "ipv6_bad_source",
            DropReason::Ipv6ExtHeaders => "ipv6_ext_headers",
            DropReason::Ipv6Fragment => "ipv6_fragment",
            DropReason::Ipv6UnknownProtocol => "ipv6_unknown_protocol",
            DropReason::Icmpv6Malformed => "icmpv6_malformed",
            DropReason::Icmpv6BadChecksum => "icmpv6_bad_checksum",
            DropReason::Icmpv6Ignored => "icmpv6_ignored",
        }
    }
}

/// Counters of one interface. All monotonic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Transmits the device refused (ring full); the stack retried later.
    pub tx_device_full: u64,
    pub arp_requests_sent: u64,
    pub arp_replies_sent: u64,
    pub icmp_echo_replies_sent: u64,
    pub icmp_unreachables_sent: u64,
    pub icmpv6_echo_replies_sent: u64,
    /// ICMPv6 port unreachables sent for UDP to a port without a socket.
    pub icmpv6_unreachables_sent: u64,
    /// Neighbor Advertisements sent in answer to solicitations for our addresses.
    pub nd_advertisements_sent: u64,
    /// Neighbor Solicitations sent to resolve an IPv6 next hop.
    pub nd_solicitations_sent: u64,
    pub udp_datagrams_received: u64,
    pub udp_datagrams_sent: u64,
    /// IPv4 fragments sent (UDP datagrams larger than the MTU).
    pub ipv4_fragments_sent: u64,
    /// IPv6 fragments sent (UDP datagrams larger than the MTU).
    pub ipv6_fragments_sent: u64,
    pub tcp_segments_received: u64,
    /// Frames to local addresses delivered without the device (loopback on); they
    /// count in rx/tx too.
    pub looped_frames: u64,
    pub looped_bytes: u64,
    /// Frames to local addresses handed to another stack on this host (host loopback).
    pub host_frames: u64,
    pub host_bytes: u64,
    drops: DropCounts,
}

/// One counter per drop reason (a newtype: arrays over 32 have no `Default`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct DropCounts([u64; DropReason::COUNT]);

impl Default for DropCounts {
    fn default() -> Self {
        DropCounts([0; DropReason::COUNT])
    }
}

impl Stats {
    /// Frames/packets dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops.0[reason.index()]
    }
    /// All drops, whatever the reason.
    pub fn dropped_total(&self) -> u64 {
        self.drops.0.iter().sum()
    }
    pub(crate) fn drop(&mut self, reason: DropReason) {
        self.drops.0[reason.index()] += 1;
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "rx {} frames {} bytes, tx {} frames {} bytes, tx_device_full {}",
            self.rx_frames, self.rx_bytes, self.tx_frames, self.tx_bytes, self.tx_device_full
        )?;
        writeln!(
            f,
            "arp req/rep sent {}/{}, icmp echo/unreach sent {}/{}, udp rx/tx {}/{}, tcp rx {}",
            self.arp_requests_sent,
            self.arp_replies_sent,
            self.icmp_echo_replies_sent,
            self.icmp_unreachables_sent,
            self.udp_datagrams_received,
            self.udp_datagrams_sent,
            self.tcp_segments_received
        )?;
        if self.icmpv6_echo_replies_sent + self.nd_advertisements_sent != 0 {
            writeln!(
                f,
                "icmpv6 echo sent {}, nd advertisements sent {}",
                self.icmpv6_echo_replies_sent, self.nd_advertisements_sent
            )?;
        }
        for r in DropReason::ALL {
            let n = self.dropped(r);
            if n != 0 {
                writeln!(f, "drop {}: {}", r.name(), n)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_reasons_have_distinct_indices() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{}", r.name());
        }
    }
}
