//! The port-steering XDP program: assembled here, loaded with bpf(2), attached through
//! a BPF link so that it goes away with the last process holding the link.

use crate::bpf::asm::{Alu, Asm, Insn, Jmp, Reg, Size};
use crate::bpf::{self, Map, MAP_TYPE_ARRAY, MAP_TYPE_PERCPU_ARRAY, MAP_TYPE_XSKMAP};
use crate::flowmap::{FlowKey, FlowMap};
use crate::portmap::PortMap;
use crate::sys;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// XDP verdicts (`enum xdp_action`).
pub const XDP_DROP: i32 = 1;
pub const XDP_PASS: i32 = 2;
pub const XDP_REDIRECT: i32 = 4;

const HELPER_REDIRECT_MAP: i32 = 51;

/// Counter slots in the per-CPU counter array.
pub const COUNTER_PASSED: i32 = 0;
pub const COUNTER_REDIRECTED: i32 = 1;
pub const COUNTER_DROPPED_NO_XSK: i32 = 2;
pub const COUNTER_MALFORMED: i32 = 3;
const COUNTERS: u32 = 4;

/// RX queues the program redirects from (0..MAX_QUEUES); a frame on a higher queue
/// for a claimed port is dropped (counted as no XSK).
pub const MAX_QUEUES: u32 = 64;
const QUEUE_BITS: i32 = MAX_QUEUES.trailing_zeros() as i32;
/// Processes of a family (slots) the program steers to: slot 0 attached the program.
/// The XSKMAP is slot-major: index = slot * MAX_QUEUES + rx_queue.
pub const MAX_SLOTS: u32 = 64;
/// A flow map value that sends the flow to the kernel (a connection handed to a kernel
/// socket through TCP repair, on a port that stays ours). Fits a positive immediate.
pub const KERNEL_SLOT: u32 = 0xffff;

/// The program's counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpCounters {
    /// Frames left to the kernel (not ours: ARP, ICMP, ICMPv6 and ND, other ports,
    /// fragments, IPv6 with extension headers).
    pub passed: u64,
    /// Frames redirected to an XSK.
    pub redirected: u64,
    /// Frames for a claimed port that arrived on a queue with no XSK: dropped.
    pub dropped_no_xsk: u64,
    /// Truncated or inconsistent Ethernet/IPv4/IPv6/TCP/UDP headers: dropped.
    pub malformed: u64,
}

/// The map fds the program refers to.
#[derive(Clone, Copy, Debug)]
pub struct ProgramMaps {
    pub ports: i32,
    pub flows: i32,
    pub xsks: i32,
    pub counters: i32,
    /// u32 entries: the interface's queues in use (see
    /// [`XdpProgram::set_queues_in_use`]), whether IPv6 is steered
    /// ([`XdpProgram::set_ipv6_steering`]).
    pub settings: i32,
}

/// Entries of the program's `settings` array (u32 each).
pub const SETTING_QUEUES_IN_USE: u32 = 0;
/// Non-zero: IPv6 TCP/UDP to claimed ports is steered (the stack has IPv6 addresses).
pub const SETTING_IPV6: u32 = 1;
const SETTINGS: u32 = 2;

/// `::ffff` as the third word of a v4-mapped address (bytes 00 00 ff ff, stored as
/// a little-endian word).
const V4_MAPPED_WORD: i32 = i32::from_le_bytes([0, 0, 0xff, 0xff]);

