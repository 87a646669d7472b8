//! What the tap costs per frame: idle (no capture) and attached, with a reader
//! draining in another thread. `cargo run --release -p fastnet-capture --example tap_cost`

use fastnet_capture::{CaptureReader, CaptureTap, Direction, MIN_RING_BYTES};
use std::time::Instant;

fn per_frame(tap: &mut CaptureTap, frame: &[u8], n: u32) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        tap.maybe_attach(stack::time::Instant::from_micros(i as u64 / 8));
        tap.frame(Direction::Rx, std::hint::black_box(frame));
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let path = std::env::temp_dir().join(format!("fastnet-tapcost-{}.capture", std::process::id()));
    let frame = vec![0x5au8; 1514];
    let mut tap = CaptureTap::at(path.clone());
    tap.check();
    println!(
        "idle:     {:6.1} ns/frame",
        per_frame(&mut tap, &frame, 50_000_000)
    );

    // Attached: batches that fit the ring, drained between timings (what is timed is
    // the writer's copy alone, never a drop).
    let mut reader = CaptureReader::create_at(path, 65535, 16 * MIN_RING_BYTES).unwrap();
    assert!(tap.check());
    let batch = (reader.ring_bytes() / 1600) as u32;
    let (mut laps, mut buf) = (Vec::new(), Vec::new());
    for _ in 0..50 {
        laps.push(per_frame(&mut tap, &frame, batch));
        while reader.next(&mut buf).unwrap().is_some() {}
    }
    assert_eq!(reader.dropped(), 0);
    laps.sort_by(f64::total_cmp);
    println!(
        "attached: {:6.1} ns/frame median, {:.1} best (1514 bytes; clock_gettime included)",
        laps[laps.len() / 2],
        laps[0]
    );
}
