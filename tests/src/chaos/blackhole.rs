//! A blackholed port: the kernel drops every packet sent to one address and port (an nftables
//! rule on the output hook), so a connection times out instead of being refused. That is a pod
//! whose network went away, which a stopped process (its socket still accepts) or a dead one
//! (refused at once) does not show. Needs `nft` (installed by `make tools`) and the right to
//! change the ruleset; where either is missing, [`Blackhole::drop_to`] says why and the test
//! skips loudly.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

/// The rule, removed (its table deleted) when dropped.
pub struct Blackhole {
    table: String,
}

impl Blackhole {
    /// Drops every TCP packet to `to` until dropped. `name` makes the table this test's own
    /// (tests on other subnets may hold theirs at the same time). `Err` says why not.
    pub fn drop_to(to: SocketAddr, name: &str) -> Result<Blackhole, String> {
        let SocketAddr::V4(v4) = to else {
            return Err(format!("{to}: only IPv4 loopback addresses are blackholed"));
        };
        if !v4.ip().is_loopback() {
            return Err(format!("{to} is not a loopback address"));
        }
        let table = format!("switchback_chaos_{name}");
        let script = format!(
            "table inet {table} {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n    ip daddr {} tcp dport {} drop\n  }}\n}}\n",
            v4.ip(),
            v4.port()
        );
        nft(&["-f", "-"], Some(&script))?;
        Ok(Blackhole { table })
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        if let Err(e) = nft(&["delete", "table", "inet", &self.table], None) {
            eprintln!("removing the blackhole {}: {e}", self.table);
        }
    }
}

/// Runs `nft args` with `stdin`; `Err` carries what it said.
fn nft(args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft (`make tools` installs nftables): {e}"))?;
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin.unwrap_or_default().as_bytes())
            .map_err(|e| format!("writing to nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