/// Builds the program for these map fds.
///
/// Registers: r6 ctx, r2/r3 data/data_end, r7 the current header (then the port map
/// value), r8 lengths then the member count, the slot, the counter index, r9 the IP
/// protocol then the verdict. Stack: fp-48..-8 the flow key (see `flowmap`), fp-8 the
/// settings key then the counter index, fp-4 the port key.
///
/// IPv4 and IPv6 share everything after the IP header: one port map (a claimed port
/// is claimed for both families, as a dual-stack shadow socket reserves it), one flow
/// map (IPv4 addresses v4-mapped in its key), the same group and owner logic. IPv6
/// is steered only when TCP or UDP follows the fixed header directly; extension
/// headers (fragments included), ICMPv6 and Neighbor Discovery go to the kernel,
/// which owns ND as it owns ARP.
///
/// For a claimed port: the flow map's slot if the flow has an entry (the kernel for
/// `KERNEL_SLOT`), else a member of the listener group, else the owner slot; then the
/// XSK at `slot * MAX_QUEUES + rx_queue`, DROP (counted as no XSK) when there is none.
/// The group's member is `members[rx_queue % n]` when the group has no more members
/// than the interface has queues in use: each member then takes the new connections
/// of its own queues, so its frames and its sockets' rings are its own (the NIC's flow
/// hash already spread the flows); with more members than queues,
/// `members[group_hash % n]` (see `PortEntry::slot_for`).
pub fn assemble(maps: ProgramMaps) -> Vec<Insn> {
    use crate::flowmap::{FP_KEY, FP_LOCAL_ADDR, FP_LOCAL_PORT, FP_REMOTE_ADDR, FP_REMOTE_PORT};
    use crate::portmap::{
        GROUP_HASH_MULTIPLIER, GROUP_MAX, VALUE_COUNT, VALUE_MEMBERS, VALUE_OWNER,
    };
    use Reg::*;
    let mut a = Asm::new();
    a.mov(R6, R1)
        .load(Size::W, R2, R6, 0) // xdp_md.data
        .load(Size::W, R3, R6, 4) // xdp_md.data_end
        // Ethernet: 14 bytes, ethertype at 12 (network order, read as little-endian).
        .mov(R4, R2)
        .alu64_imm(Alu::Add, R4, 14)
        .jmp_reg(Jmp::Gt, R4, R3, "malformed")
        .load(Size::H, R5, R2, 12)
        .mov(R7, R2)
        .alu64_imm(Alu::Add, R7, 14)
        .jmp_imm(Jmp::Ne, R5, 0x0081, "not_vlan") // 0x8100: 802.1Q
        .mov(R4, R2)
        .alu64_imm(Alu::Add, R4, 18)
        .jmp_reg(Jmp::Gt, R4, R3, "malformed")
        .load(Size::H, R5, R2, 16)
        .alu64_imm(Alu::Add, R7, 4)
        .label("not_vlan")
        .jmp_imm(Jmp::Eq, R5, 0xdd86, "ipv6") // 0x86DD: IPv6
        .jmp_imm(Jmp::Ne, R5, 0x0008, "pass") // 0x0800: IPv4
        // IPv4: fixed 20 bytes first.
        .mov(R4, R7)
        .alu64_imm(Alu::Add, R4, 20)
        .jmp_reg(Jmp::Gt, R4, R3, "malformed")
        // The flow key's addresses, v4-mapped (`::ffff:` then the address as it is,
        // network order).
        .store_imm(Size::W, R10, FP_LOCAL_ADDR, 0)
        .store_imm(Size::W, R10, FP_LOCAL_ADDR + 4, 0)
        .store_imm(Size::W, R10, FP_LOCAL_ADDR + 8, V4_MAPPED_WORD)
        .load(Size::W, R4, R7, 16)
        .store(Size::W, R10, FP_LOCAL_ADDR + 12, R4)
        .store_imm(Size::W, R10, FP_REMOTE_ADDR, 0)
        .store_imm(Size::W, R10, FP_REMOTE_ADDR + 4, 0)
        .store_imm(Size::W, R10, FP_REMOTE_ADDR + 8, V4_MAPPED_WORD)
        .load(Size::W, R4, R7, 12)
        .store(Size::W, R10, FP_REMOTE_ADDR + 12, R4)
        .load(Size::B, R5, R7, 0)
        .mov(R4, R5)
        .alu64_imm(Alu::Rsh, R4, 4)
        .jmp_imm(Jmp::Ne, R4, 4, "malformed") // version
        .alu64_imm(Alu::And, R5, 0x0f)
        .jmp_imm(Jmp::Lt, R5, 5, "malformed") // IHL < 5
        .alu64_imm(Alu::Lsh, R5, 2) // header bytes, 20..60
        // Fragments (MF set or offset != 0) are the kernel's to reassemble.
        .load(Size::H, R4, R7, 6)
        .alu64_imm(Alu::And, R4, 0xff3f) // htons(0x3fff)
        .jmp_imm(Jmp::Ne, R4, 0, "pass")
        // Total length: at least the header, at most what the frame holds.
        .load(Size::H, R8, R7, 2)
        .to_be(R8, 16)
        .alu64_imm(Alu::And, R8, 0xffff) // tells the verifier the bound
        .jmp_reg(Jmp::Lt, R8, R5, "malformed")
        .mov(R4, R7)
        .alu64_reg(Alu::Add, R4, R8)
        .jmp_reg(Jmp::Gt, R4, R3, "malformed")
        .load(Size::B, R9, R7, 9) // protocol
        .alu64_reg(Alu::Sub, R8, R5) // transport bytes per the IP header
        .alu64_reg(Alu::Add, R7, R5) // transport header
        .ja("transport")
        // IPv6: the fixed 40 bytes. TCP or UDP right after them is steered like
        // IPv4; any other next header (an extension header, a fragment, ICMPv6 and
        // with it Neighbor Discovery) is the kernel's.
        .label("ipv6")
        // Only when the stack takes IPv6 (`settings[SETTING_IPV6]` non-zero): until
        // then a claimed port's IPv6 frames stay the kernel's, as before IPv6 steering.
        .store_imm(Size::W, R10, -8, SETTING_IPV6 as i32)
        .map_lookup(maps.settings, -8)
        .jmp_imm(Jmp::Eq, R0, 0, "pass")
        .load(Size::W, R4, R0, 0)
        .jmp_imm(Jmp::Eq, R4, 0, "pass")
        .load(Size::W, R3, R6, 4) // xdp_md.data_end again (the call clobbered r3)
        .mov(R4, R7)
        .alu64_imm(Alu::Add, R4, 40)
        .jmp_reg(Jmp::Gt, R4, R3, "malformed")
        .load(Size::B, R5, R7, 0)
        .alu64_imm(Alu::Rsh, R5, 4)
        .jmp_imm(Jmp::Ne, R5, 6, "malformed"); // version
                                               // Destination to the key's local address, source to its remote one.
    for (from, to) in [(24, FP_LOCAL_ADDR), (8, FP_REMOTE_ADDR)] {
        for word in [0, 4, 8, 12] {
            a.load(Size::W, R4, R7, from + word)
                .store(Size::W, R10, to + word, R4);
        }
    }
    a.load(Size::B, R9, R7, 6) // next header
        // Payload length: at most what the frame holds (0, a jumbogram, comes only
        // with a Hop-by-Hop header, which passes).
        .load(Size::H, R8, R7, 4)
        .to_be(R8, 16)
        .alu64_imm(Alu::And, R8, 0xffff)
        .alu64_imm(Alu::Add, R7, 40)
        .mov(R4, R7)
        .alu64_reg(Alu::Add, R4, R8)
        .jmp_reg(Jmp::Gt, R4, R3, "malformed")
        .label("transport")
        .jmp_imm(Jmp::Eq, R9, 17, "udp")
        .jmp_imm(Jmp::Eq, R9, 6, "tcp")
        .ja("pass")
        // UDP: 8-byte header; its length field within the IP payload.
        .label("udp")
        .jmp_imm(Jmp::Lt, R8, 8, "malformed")
        .mov(R4, R7)
        .alu64_imm(Alu::Add, R4, 8)
        .jmp_reg(Jmp::Gt, R4, R3, "malformed")
        .load(Size::H, R5, R7, 4)
        .to_be(R5, 16)
        .alu64_imm(Alu::And, R5, 0xffff)
        .jmp_imm(Jmp::Lt, R5, 8, "malformed")
        .jmp_reg(Jmp::Gt, R5, R8, "malformed")
        .ja("lookup")
        // TCP: 20-byte header; data offset within the IP payload.
        .label("tcp")
        .jmp_imm(Jmp::Lt, R8, 20, "malformed")
        .mov(R4, R7)
        .alu64_imm(Alu::Add, R4, 20)
        .jmp_reg(Jmp::Gt, R4, R3, "malformed")
        .load(Size::B, R5, R7, 12)
        .alu64_imm(Alu::Rsh, R5, 4)
        .jmp_imm(Jmp::Lt, R5, 5, "malformed")
        .alu64_imm(Alu::Lsh, R5, 2)
        .jmp_reg(Jmp::Gt, R5, R8, "malformed")
        // Port map key on the stack: [proto, 0, dport_hi, dport_lo]; the rest of the
        // flow key: [proto, 0, 0, 0] and both ports.
        .label("lookup")
        .load(Size::H, R5, R7, 2)
        .load(Size::H, R4, R7, 0)
        .store(Size::H, R10, -4, R9)
        .store(Size::H, R10, -2, R5)
        .store(Size::W, R10, FP_KEY, R9)
        .store(Size::H, R10, FP_LOCAL_PORT, R5)
        .store(Size::H, R10, FP_REMOTE_PORT, R4)
        .map_lookup(maps.ports, -4)
        .jmp_imm(Jmp::Eq, R0, 0, "pass")
        // Ours. A flow with an entry goes to its slot.
        .mov(R7, R0)
        .map_lookup(maps.flows, FP_KEY)
        .jmp_imm(Jmp::Eq, R0, 0, "no_flow")
        .load(Size::W, R8, R0, 0)
        .jmp_imm(Jmp::Eq, R8, KERNEL_SLOT as i32, "pass")
        .ja("redirect")
        // Else the listener group, else the owner.
        .label("no_flow")
        .load(Size::W, R8, R7, VALUE_COUNT)
        .jmp_imm(Jmp::Eq, R8, 0, "owner")
        .jmp_imm(Jmp::Gt, R8, GROUP_MAX as i32, "owner") // never written so
        // By queue when n <= the queues in use (0 until written: by hash).
        .store_imm(Size::W, R10, -8, 0)
        .map_lookup(maps.settings, -8)
        .jmp_imm(Jmp::Eq, R0, 0, "by_hash")
        .load(Size::W, R3, R0, 0)
        .jmp_reg(Jmp::Gt, R8, R3, "by_hash")
        .load(Size::W, R2, R6, 16) // xdp_md.rx_queue_index
        .ja("member")
        // h = high 16 bits of (addr ^ port ^ port << 16) * GROUP_HASH_MULTIPLIER (u32),
        // addr the XOR of the remote address's four words (v4-mapped for IPv4),
        // exactly `portmap::group_hash`.
        .label("by_hash")
        .load(Size::W, R2, R10, FP_REMOTE_ADDR)
        .load(Size::W, R4, R10, FP_REMOTE_ADDR + 4)
        .alu64_reg(Alu::Xor, R2, R4)
        .load(Size::W, R4, R10, FP_REMOTE_ADDR + 8)
        .alu64_reg(Alu::Xor, R2, R4)
        .load(Size::W, R4, R10, FP_REMOTE_ADDR + 12)
        .alu64_reg(Alu::Xor, R2, R4)
        .load(Size::H, R3, R10, FP_REMOTE_PORT)
        .alu64_reg(Alu::Xor, R2, R3)
        .alu64_imm(Alu::Lsh, R3, 16)
        .alu64_reg(Alu::Xor, R2, R3)
        // The sign-extended immediate changes only bits above 31 of the product.
        .alu64_imm(Alu::Mul, R2, GROUP_HASH_MULTIPLIER as i32)
        .alu64_imm(Alu::Lsh, R2, 32)
        .alu64_imm(Alu::Rsh, R2, 48)
        .label("member")
        .alu64_reg(Alu::Mod, R2, R8)
        // n <= GROUP_MAX (a power of two), so the mask keeps the index and shows the
        // verifier it stays inside the value.
        .alu64_imm(Alu::And, R2, GROUP_MAX as i32 - 1)
        .alu64_imm(Alu::Lsh, R2, 2)
        .mov(R3, R7)
        .alu64_reg(Alu::Add, R3, R2)
        .load(Size::W, R8, R3, VALUE_MEMBERS)
        .ja("redirect")
        .label("owner")
        .load(Size::W, R8, R7, VALUE_OWNER)
        // XSKMAP[slot * MAX_QUEUES + rx_queue]; with no XSK there, the flags' action
        // (DROP) is returned, never PASS (the shadow socket would answer RST).
        .label("redirect")
        .load(Size::W, R2, R6, 16) // xdp_md.rx_queue_index
        .jmp_imm(Jmp::Ge, R2, MAX_QUEUES as i32, "no_xsk")
        .jmp_imm(Jmp::Ge, R8, MAX_SLOTS as i32, "no_xsk")
        .alu64_imm(Alu::Lsh, R8, QUEUE_BITS)
        .alu64_reg(Alu::Add, R2, R8)
        .load_map_fd(R1, maps.xsks)
        .mov_imm(R3, XDP_DROP)
        .call(HELPER_REDIRECT_MAP)
        .mov(R9, R0)
        .mov_imm(R8, COUNTER_REDIRECTED)
        .jmp_imm(Jmp::Eq, R0, XDP_REDIRECT, "count")
        .label("no_xsk")
        .mov_imm(R9, XDP_DROP)
        .mov_imm(R8, COUNTER_DROPPED_NO_XSK)
        .ja("count")
        .label("pass")
        .mov_imm(R9, XDP_PASS)
        .mov_imm(R8, COUNTER_PASSED)
        .ja("count")
        .label("malformed")
        .mov_imm(R9, XDP_DROP)
        .mov_imm(R8, COUNTER_MALFORMED)
        // counters[r8] += 1 (per-CPU slot: no atomics needed)
        .label("count")
        .store(Size::W, R10, -8, R8)
        .map_lookup(maps.counters, -8)
        .jmp_imm(Jmp::Eq, R0, 0, "out")
        .load(Size::DW, R1, R0, 0)
        .alu64_imm(Alu::Add, R1, 1)
        .store(Size::DW, R0, 0, R1)
        .label("out")
        .mov(R0, R9)
        .exit();
    a.finish().expect("steering program labels")
}

