use super::*;
use stack::device::{Device, QueueDevice};
use stack::time::Instant;
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "fastnet-capture-test-{}-{name}.capture",
        std::process::id()
    ))
}

/// A frame whose bytes say which frame it is.
fn frame(n: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(n) as u8)
        .collect()
}

fn attached(name: &str, snaplen: u32) -> (CaptureReader, CaptureTap) {
    let path = tmp(name);
    let reader = CaptureReader::create_at(path.clone(), snaplen, MIN_RING_BYTES).unwrap();
    let mut tap = CaptureTap::at(path);
    assert!(tap.check(), "the tap attaches to a fresh segment");
    (reader, tap)
}

#[test]
fn frames_go_through_with_direction_length_and_time() {
    let (mut r, mut tap) = attached("roundtrip", 100);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let (a, b) = (frame(1, 60), frame(2, 1514));
    tap.frame(Direction::Rx, &a);
    tap.frame(Direction::Tx, &b);
    assert_eq!(r.writer_pid(), Some(std::process::id()));
    let mut buf = Vec::new();
    let first = r.next(&mut buf).unwrap().expect("first record");
    assert_eq!(first.direction, Direction::Rx);
    assert_eq!(first.orig_len, 60);
    assert_eq!(buf, a);
    assert!(first.ts_ns >= before && first.ts_ns < before + 10_000_000_000);
    let second = r.next(&mut buf).unwrap().expect("second record");
    assert_eq!(second.direction, Direction::Tx);
    assert_eq!(second.orig_len, 1514, "original length kept");
    assert_eq!(buf, b[..100], "cut at the snap length");
    assert!(second.ts_ns >= first.ts_ns);
    assert_eq!(r.next(&mut buf).unwrap(), None);
    assert_eq!(r.dropped(), 0);
}

#[test]
fn records_wrap_around_the_ring_intact() {
    let (mut r, mut tap) = attached("wrap", MAX_SNAPLEN);
    let mut buf = Vec::new();
    let mut written = 0u64;
    // Odd sizes so records straddle the end of the ring at varying offsets, headers
    // included; a few batches per lap so reader and writer interleave.
    for n in 0..3000u32 {
        let f = frame(n, 997 + (n as usize * 131) % 9000);
        written += f.len() as u64;
        tap.frame(Direction::Rx, &f);
        if n % 7 == 6 {
            for m in n - 6..=n {
                let rec = r.next(&mut buf).unwrap().expect("record");
                assert_eq!(buf, frame(m, 997 + (m as usize * 131) % 9000), "frame {m}");
                assert_eq!(rec.orig_len as usize, buf.len());
            }
        }
    }
    while r.next(&mut buf).unwrap().is_some() {}
    assert!(
        written > 8 * r.ring_bytes(),
        "went around several times: {written}"
    );
    assert_eq!(r.dropped(), 0);
}

#[test]
fn a_full_ring_counts_drops_and_recovers() {
    let (mut r, mut tap) = attached("overflow", 2048);
    let f = frame(9, 2000);
    let per_record = 2024u64; // 24-byte record header + 2000, 8-aligned
    let fit = r.ring_bytes() / per_record;
    for _ in 0..fit + 50 {
        tap.frame(Direction::Tx, &f);
    }
    assert_eq!(r.dropped(), 50, "the records that did not fit");
    let mut buf = Vec::new();
    let mut got = 0;
    while r.next(&mut buf).unwrap().is_some() {
        assert_eq!(buf, f);
        got += 1;
    }
    assert_eq!(got, fit);
    tap.frame(Direction::Tx, &f);
    assert!(r.next(&mut buf).unwrap().is_some(), "room again once read");
    assert_eq!(r.dropped(), 50);
}

#[test]
fn the_tap_detaches_when_the_reader_goes_and_follows_a_new_one() {
    let path = tmp("gone");
    let (r, mut tap) = attached("gone", 1500);
    drop(r);
    assert!(!path.exists(), "the reader removes its segment");
    assert!(!tap.check(), "detached");
    tap.frame(Direction::Rx, &frame(1, 64)); // nothing to write to: no effect

    // A new reader: attach again, and detach when it only clears the flag.
    let mut r = CaptureReader::create_at(path.clone(), 1500, MIN_RING_BYTES).unwrap();
    assert!(tap.check());
    tap.frame(Direction::Rx, &frame(2, 64));
    let mut buf = Vec::new();
    assert!(r.next(&mut buf).unwrap().is_some());
    // A third reader replacing the file: the tap moves to the new file.
    std::mem::forget(r); // as if its process died without cleaning up...
    let mut r3 = CaptureReader::create_at(path.clone(), 1500, MIN_RING_BYTES);
    assert!(
        r3.as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::AlreadyExists),
        "...but it is alive (this process): refused"
    );
    std::fs::remove_file(&path).unwrap();
    r3 = CaptureReader::create_at(path.clone(), 1500, MIN_RING_BYTES);
    let mut r3 = r3.unwrap();
    assert!(tap.check(), "follows the new segment");
    tap.frame(Direction::Tx, &frame(3, 64));
    let rec = r3.next(&mut buf).unwrap().expect("in the new ring");
    assert_eq!((rec.direction, buf.clone()), (Direction::Tx, frame(3, 64)));
    drop(r3);
    assert!(!tap.check());
}

