//! `fastnet pcap [PID] -w FILE`: the fast-path frames of a running fastnet process, to a
//! pcap file. tcpdump on the interface cannot see them (XDP redirected them past the
//! kernel), so the process's shim copies them into a shared-memory ring that this
//! command creates and drains (see the `fastnet-capture` crate).

use anyhow::{bail, Context, Result};
use fastnet_capture::{capture_path, CaptureReader, CHECK_INTERVAL_US, DEFAULT_RING_BYTES};
use fastnet_stats::{live_segments, segment_path};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// pcap with nanosecond timestamps (libpcap's "nsec" magic).
const PCAP_MAGIC_NS: u32 = 0xa1b2_3c4d;
const LINKTYPE_ETHERNET: u32 = 1;

/// Writes the classic pcap format: a global header, then one record per frame.
pub struct PcapWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapWriter<W> {
    pub fn new(mut out: W, snaplen: u32) -> io::Result<Self> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&PCAP_MAGIC_NS.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes()); // version 2.4
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes()); // GMT
        h.extend_from_slice(&0u32.to_le_bytes()); // accuracy
        h.extend_from_slice(&snaplen.to_le_bytes());
        h.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter { out })
    }

    /// One frame: `data` is what was captured of a frame `orig_len` bytes long.
    pub fn write(&mut self, ts_ns: u64, orig_len: u32, data: &[u8]) -> io::Result<()> {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&((ts_ns / 1_000_000_000) as u32).to_le_bytes());
        h[4..8].copy_from_slice(&((ts_ns % 1_000_000_000) as u32).to_le_bytes());
        h[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
        h[12..16].copy_from_slice(&orig_len.to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(data)
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// What to capture and when to stop.
#[derive(Clone, Debug)]
pub struct Options {
    pub pid: Option<u32>,
    pub file: PathBuf,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    pub snaplen: u32,
    pub ring_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pid: None,
            file: PathBuf::new(),
            count: None,
            duration: None,
            snaplen: fastnet_capture::MAX_SNAPLEN,
            ring_bytes: DEFAULT_RING_BYTES,
        }
    }
}

/// The process to capture: the one named, or the only fastnet process running.
pub fn target_pid(pid: Option<u32>) -> Result<u32> {
    match pid {
        Some(p) => {
            if !Path::new(&format!("/proc/{p}")).exists() {
                bail!("process {p} does not exist: `fastnet stat` lists fastnet processes");
            }
            if !segment_path(p).exists() {
                bail!(
                    "process {p} has no fastnet fast path ({} is missing): start it with `fastnet run --iface IF -- CMD`, or pick a pid `fastnet stat` lists",
                    segment_path(p).display()
                );
            }
            Ok(p)
        }
        None => {
            let live = live_segments();
            match live.as_slice() {
                [] => bail!(
                    "no fastnet process is running: start one with `fastnet run --iface IF -- CMD`"
                ),
                [(p, _)] => Ok(*p),
                many => {
                    let pids: Vec<String> = many.iter().map(|(p, _)| p.to_string()).collect();
                    bail!(
                        "{} fastnet processes are running ({}): name one, `fastnet pcap PID -w FILE`",
                        many.len(),
                        pids.join(", ")
                    )
                }
            }
        }
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// SIGINT and SIGTERM end the capture cleanly (drain, close the file, report).
fn install_stop_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a handler that only stores to an atomic
        // (async-signal-safe); no SA_RESTART so sleeps end early.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// True while `pid` exists and is not a zombie.
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// What a capture did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub pid: u32,
    pub frames: u64,
    pub dropped: u64,
    /// Whether the process's shim ever attached to the ring.
    pub attached: bool,
    /// Whether the capture ended because the process exited.
    pub process_exited: bool,
}

/// Captures until a signal, `count` frames, `duration`, or the process's exit.
pub fn capture(opts: &Options) -> Result<Summary> {
    let pid = target_pid(opts.pid)?;
    let file = std::fs::File::create(&opts.file).with_context(|| {
        format!(
            "cannot write {} (choose a writable path with -w)",
            opts.file.display()
        )
    })?;
    let mut reader = CaptureReader::create(pid, opts.snaplen, opts.ring_bytes).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            anyhow::anyhow!("{e}")
        } else {
            anyhow::anyhow!(
                "cannot create the capture ring {} ({e}): is /dev/shm writable and are you root or the process's user?",
                capture_path(pid).display()
            )
        }
    })?;
    install_stop_handlers();
    let mut pcap = PcapWriter::new(BufWriter::with_capacity(1 << 20, file), reader.snaplen())
        .with_context(|| format!("cannot write {}", opts.file.display()))?;
    let deadline = opts.duration.map(|d| Instant::now() + d);
    let mut buf = Vec::with_capacity(reader.snaplen() as usize);
    let mut frames = 0u64;
    let mut last_liveness = Instant::now();
    let mut process_exited = false;
    let full = |n: u64| opts.count.is_some_and(|c| n >= c);
    loop {
        // Decide before draining, so what the writer put in before the stop is kept.
        let mut stop =
            STOP.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d);
        if last_liveness.elapsed() >= Duration::from_millis(100) {
            last_liveness = Instant::now();
            if !running(pid) {
                process_exited = true;
                stop = true;
            }
        }
        let mut got = 0;
        while !full(frames) {
            let Some(rec) = reader.next(&mut buf)? else {
                break;
            };
            pcap.write(rec.ts_ns, rec.orig_len, &buf)
                .with_context(|| format!("cannot write {}", opts.file.display()))?;
            frames += 1;
            got += 1;
        }
        if stop || full(frames) {
            break;
        }
        if got == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let summary = Summary {
        pid,
        frames,
        dropped: reader.dropped(),
        attached: reader.writer_pid().is_some(),
        process_exited,
    };
    drop(reader); // removes the ring: the shim detaches
    pcap.finish()
        .with_context(|| format!("cannot write {}", opts.file.display()))?;
    Ok(summary)
}