/// The XSKMAP index of `slot`'s socket on `queue`.
pub const fn xsk_index(slot: u32, queue: u32) -> u32 {
    slot * MAX_QUEUES + queue
}

/// How the program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (veth supports it; caps the MTU near one page).
    Native,
    /// In the generic (skb) path: works everywhere, slower.
    Generic,
}

impl AttachMode {
    fn flags(self) -> u32 {
        match self {
            AttachMode::Native => bpf::XDP_FLAGS_DRV_MODE,
            AttachMode::Generic => bpf::XDP_FLAGS_SKB_MODE,
        }
    }
}

/// The loaded program with its maps. Attach it with [`XdpProgram::attach`]; it
/// detaches when the link fd closes (drop, exit, or kill -9).
pub struct XdpProgram {
    prog: OwnedFd,
    port_map: PortMap,
    flow_map: FlowMap,
    xsk_map: Map,
    counters: Map,
    settings: Map,
    link: Option<(OwnedFd, AttachMode, u32)>,
    cpus: usize,
}

impl XdpProgram {
    /// Creates the maps and loads the program (not attached yet).
    pub fn load() -> io::Result<XdpProgram> {
        let port_map = PortMap::create()?;
        let flow_map = FlowMap::create()?;
        let xsk_map = Map::create(
            MAP_TYPE_XSKMAP,
            4,
            4,
            MAX_SLOTS * MAX_QUEUES,
            "fastnet_xsks",
        )?;
        let counters = Map::create(MAP_TYPE_PERCPU_ARRAY, 4, 8, COUNTERS, "fastnet_cnt")?;
        let settings = Map::create(MAP_TYPE_ARRAY, 4, 4, SETTINGS, "fastnet_set")?;
        let insns = assemble(ProgramMaps {
            ports: port_map.raw_fd(),
            flows: flow_map.raw_fd(),
            xsks: xsk_map.raw_fd(),
            counters: counters.raw_fd(),
            settings: settings.raw_fd(),
        });
        let prog = bpf::load_xdp_program(&insns, "fastnet_steer")?;
        Ok(XdpProgram {
            prog,
            port_map,
            flow_map,
            xsk_map,
            counters,
            settings,
            link: None,
            cpus: sys::possible_cpus()?,
        })
    }

