//! The contract between IP (IPv4 and IPv6, in `iface`) and the transports above it
//! (TCP, UDP, ICMP).

use core::net::IpAddr;

/// IP protocol numbers the stack carries (the discriminants are the numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum IpProtocol {
    Icmp = 1,
    Tcp = 6,
    Udp = 17,
}

impl IpProtocol {
    #[inline]
    pub const fn number(self) -> u8 {
        self as u8
    }
}

/// How a transport hands one IP packet down (IPv4 or IPv6, by the addresses' family;
/// `src` and `dst` are always of the same family).
///
/// The transport writes its header and payload with `fill`; the IP layer then fills the
/// transport checksum (TCP at offset 16, UDP at offset 6, using the pseudo-header)
/// unless the device offloads it, writes the IP and Ethernet headers, and queues the
/// frame. Fusing the checksum into the copy is the IP layer's business, not the caller's.
pub trait IpTx {
    /// Largest transport segment (header + payload) one packet to `dst` may carry.
    fn max_segment(&self, dst: IpAddr) -> usize;

    /// The TOS byte (IPv4) or traffic class (IPv6) of the next packet sent (IP_TOS,
    /// IPV6_TCLASS); every other packet gets 0. Ignored by default.
    fn set_tos(&mut self, tos: u8) {
        let _ = tos;
    }

    /// Sends one packet. Returns false, without calling `fill`, only when the device has
    /// no room now: the transport keeps the data and tries again on a later dispatch.
    /// A packet whose next hop is still being resolved is built and held by the IP layer
    /// until it resolves, and one that cannot be delivered (no route, neighbour failed)
    /// is dropped and counted: both return true, as on Linux, where the transport's own
    /// retransmission and timeouts deal with the loss.
    fn send(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
        proto: IpProtocol,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> bool;

    /// `send` for a transport that sums the payload while copying it into the frame:
    /// `fill` writes the segment and returns the folded one's-complement sum
    /// ([`crate::wire::checksum::sum`]) of its bytes from `summed_from` (an even offset)
    /// to the end, so the IP layer sums only the bytes before it (the header) instead
    /// of reading the payload again. An implementation may ignore the sum, as this
    /// default does.
    fn send_summed(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
        proto: IpProtocol,
        len: usize,
        summed_from: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> u16,
    ) -> bool {
        let _ = summed_from;
        self.send(src, dst, proto, len, &mut |b| {
            fill(b);
        })
    }
}
