//! How many queues of an interface are in use: the one count the shim, the doctor, the
//! benchmarks and the tests all go by.
//!
//! An interface has queues *allocated* (netlink's IFLA_NUM_RX_QUEUES, `ethtool -l`'s
//! "pre-set maximums") and queues *in use* (the kernel's real_num_rx_queues, "current
//! hardware settings"). AF_XDP binds only below the count in use, and the NIC spreads
//! flows only over the queues in use: a veth made by a plain `ip link add` has as many
//! allocated as there are CPUs and one in use; a NIC after `ethtool -L eth1 combined 4`
//! has 4 in use of perhaps 64.

use std::io;

/// Queue counts of one interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueCounts {
    pub rx_in_use: u32,
    pub tx_in_use: u32,
    pub rx_allocated: u32,
    pub tx_allocated: u32,
    /// Where the counts in use were read.
    pub source: QueueSource,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueSource {
    /// /sys/class/net/IF/queues (the kernel's real_num_{rx,tx}_queues exactly).
    Sysfs,
    /// ETHTOOL_GCHANNELS (`ethtool -l`'s current settings).
    Ethtool,
}

impl QueueCounts {
    /// Queues an AF_XDP socket with both rings binds to: `0..bindable()`. The kernel
    /// refuses a queue id at or above either count in use (EINVAL).
    pub fn bindable(&self) -> u32 {
        self.rx_in_use.min(self.tx_in_use).max(1)
    }

    /// Receive queues in use that a socket with both rings cannot bind (more RX than TX
    /// queues in use); frames arriving there are dropped by the steering program.
    pub fn unbindable_rx(&self) -> u32 {
        self.rx_in_use.saturating_sub(self.bindable())
    }

    /// "1 of 2 allocated", for messages.
    pub fn describe(&self) -> String {
        if self.rx_in_use == self.tx_in_use && self.rx_allocated == self.tx_allocated {
            format!(
                "{} in use of {} allocated",
                self.rx_in_use, self.rx_allocated
            )
        } else {
            format!(
                "{} RX / {} TX in use of {} / {} allocated",
                self.rx_in_use, self.tx_in_use, self.rx_allocated, self.tx_allocated
            )
        }
    }
}

/// The queue counts of interface `name` (index `ifindex`, allocated counts from
/// netlink) in the caller's network namespace.
///
/// sysfs first, when the directory really is this interface (its `ifindex` file
/// matches: a process that entered a namespace without remounting /sys sees another
/// namespace's interfaces there); else ETHTOOL_GCHANNELS, which asks the namespace the
/// calling thread is in.
pub fn read(name: &str, ifindex: u32, allocated: (u32, u32)) -> io::Result<QueueCounts> {
    let counts = |rx: u32, tx: u32, source| QueueCounts {
        rx_in_use: rx,
        tx_in_use: tx,
        rx_allocated: allocated.0.max(rx),
        tx_allocated: allocated.1.max(tx),
        source,
    };
    let dir = format!("/sys/class/net/{name}");
    let same = std::fs::read_to_string(format!("{dir}/ifindex"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        == Some(ifindex);
    if same {
        if let Ok(entries) = std::fs::read_dir(format!("{dir}/queues")) {
            let names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            let (rx, tx) = count_sysfs(names.iter().map(String::as_str));
            if rx > 0 && tx > 0 {
                return Ok(counts(rx, tx, QueueSource::Sysfs));
            }
        }
    }
    let ch = channels(name)?;
    match ch.in_use() {
        Some((rx, tx)) => Ok(counts(rx, tx, QueueSource::Ethtool)),
        None => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{name}: /sys/class/net/{name}/queues is not this namespace's and the driver reports no channel counts"),
        )),
    }
}

/// The queue counts of an interface as netlink described it.
pub fn of(link: &crate::netlink::LinkInfo) -> io::Result<QueueCounts> {
    read(
        &link.name,
        link.index,
        (link.rx_queues_allocated, link.tx_queues_allocated),
    )
}