    /// The same program, maps and link through new (close-on-exec) fds: what a
    /// process of the family that did not attach the program holds. Its link fd keeps
    /// the program attached as long as any holder lives.
    pub fn try_clone(&self) -> io::Result<XdpProgram> {
        Ok(XdpProgram {
            prog: sys::dup_cloexec(self.prog.as_raw_fd())?,
            port_map: self.port_map.try_clone()?,
            flow_map: self.flow_map.try_clone()?,
            xsk_map: self.xsk_map.try_clone()?,
            counters: self.counters.try_clone()?,
            settings: self.settings.try_clone()?,
            link: match &self.link {
                Some((fd, mode, ifindex)) => {
                    Some((sys::dup_cloexec(fd.as_raw_fd())?, *mode, *ifindex))
                }
                None => None,
            },
            cpus: self.cpus,
        })
    }

    /// Attaches to `ifindex` through a BPF link. `None` tries native, then generic.
    pub fn attach(&mut self, ifindex: u32, mode: Option<AttachMode>) -> io::Result<AttachMode> {
        if self.link.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "already attached",
            ));
        }
        let modes: &[AttachMode] = match mode {
            Some(AttachMode::Native) => &[AttachMode::Native],
            Some(AttachMode::Generic) => &[AttachMode::Generic],
            None => &[AttachMode::Native, AttachMode::Generic],
        };
        let mut last = None;
        for &m in modes {
            match bpf::create_xdp_link(self.prog.as_fd(), ifindex, m.flags()) {
                Ok(link) => {
                    self.link = Some((link, m, ifindex));
                    return Ok(m);
                }
                Err(e) => last = Some(e),
            }
        }
        // The OS error as it is (callers tell EEXIST and EPERM apart by its number).
        Err(last.expect("at least one mode"))
    }

    /// Detaches now (closing the link).
    pub fn detach(&mut self) {
        self.link = None;
    }

    pub fn attach_mode(&self) -> Option<AttachMode> {
        self.link.as_ref().map(|l| l.1)
    }

    pub fn port_map(&self) -> &PortMap {
        &self.port_map
    }

    pub fn flow_map(&self) -> &FlowMap {
        &self.flow_map
    }

    /// Sends `flow`'s frames to `slot` (see [`FlowMap::steer`]).
    pub fn steer_flow(&self, flow: &FlowKey, slot: u32) -> io::Result<()> {
        self.flow_map.steer(flow, slot)
    }

    /// Removes `flow`'s entry; false when it had none.
    pub fn unsteer_flow(&self, flow: &FlowKey) -> io::Result<bool> {
        self.flow_map.unsteer(flow)
    }

    /// Sends frames of `queue` (claimed ports) to this XSK (slot 0's).
    pub fn register_xsk(&self, queue: u32, xsk_fd: RawFd) -> io::Result<()> {
        self.register_slot_xsk(0, queue, xsk_fd)
    }

    /// Removes slot 0's XSK of `queue`: frames for slot 0 there are dropped from now on.
    pub fn unregister_xsk(&self, queue: u32) -> io::Result<bool> {
        self.unregister_slot_xsk(0, queue)
    }

    fn xsk_key(slot: u32, queue: u32) -> io::Result<[u8; 4]> {
        if slot >= MAX_SLOTS || queue >= MAX_QUEUES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("slot {slot} / queue {queue} not below {MAX_SLOTS} / {MAX_QUEUES}"),
            ));
        }
        Ok(xsk_index(slot, queue).to_ne_bytes())
    }

    /// Sends frames for `slot` that arrive on `queue` to this XSK.
    pub fn register_slot_xsk(&self, slot: u32, queue: u32, xsk_fd: RawFd) -> io::Result<()> {
        self.xsk_map
            .update(&Self::xsk_key(slot, queue)?, &(xsk_fd as u32).to_ne_bytes())
    }

    /// Removes `slot`'s XSK of `queue`; false when there was none.
    pub fn unregister_slot_xsk(&self, slot: u32, queue: u32) -> io::Result<bool> {
        self.xsk_map.delete(&Self::xsk_key(slot, queue)?)
    }

    /// Tells the program how many RX queues of the interface are in use: a listener
    /// group with no more members than that takes new connections by queue (see
    /// [`assemble`]). Written by the process that attached, again when the count
    /// changes.
    pub fn set_queues_in_use(&self, n: u32) -> io::Result<()> {
        self.set_setting(SETTING_QUEUES_IN_USE, n)
    }

    /// What [`XdpProgram::set_queues_in_use`] wrote last (0: never).
    pub fn queues_in_use(&self) -> io::Result<u32> {
        self.setting(SETTING_QUEUES_IN_USE)
    }

    /// Steers IPv6 TCP/UDP to claimed ports (on) or leaves it to the kernel (off, the
    /// default): turned on by a process whose stack has the interface's IPv6
    /// addresses, so a port claimed by a process that cannot serve IPv6 does not take
    /// its IPv6 frames from the kernel.
    pub fn set_ipv6_steering(&self, on: bool) -> io::Result<()> {
        self.set_setting(SETTING_IPV6, on as u32)
    }

    /// Whether IPv6 is steered (see [`XdpProgram::set_ipv6_steering`]).
    pub fn ipv6_steering(&self) -> io::Result<bool> {
        Ok(self.setting(SETTING_IPV6)? != 0)
    }

    fn set_setting(&self, key: u32, value: u32) -> io::Result<()> {
        self.settings
            .update(&key.to_ne_bytes(), &value.to_ne_bytes())
    }

    fn setting(&self, key: u32) -> io::Result<u32> {
        let mut v = [0u8; 4];
        self.settings.lookup(&key.to_ne_bytes(), &mut v)?;
        Ok(u32::from_ne_bytes(v))
    }

    pub fn counters(&self) -> io::Result<XdpCounters> {
        let slot = |i: i32| -> io::Result<u64> {
            let mut buf = vec![0u8; 8 * self.cpus];
            self.counters.lookup(&(i as u32).to_ne_bytes(), &mut buf)?;
            Ok(buf
                .chunks_exact(8)
                .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
                .sum())
        };
        Ok(XdpCounters {
            passed: slot(COUNTER_PASSED)?,
            redirected: slot(COUNTER_REDIRECTED)?,
            dropped_no_xsk: slot(COUNTER_DROPPED_NO_XSK)?,
            malformed: slot(COUNTER_MALFORMED)?,
        })
    }

    /// Runs the program once on `frame` in the kernel (BPF_PROG_TEST_RUN, RX queue 0)
    /// and returns its verdict; counters count it like a received frame.
    pub fn test_run(&self, frame: &[u8]) -> io::Result<u32> {
        bpf::test_run_xdp(self.prog.as_fd(), frame)
    }

    pub fn prog_fd(&self) -> BorrowedFd<'_> {
        self.prog.as_fd()
    }

    /// The link fd, if attached (close-on-exec; a forked child holds a copy).
    pub fn link_fd(&self) -> Option<BorrowedFd<'_>> {
        self.link.as_ref().map(|l| l.0.as_fd())
    }

    /// Raw fds this object owns, for fork handling and close_range protection.
    pub fn raw_fds(&self) -> Vec<RawFd> {
        let mut v = vec![
            self.prog.as_raw_fd(),
            self.port_map.raw_fd(),
            self.flow_map.raw_fd(),
            self.xsk_map.raw_fd(),
            self.counters.raw_fd(),
            self.settings.raw_fd(),
        ];
        if let Some(l) = &self.link {
            v.push(l.0.as_raw_fd());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_references_each_map_and_ends_in_exit() {
        let p = assemble(ProgramMaps {
            ports: 11,
            flows: 12,
            xsks: 13,
            counters: 14,
            settings: 15,
        });
        let map_loads: Vec<i32> = p.iter().filter(|i| i.code == 0x18).map(|i| i.imm).collect();
        assert_eq!(map_loads, vec![15, 11, 12, 15, 13, 14]);
        assert!(p.iter().all(|i| i.code != 0x18 || i.src == 1));
        assert_eq!(p.last().unwrap().code, 0x95);
        // Every jump lands inside the program.
        for (at, i) in p.iter().enumerate() {
            let class = i.code & 7;
            let op = i.code & 0xf0;
            if class == 5 && op != 0x80 && op != 0x90 {
                let target = at as i64 + 1 + i.off as i64;
                assert!((0..p.len() as i64).contains(&target), "jump at {at}");
            }
        }
        // The redirect's fallback action is DROP: `r3 = 1` right before call 51.
        let call = p
            .iter()
            .position(|i| i.code == 0x85 && i.imm == 51)
            .unwrap();
        assert_eq!(p[call - 1].code, 0xb7);
        assert_eq!(p[call - 1].dst, 3);
        assert_eq!(p[call - 1].imm, XDP_DROP);
    }
}
