//! The simulated network itself: loss rate, rate cap and ordering behave as configured, and the
//! same seed gives the same run.

mod sim;

use std::time::{Duration, Instant};

use sim::net::{Link, LinkConfig};

#[test]
fn loss_is_near_its_rate_and_repeatable() {
    let t0 = Instant::now();
    let run = || {
        let mut link = Link::new(LinkConfig::delay_ms(20).loss(0.05), 7);
        (0..20_000)
            .filter(|_| link.transmit(1000, t0, t0).is_none())
            .count()
    };
    let lost = run();
    assert_eq!(lost, run());
    assert!((900..1100).contains(&lost), "{lost} of 20000 lost");
}

#[test]
fn rate_cap_serialises_and_overflows() {
    let t0 = Instant::now();
    // 1 Mbit/s: 1250 bytes take 10 ms; the buffer holds 4 of them.
    let mut link = Link::new(LinkConfig::delay_ms(0).rate(1_000_000, 5000), 1);
    let arrivals: Vec<_> = (0..6).map(|_| link.transmit(1250, t0, t0)).collect();
    assert_eq!(arrivals[0], Some(t0 + Duration::from_millis(10)));
    assert_eq!(arrivals[3], Some(t0 + Duration::from_millis(40)));
    assert_eq!(arrivals[4], None);
    assert_eq!(link.stats.overflowed, 2);
}

#[test]
fn jitter_keeps_order_unless_asked() {
    let t0 = Instant::now();
    let mut link = Link::new(LinkConfig::delay_ms(20).jitter_ms(10), 3);
    let mut last = t0;
    for i in 0..1000u32 {
        let at = link.transmit(100, t0 + Duration::from_micros(u64::from(i) * 100), t0);
        let at = at.expect("no loss");
        assert!(at >= last);
        last = at;
    }
}
