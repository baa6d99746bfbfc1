//! One validation of a bundle per process, whichever rollout asks: rollouts that follow one
//! repository render the same bundle, and at 100 rollouts a push started 100 identical `nginx -t`
//! runs at once (about a second and a half of both cores at 1,000 pods, the start of every
//! commit's rollout). The first asker validates; the others with the same inputs wait for it and
//! share its report. Only reports are shared: when `nginx -t` could not run, each asker runs it
//! again, so a passing hiccup is never remembered.

use std::sync::OnceLock;

use super::paths::ProxyLayout;
use super::pipeline::{Report, validate_with};
use super::sandbox::{Nginx, SandboxError};
use crate::render::{Bundle, Digest};
use crate::slots::Slots;

/// Reports kept: a few commits of a few repositories (a report is a few KiB).
const KEPT: usize = 16;

/// Everything the report depends on.
#[derive(PartialEq)]
struct Inputs {
    digest: Digest,
    entry: String,
    nginx: Option<Nginx>,
    layout: ProxyLayout,
}

static REPORTS: Slots<Inputs, OnceLock<Option<Report>>> = Slots::new(KEPT);

/// [`validate_with`], shared by every caller in the process with the same inputs.
pub fn validate_shared(
    bundle: &Bundle,
    entry: &str,
    nginx: Option<&Nginx>,
    layout: &ProxyLayout,
) -> Result<Report, SandboxError> {
    let inputs = Inputs {
        digest: bundle.digest(),
        entry: entry.to_string(),
        nginx: nginx.cloned(),
        layout: layout.clone(),
    };
    let slot = REPORTS.slot(inputs);
    let mut failed = None;
    let shared = slot.get_or_init(|| match validate_with(bundle, entry, nginx, layout) {
        Ok(report) => Some(report),
        Err(e) => {
            failed = Some(e);
            None
        }
    });
    match (shared, failed) {
        (Some(report), _) => Ok(report.clone()),
        (None, Some(e)) => {
            REPORTS.forget(&slot);
            Err(e)
        }
        // The one who ran it could not: try for ourselves.
        (None, None) => validate_with(bundle, entry, nginx, layout),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn bundle(text: &str) -> Bundle {
        Bundle::new(BTreeMap::from([(
            "nginx.conf".to_string(),
            text.as_bytes().to_vec(),
        )]))
    }

    /// Many rollouts validating one bundle at once get one report; another bundle gets its own.
    #[test]
    fn concurrent_askers_of_one_bundle_share_one_report() {
        let good = bundle("events {}\nhttp { server { listen 8080; } }\n");
        let bad = bundle("events {}\nhttp { server { listen 8080; } \n");
        let layout = ProxyLayout::default();
        let reports: Vec<Report> = std::thread::scope(|s| {
            let askers: Vec<_> = (0..8)
                .map(|_| s.spawn(|| validate_shared(&good, "nginx.conf", None, &layout)))
                .collect();
            askers
                .into_iter()
                .map(|a| a.join().expect("no panic").expect("validated"))
                .collect()
        });
        assert!(reports.iter().all(|r| r.passed(false)));
        let failing = validate_shared(&bad, "nginx.conf", None, &layout).expect("validated");
        assert!(!failing.passed(false), "a different bundle's own report");
        let of_good = REPORTS.count(|i| i.digest == good.digest());
        assert_eq!(of_good, 1, "one slot for the one bundle");
    }
}
