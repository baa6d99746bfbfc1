//! The API of git write-back: `spec.rollback.writeBack` (what a user asks for) and
//! `status.lastIncident.revert` (what happened), plus the check of the settings the reconciler
//! runs before a worker starts, so a bad branch name is an `InvalidSpec` Event, not a failed push
//! in the middle of an incident.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::operator::spec::SpecError;
use crate::source::git::is_valid_branch_name;

/// The placeholder in `writeBack.branch` replaced by the reverted commit's short id.
pub const COMMIT_PLACEHOLDER: &str = "{commit}";

/// Optional git write-back after a rollback: a revert commit so git names again what every pod
/// runs. Off unless present. Pushing needs write access in `source.secretRef`'s credentials.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WriteBackSpec {
    /// `Branch` (default): push the revert to a new branch for a person to review and merge.
    /// `Push`: push it onto the followed branch, as a fast-forward only (never forced).
    #[serde(default)]
    pub mode: WriteBackMode,
    /// Branch mode: the branch to create; `{commit}` stands for the reverted commit's short id.
    /// An existing branch with another config is never overwritten.
    #[serde(default = "default_branch")]
    pub branch: String,
    /// Who the revert commit is by (author and committer).
    #[serde(default)]
    pub author: AuthorSpec,
}

/// Where the revert commit goes.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum WriteBackMode {
    /// A new branch (`writeBack.branch`); the followed branch is untouched.
    #[default]
    Branch,
    /// The followed branch itself (`source.ref` must be a branch), fast-forward only.
    Push,
}

/// A git identity.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthorSpec {
    /// The name.
    #[serde(default = "default_author_name")]
    pub name: String,
    /// The email address.
    #[serde(default = "default_author_email")]
    pub email: String,
}

impl Default for AuthorSpec {
    fn default() -> Self {
        AuthorSpec {
            name: default_author_name(),
            email: default_author_email(),
        }
    }
}

/// What the write-back of the last incident did.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevertStatus {
    /// `Branch` or `Push`.
    pub mode: WriteBackMode,
    /// `Pushed`, `NotNeeded` (git already has the stable config there) or `Failed`.
    pub result: RevertResult,
    /// The branch pushed to (or that already had the revert).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The revert commit (or the commit that already had the stable config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// When the revert was pushed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_at: Option<String>,
    /// Why it failed; the rollback itself stands either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What happened, for people.
    pub message: String,
}

/// The end of a write-back.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RevertResult {
    /// A revert commit was pushed.
    Pushed,
    /// Git already says what runs; nothing was pushed.
    NotNeeded,
    /// Nothing was pushed; `error` says why. Not retried.
    Failed,
}

/// The spec's write-back settings, checked; `None` when write-back is off.
pub fn settings(spec: Option<&WriteBackSpec>) -> Result<Option<WriteBackSpec>, SpecError> {
    let Some(spec) = spec else {
        return Ok(None);
    };
    if spec.mode == WriteBackMode::Branch {
        let example = spec.branch.replace(COMMIT_PLACEHOLDER, "0123456789ab");
        if !is_valid_branch_name(&example) {
            return Err(SpecError(format!(
                "rollback.writeBack.branch: {:?} is not a valid git branch name",
                spec.branch
            )));
        }
    }
    let bad = |s: &str| s.trim().is_empty() || s.contains(['<', '>', '\n']);
    if bad(&spec.author.name) || bad(&spec.author.email) {
        return Err(SpecError(
            "rollback.writeBack.author: name and email must be non-empty, without <, > or newlines"
                .to_string(),
        ));
    }
    Ok(Some(spec.clone()))
}

/// The branch for a revert of `commit`.
pub fn branch_for(template: &str, commit: &str) -> String {
    template.replace(COMMIT_PLACEHOLDER, crate::rollout::revision::short(commit))
}

fn default_branch() -> String {
    format!("switchback/revert-{COMMIT_PLACEHOLDER}")
}
fn default_author_name() -> String {
    "Switchback".to_string()
}
fn default_author_email() -> String {
    "switchback@localhost".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> WriteBackSpec {
        serde_json::from_value(json).expect("a write-back spec")
    }

    #[test]
    fn defaults_are_a_branch_per_commit_by_switchback() {
        let s = spec(serde_json::json!({}));
        assert_eq!(s.mode, WriteBackMode::Branch);
        assert_eq!(
            branch_for(&s.branch, &"ab".repeat(20)),
            "switchback/revert-abababababab"
        );
        assert_eq!(s.author.name, "Switchback");
        assert!(settings(Some(&s)).is_ok_and(|s| s.is_some()));
        assert!(settings(None).is_ok_and(|s| s.is_none()));
    }

    #[test]
    fn bad_branch_names_and_authors_are_spec_errors() {
        for branch in ["has space", "a..b", "ends.lock", "-x/../y", ""] {
            let s = spec(serde_json::json!({"branch": branch}));
            assert!(settings(Some(&s)).is_err(), "{branch:?}");
        }
        // Push mode ignores the branch.
        let s = spec(serde_json::json!({"mode": "Push", "branch": "has space"}));
        assert!(settings(Some(&s)).is_ok());
        let s = spec(serde_json::json!({"author": {"name": "Evil <x@y>"}}));
        assert!(settings(Some(&s)).is_err());
    }
}
