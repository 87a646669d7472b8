//! The shim's configuration, read once from `FASTNET_*` environment variables at load.
//!
//! A bad value never stops the app: it is reported in one line naming the variable and
//! what it accepts, and the default is used instead.

use std::fmt;

/// How the app's thread waits for the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollMode {
    /// Spin on the rings (up to the spin budget) before sleeping: best latency.
    Busy,
    /// Sleep in the kernel (poll on the XSK fd) as soon as nothing is ready.
    Block,
}

/// Whether loopback traffic between this process's own sockets takes the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopbackMode {
    Off,
    Process,
    /// `Process`, and TCP over loopback with other fastnet processes in this mode
    /// through shared memory (see `hostlo`).
    Host,
}

/// Where the XDP program attaches (`FASTNET_XDP_MODE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver where it can (veth can), else in the generic (skb) path.
    Auto,
    Native,
    /// The generic path even where the driver has XDP. On veth, with both ends under
    /// fastnet, bulk runs faster this way (docs/PERFORMANCE.md); a peer that sends
    /// GSO frames must have them off (the topology's `tx off` does it).
    Generic,
}

/// How much the shim logs (always to stderr or `FASTNET_LOG_FILE`, never to stdout).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Off,
    Warn,
    Info,
    Debug,
    /// Debug plus one line per socket call.
    Trace,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The fast-path interface; `None` keeps every socket on the kernel.
    pub iface: Option<String>,
    pub poll: PollMode,
    /// Busy mode: how long to spin before sleeping.
    pub spin_us: u32,
    /// How long exit waits for written data to be delivered.
    pub linger_ms: u32,
    /// At exit, connections with data or a FIN still to deliver become kernel sockets
    /// (TCP repair) instead of lingering (`FASTNET_HANDOFF`).
    pub handoff_at_exit: bool,
    /// TCP socket slots of the stack (`FASTNET_MAX_SOCKETS`); beyond, new connections
    /// go to the kernel.
    pub max_sockets: usize,
    pub loopback: LoopbackMode,
    /// Print the counters to the log at exit.
    pub stats_at_exit: bool,
    pub xdp_mode: XdpMode,
    pub log: LogLevel,
    pub log_file: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            iface: None,
            poll: PollMode::Block,
            spin_us: 50,
            linger_ms: 2000,
            handoff_at_exit: true,
            max_sockets: 8192,
            loopback: LoopbackMode::Off,
            stats_at_exit: false,
            xdp_mode: XdpMode::Auto,
            log: LogLevel::Warn,
            log_file: None,
        }
    }
}

/// One rejected variable: printed as a single line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={:?} is not valid: expected {}; using the default",
            self.var, self.value, self.expected
        )
    }
}

/// The variables, their accepted values and defaults (the README's table is this one).
pub const VARIABLES: &[(&str, &str, &str)] = &[
    (
        "FASTNET_IFACE",
        "interface name",
        "none: every socket stays on the kernel",
    ),
    ("FASTNET_POLL", "busy | block", "block"),
    ("FASTNET_SPIN_US", "microseconds to spin in busy mode", "50"),
    (
        "FASTNET_LINGER",
        "milliseconds exit waits for unsent data",
        "2000",
    ),
    ("FASTNET_LOOPBACK", "off | process | host", "off"),
    ("FASTNET_STATS", "0 | 1: print counters at exit", "0"),
    (
        "FASTNET_XDP_MODE",
        "auto | native | generic: where the XDP program attaches",
        "auto",
    ),
    ("FASTNET_LOG", "off | warn | info | debug | trace", "warn"),
    ("FASTNET_LOG_FILE", "path of the log", "stderr"),
];