pub fn main(opts: &Options) -> Result<()> {
    let s = capture(opts)?;
    if !s.attached {
        eprintln!(
            "fastnet: process {} never attached to the capture (it attaches within {} ms of its next network activity): was it idle, or is its libfastnet.so older than this fastnet?",
            s.pid,
            CHECK_INTERVAL_US / 1000
        );
    }
    println!(
        "captured {} frames ({} dropped) to {}",
        s.frames,
        s.dropped,
        opts.file.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcap_header_and_records_are_libpcap_format() {
        let mut w = PcapWriter::new(Vec::new(), 1500).unwrap();
        w.write(1_700_000_000_123_456_789, 1514, &[0xaa; 60])
            .unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out.len(), 24 + 16 + 60);
        assert_eq!(
            &out[0..4],
            &[0x4d, 0x3c, 0xb2, 0xa1],
            "nanosecond magic, LE"
        );
        assert_eq!(&out[4..8], &[2, 0, 4, 0]);
        assert_eq!(u32::from_le_bytes(out[16..20].try_into().unwrap()), 1500);
        assert_eq!(u32::from_le_bytes(out[20..24].try_into().unwrap()), 1);
        let rec = &out[24..40];
        assert_eq!(
            u32::from_le_bytes(rec[0..4].try_into().unwrap()),
            1_700_000_000
        );
        assert_eq!(
            u32::from_le_bytes(rec[4..8].try_into().unwrap()),
            123_456_789
        );
        assert_eq!(u32::from_le_bytes(rec[8..12].try_into().unwrap()), 60);
        assert_eq!(u32::from_le_bytes(rec[12..16].try_into().unwrap()), 1514);
        assert!(out[40..].iter().all(|&b| b == 0xaa));
    }

    #[test]
    fn naming_a_process_without_fastnet_is_a_clear_error() {
        let mut plain = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let e = target_pid(Some(plain.id())).unwrap_err().to_string();
        let _ = plain.kill();
        let _ = plain.wait();
        assert!(
            e.contains("has no fastnet fast path") && e.contains("fastnet run"),
            "{e}"
        );
        let e = target_pid(Some(u32::MAX - 1)).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
    }

    /// The whole command in one process: this test process plays the fastnet process
    /// (a counters segment and a tap of its own pid) while `capture` runs in a thread.
    #[test]
    fn capture_writes_what_the_tap_recorded_and_stops_at_count() {
        let me = std::process::id();
        let _seg = fastnet_stats::StatsSegment::create(me, "test0").unwrap();
        let file = std::env::temp_dir().join(format!("fastnet-pcap-test-{me}.pcap"));
        let opts = Options {
            pid: Some(me),
            file: file.clone(),
            count: Some(5),
            duration: Some(Duration::from_secs(20)),
            snaplen: 100,
            ..Options::default()
        };
        let t = std::thread::spawn(move || capture(&opts));
        let mut tap = fastnet_capture::CaptureTap::new(me);
        let give_up = Instant::now() + Duration::from_secs(10);
        while !tap.check() {
            assert!(Instant::now() < give_up, "the capture never started");
            std::thread::sleep(Duration::from_millis(5));
        }
        let frames: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 60 + i as usize * 30]).collect();
        for (i, f) in frames.iter().enumerate() {
            let dir = if i % 2 == 0 {
                fastnet_capture::Direction::Rx
            } else {
                fastnet_capture::Direction::Tx
            };
            tap.frame(dir, f);
        }
        let s = t.join().unwrap().unwrap();
        assert_eq!((s.frames, s.dropped, s.attached), (5, 0, true));
        assert!(!tap.check(), "the tap lets go when the capture ends");
        let out = std::fs::read(&file).unwrap();
        std::fs::remove_file(&file).unwrap();
        let mut at = 24;
        for f in &frames[..5] {
            let caplen = u32::from_le_bytes(out[at + 8..at + 12].try_into().unwrap()) as usize;
            let orig = u32::from_le_bytes(out[at + 12..at + 16].try_into().unwrap()) as usize;
            assert_eq!(orig, f.len());
            assert_eq!(&out[at + 16..at + 16 + caplen], &f[..f.len().min(100)]);
            at += 16 + caplen;
        }
        assert_eq!(at, out.len(), "exactly --count records");
    }

    #[test]
    fn running_sees_this_process_and_not_a_reaped_one() {
        assert!(running(std::process::id()));
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        assert!(!running(pid));
    }
}
