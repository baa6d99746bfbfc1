//! `switchback demo`: the outage replayed on one machine with real nginx, real git and real HTTP.
//!
//! The parts here are the demo's own props, kept out of the pipeline modules because nothing in
//! production needs them: [`upstreams`] are the application servers behind the proxies, [`traffic`]
//! is the load balancer's worth of users hitting the proxy pods, and [`figures`] turns what was
//! measured into the comparison with the seed outage. Every address they touch is in 127.0.0.0/8,
//! checked in code, so the demo can never send traffic anywhere but this machine.

pub mod figures;
pub mod progress;
pub mod repo;
pub mod scenario;
pub mod traffic;
pub mod upstreams;

use std::net::SocketAddr;

/// Whether `addr` is in 127.0.0.0/8, the only range the demo binds to or sends traffic to.
///
/// IPv6 `::1` is refused on purpose: the rule is "127.0.0.0/8", stated once and checked one way.
pub fn is_demo_loopback(addr: &SocketAddr) -> bool {
    match addr {
        SocketAddr::V4(v4) => v4.ip().is_loopback(),
        SocketAddr::V6(_) => false,
    }
}