#[test]
fn a_dead_readers_segment_is_left_and_removed() {
    let path = tmp("dead");
    let (r, mut tap) = attached("dead", 1500);
    // Make the segment say its reader is a process that has exited.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let off = std::mem::offset_of!(layout::Header, reader_pid) as u64;
        f.write_all_at(&(dead as u64).to_le_bytes(), off).unwrap();
    }
    std::mem::forget(r);
    assert!(!tap.check(), "detached from a dead reader");
    assert!(!path.exists(), "and its segment removed");
    // A new reader is not refused by a dead one's segment either.
    std::fs::write(&path, b"junk").unwrap();
    let r = CaptureReader::create_at(path.clone(), 1500, MIN_RING_BYTES).unwrap();
    assert!(tap.check());
    drop(r);
}

#[test]
fn maybe_attach_looks_at_most_every_interval() {
    let path = tmp("interval");
    let mut tap = CaptureTap::at(path.clone());
    tap.maybe_attach(Instant::from_micros(1_000));
    assert!(!tap.is_active());
    let r = CaptureReader::create_at(path, 1500, MIN_RING_BYTES).unwrap();
    tap.maybe_attach(Instant::from_micros(1_000 + CHECK_INTERVAL_US - 1));
    assert!(!tap.is_active(), "not looked again yet");
    tap.maybe_attach(Instant::from_micros(1_000 + CHECK_INTERVAL_US));
    assert!(tap.is_active());
    drop(r);
    tap.maybe_attach(Instant::from_micros(1_000 + 2 * CHECK_INTERVAL_US));
    assert!(!tap.is_active());
}

#[test]
fn garbage_segments_are_not_attached() {
    let path = tmp("garbage");
    std::fs::write(&path, vec![0xa5u8; 4096 + (1 << 20)]).unwrap();
    let mut tap = CaptureTap::at(path.clone());
    assert!(!tap.check());
    std::fs::remove_file(&path).unwrap();
    assert!(
        CaptureReader::create_at(path, 0, MIN_RING_BYTES).is_err(),
        "snaplen 0"
    );
}

#[test]
fn the_tapped_device_records_transmitted_frames_only_while_active() {
    let path = tmp("device");
    let mut tap = CaptureTap::at(path.clone());
    let mut dev = QueueDevice::new(1500);
    let payload = frame(5, 300);
    let mut fill = |b: &mut [u8]| b.copy_from_slice(&payload);
    assert!(TappedDevice::new(&mut dev, &mut tap).transmit(300, &mut fill));
    let mut r = CaptureReader::create_at(path, 1500, MIN_RING_BYTES).unwrap();
    assert!(tap.check());
    let mut tapped = TappedDevice::new(&mut dev, &mut tap);
    assert_eq!(tapped.caps().mtu, 1500);
    assert!(tapped.transmit(300, &mut fill));
    dev.limit = Some(2);
    assert!(
        !TappedDevice::new(&mut dev, &mut tap).transmit(300, &mut fill),
        "a refused frame is not recorded"
    );
    assert_eq!(dev.frames.len(), 2);
    assert!(dev.frames.iter().all(|f| f == &payload));
    let mut buf = Vec::new();
    let rec = r
        .next(&mut buf)
        .unwrap()
        .expect("the frame sent while active");
    assert_eq!((rec.direction, &buf), (Direction::Tx, &payload));
    assert_eq!(
        r.next(&mut buf).unwrap(),
        None,
        "nothing from before the capture"
    );
}

#[test]
fn the_segment_belongs_to_the_captured_processs_user_only() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let path = tmp("owner");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let owner = if root { (65534, 65534) } else { (0, 0) };
    let r = CaptureReader::create_owned(path.clone(), 1500, MIN_RING_BYTES, Some(owner)).unwrap();
    let m = std::fs::metadata(&path).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
    if root {
        assert_eq!((m.uid(), m.gid()), owner, "given to the process's user");
    }
    drop(r);
    assert!(!path.exists());
}
