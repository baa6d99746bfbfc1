//! A revision made from one `nginx.conf`, for tests that drive the engine without a git repository.

use std::collections::BTreeMap;

use jiff::Timestamp;
use switchback::render::Bundle;
use switchback::rollout::Release;
use switchback::source::git::Revision;

/// Commit `n` (its SHA is `n` zero-padded) whose bundle is `nginx_conf` alone.
pub fn release(n: u8, nginx_conf: String) -> (Release, Bundle) {
    let bundle = Bundle::new(BTreeMap::from([(
        "nginx.conf".to_string(),
        nginx_conf.into_bytes(),
    )]));
    let revision = Revision {
        commit: format!("{n:0>40}"),
        committed_at: Timestamp::UNIX_EPOCH,
        author: "Test <test@example.test>".to_string(),
        message: format!("commit {n}"),
    };
    let release = Release {
        revision,
        digest: bundle.digest(),
    };
    (release, bundle)
}