impl Config {
    /// Reads the configuration through `get` (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> (Config, Vec<ConfigError>) {
        let mut c = Config::default();
        let mut errors = Vec::new();
        let mut bad = |var: &'static str, value: &str, expected: &'static str| {
            errors.push(ConfigError {
                var,
                value: value.to_string(),
                expected,
            })
        };
        if let Some(v) = get("FASTNET_IFACE").filter(|v| !v.is_empty()) {
            if v.len() < 16 && !v.contains(['/', ' ']) {
                c.iface = Some(v);
            } else {
                bad("FASTNET_IFACE", &v, "an interface name (at most 15 bytes)");
            }
        }
        if let Some(v) = get("FASTNET_POLL") {
            match v.as_str() {
                "busy" => c.poll = PollMode::Busy,
                "block" => c.poll = PollMode::Block,
                _ => bad("FASTNET_POLL", &v, "busy or block"),
            }
        }
        if let Some(v) = get("FASTNET_SPIN_US") {
            match v.parse() {
                Ok(n) => c.spin_us = n,
                Err(_) => bad("FASTNET_SPIN_US", &v, "a number of microseconds"),
            }
        }
        if let Some(v) = get("FASTNET_LINGER") {
            match v.parse() {
                Ok(n) => c.linger_ms = n,
                Err(_) => bad("FASTNET_LINGER", &v, "a number of milliseconds"),
            }
        }
        if let Some(v) = get("FASTNET_HANDOFF") {
            match v.as_str() {
                "off" => c.handoff_at_exit = false,
                "exit" => c.handoff_at_exit = true,
                _ => bad("FASTNET_HANDOFF", &v, "exit or off"),
            }
        }
        if let Some(v) = get("FASTNET_MAX_SOCKETS") {
            match v.parse() {
                Ok(n) if (2..=1 << 20).contains(&n) => c.max_sockets = n,
                _ => bad(
                    "FASTNET_MAX_SOCKETS",
                    &v,
                    "a number of sockets from 2 to 1048576",
                ),
            }
        }
        if let Some(v) = get("FASTNET_LOOPBACK") {
            match v.as_str() {
                "off" => c.loopback = LoopbackMode::Off,
                "process" => c.loopback = LoopbackMode::Process,
                "host" => c.loopback = LoopbackMode::Host,
                _ => bad("FASTNET_LOOPBACK", &v, "off, process or host"),
            }
        }
        if let Some(v) = get("FASTNET_STATS") {
            match v.as_str() {
                "0" | "" => c.stats_at_exit = false,
                "1" => c.stats_at_exit = true,
                _ => bad("FASTNET_STATS", &v, "0 or 1"),
            }
        }
        if let Some(v) = get("FASTNET_XDP_MODE") {
            match v.as_str() {
                "auto" => c.xdp_mode = XdpMode::Auto,
                "native" => c.xdp_mode = XdpMode::Native,
                "generic" => c.xdp_mode = XdpMode::Generic,
                _ => bad("FASTNET_XDP_MODE", &v, "auto, native or generic"),
            }
        }
        if let Some(v) = get("FASTNET_LOG") {
            c.log = match v.as_str() {
                "off" | "0" => LogLevel::Off,
                "warn" => LogLevel::Warn,
                "info" | "1" => LogLevel::Info,
                "debug" => LogLevel::Debug,
                "trace" => LogLevel::Trace,
                _ => {
                    bad("FASTNET_LOG", &v, "off, warn, info, debug or trace");
                    c.log
                }
            };
        }
        c.log_file = get("FASTNET_LOG_FILE").filter(|v| !v.is_empty());
        (c, errors)
    }

    /// True when the socket layer takes calls at all: an interface or a loopback mode is
    /// named. Otherwise every socket stays on the kernel and nothing needs the hook.
    pub fn routes_sockets(&self) -> bool {
        self.iface.is_some() || self.loopback != LoopbackMode::Off
    }

    pub fn from_env() -> (Config, Vec<ConfigError>) {
        Config::from_lookup(|k| std::env::var(k).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> (Config, Vec<ConfigError>) {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_when_unset() {
        let (c, e) = parse(&[]);
        assert_eq!(c, Config::default());
        assert!(e.is_empty());
        assert_eq!(
            c.iface, None,
            "no interface named: everything stays on the kernel"
        );
    }

    #[test]
    fn every_variable_parses() {
        let (c, e) = parse(&[
            ("FASTNET_IFACE", "veth0"),
            ("FASTNET_POLL", "busy"),
            ("FASTNET_SPIN_US", "200"),
            ("FASTNET_LINGER", "500"),
            ("FASTNET_LOOPBACK", "process"),
            ("FASTNET_STATS", "1"),
            ("FASTNET_XDP_MODE", "generic"),
            ("FASTNET_LOG", "debug"),
            ("FASTNET_LOG_FILE", "/tmp/x.log"),
        ]);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(c.iface.as_deref(), Some("veth0"));
        assert_eq!(c.poll, PollMode::Busy);
        assert_eq!(c.spin_us, 200);
        assert_eq!(c.linger_ms, 500);
        assert_eq!(c.loopback, LoopbackMode::Process);
        assert!(c.stats_at_exit);
        assert_eq!(c.xdp_mode, XdpMode::Generic);
        assert_eq!(c.log, LogLevel::Debug);
        assert_eq!(c.log_file.as_deref(), Some("/tmp/x.log"));
    }

    #[test]
    fn bad_values_are_reported_and_defaulted() {
        let (c, e) = parse(&[
            ("FASTNET_POLL", "fast"),
            ("FASTNET_LINGER", "-1"),
            ("FASTNET_IFACE", "a-name-that-is-far-too-long"),
            ("FASTNET_LOG", "loud"),
            ("FASTNET_XDP_MODE", "skb"),
        ]);
        assert_eq!(c.poll, PollMode::Block);
        assert_eq!(c.linger_ms, 2000);
        assert_eq!(c.iface, None);
        assert_eq!(c.log, LogLevel::Warn);
        assert_eq!(c.xdp_mode, XdpMode::Auto);
        let vars: Vec<_> = e.iter().map(|e| e.var).collect();
        assert_eq!(
            vars,
            [
                "FASTNET_IFACE",
                "FASTNET_POLL",
                "FASTNET_LINGER",
                "FASTNET_XDP_MODE",
                "FASTNET_LOG"
            ]
        );
        assert_eq!(
            e[1].to_string(),
            "FASTNET_POLL=\"fast\" is not valid: expected busy or block; using the default"
        );
    }

    #[test]
    fn variables_table_names_every_variable() {
        let names: Vec<_> = VARIABLES.iter().map(|v| v.0).collect();
        for v in [
            "FASTNET_IFACE",
            "FASTNET_POLL",
            "FASTNET_SPIN_US",
            "FASTNET_LINGER",
            "FASTNET_LOOPBACK",
            "FASTNET_STATS",
            "FASTNET_XDP_MODE",
            "FASTNET_LOG",
            "FASTNET_LOG_FILE",
        ] {
            assert!(names.contains(&v), "{v} missing from VARIABLES");
        }
    }
}
