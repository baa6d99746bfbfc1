//! What a rollout moves: a commit rendered to a digest (DESIGN §3.2). Pods are told the digest;
//! people are shown the commit; two commits with one digest are one config.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::render::Digest;
use crate::source::git::Revision;

/// The identity of a revision, as status, events and commands show it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RevisionId {
    /// The commit SHA, for people.
    pub commit: String,
    /// The rendered bundle's digest, for pods.
    pub digest: Digest,
}

impl RevisionId {
    /// The first 12 characters of the commit, as people quote it.
    pub fn short_commit(&self) -> &str {
        short(&self.commit)
    }
}

impl fmt::Display for RevisionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.short_commit(), self.digest.short())
    }
}

/// A commit with its rendered digest and the metadata an incident report quotes (author, time,
/// message). Kept whole, not just the id, so a quarantined revision can be retried and a report
/// can say who changed what when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// The commit as the git source read it.
    pub revision: Revision,
    /// What it renders to.
    pub digest: Digest,
}

impl Release {
    /// Commit and digest.
    pub fn id(&self) -> RevisionId {
        RevisionId {
            commit: self.revision.commit.clone(),
            digest: self.digest,
        }
    }

    /// The commit SHA.
    pub fn commit(&self) -> &str {
        &self.revision.commit
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", short(self.commit()), self.digest.short())
    }
}

/// The first 12 characters of a commit SHA (all of it when shorter).
pub(crate) fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}