/// (RX, TX) queue directory entries: `rx-0`, `rx-1`, `tx-0`, ...
pub fn count_sysfs<'a>(names: impl Iterator<Item = &'a str>) -> (u32, u32) {
    let mut rx = 0;
    let mut tx = 0;
    for n in names {
        if n.strip_prefix("rx-").is_some_and(is_number) {
            rx += 1;
        } else if n.strip_prefix("tx-").is_some_and(is_number) {
            tx += 1;
        }
    }
    (rx, tx)
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `struct ethtool_channels` (linux/ethtool.h).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Channels {
    pub max_rx: u32,
    pub max_tx: u32,
    pub max_other: u32,
    pub max_combined: u32,
    pub rx_count: u32,
    pub tx_count: u32,
    pub other_count: u32,
    pub combined_count: u32,
}

const ETHTOOL_GCHANNELS: u32 = 0x3c;

impl Channels {
    /// Parses the struct as the kernel wrote it (command word first).
    pub fn parse(b: &[u8; 36]) -> Channels {
        let w = |i: usize| u32::from_ne_bytes(b[4 + 4 * i..8 + 4 * i].try_into().unwrap());
        Channels {
            max_rx: w(0),
            max_tx: w(1),
            max_other: w(2),
            max_combined: w(3),
            rx_count: w(4),
            tx_count: w(5),
            other_count: w(6),
            combined_count: w(7),
        }
    }

    /// (RX, TX) queues in use: combined channels carry one of each, plus the RX-only
    /// and TX-only channels. None when the driver reports nothing.
    pub fn in_use(&self) -> Option<(u32, u32)> {
        let rx = self.combined_count + self.rx_count;
        let tx = self.combined_count + self.tx_count;
        (rx > 0 && tx > 0).then_some((rx, tx))
    }
}

/// ETHTOOL_GCHANNELS on `name`.
pub fn channels(name: &str) -> io::Result<Channels> {
    let mut b = [0u8; 36];
    b[..4].copy_from_slice(&ETHTOOL_GCHANNELS.to_ne_bytes());
    crate::sys::ethtool(name, &mut b)?;
    Ok(Channels::parse(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_entries_are_counted_by_kind() {
        let names = [
            "rx-0", "tx-0", "rx-1", "tx-1", "tx-2", "rx-x", "power", "rx-",
        ];
        assert_eq!(count_sysfs(names.into_iter()), (2, 3));
    }

    #[test]
    fn channels_in_use_add_combined_and_single() {
        let mut b = [0u8; 36];
        for (i, v) in [ETHTOOL_GCHANNELS, 2, 2, 0, 0, 1, 1, 0, 0]
            .iter()
            .enumerate()
        {
            b[4 * i..4 * i + 4].copy_from_slice(&v.to_ne_bytes());
        }
        // A default veth: 2 allocated, 1 in use.
        let veth = Channels::parse(&b);
        assert_eq!((veth.max_rx, veth.rx_count, veth.tx_count), (2, 1, 1));
        assert_eq!(veth.in_use(), Some((1, 1)));
        // A NIC after `ethtool -L eth1 combined 4`.
        let nic = Channels {
            max_combined: 64,
            combined_count: 4,
            ..Default::default()
        };
        assert_eq!(nic.in_use(), Some((4, 4)));
        assert_eq!(Channels::default().in_use(), None);
    }

    #[test]
    fn bindable_is_the_smaller_count_in_use() {
        let q = QueueCounts {
            rx_in_use: 4,
            tx_in_use: 2,
            rx_allocated: 8,
            tx_allocated: 8,
            source: QueueSource::Ethtool,
        };
        assert_eq!((q.bindable(), q.unbindable_rx()), (2, 2));
        assert_eq!(q.describe(), "4 RX / 2 TX in use of 8 / 8 allocated");
        let v = QueueCounts {
            rx_in_use: 1,
            tx_in_use: 1,
            rx_allocated: 2,
            tx_allocated: 2,
            source: QueueSource::Sysfs,
        };
        assert_eq!(v.describe(), "1 in use of 2 allocated");
    }
}
