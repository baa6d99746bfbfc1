//! Turning the commit a person typed into the full SHA a request carries, against what the
//! rollout's status says: `rollback` only to a commit that was stable, `retry` only of a quarantined
//! one. Refusing here gives the answer at once, with the choices listed, instead of a Warning event
//! after the controller has read the request; the engine checks again (it has the final word).

use switchback::operator::crd::ProxyRolloutStatus;

use super::show::{is_good_outcome, short};

/// Why a typed commit was not accepted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResolveError {
    /// Fewer than 4 characters would match too much.
    #[error("{0:?} is too short: give at least 4 characters of the commit")]
    TooShort(String),
    /// More than one commit starts with it.
    #[error("{given} is ambiguous: it matches {}; give more characters", .matches.join(", "))]
    Ambiguous {
        /// What was typed.
        given: String,
        /// The commits it matches (short).
        matches: Vec<String>,
    },
    /// Rollback to a commit that was never stable here.
    #[error(
        "{given} is not a known-good commit of {rollout}{why}; rollback accepts only commits that were stable:\n{known}"
    )]
    NotKnownGood {
        /// What was typed.
        given: String,
        /// namespace/name.
        rollout: String,
        /// What the status says about it, when anything.
        why: String,
        /// The known-good commits, one per line.
        known: String,
    },
    /// Rollback to a quarantined commit.
    #[error(
        "{commit} is quarantined ({reason}); rollback will not go to it. If you are sure, `kubectl switchback retry {name} {commit}`"
    )]
    Quarantined {
        /// The commit (short).
        commit: String,
        /// Why it is quarantined.
        reason: String,
        /// The rollout's name.
        name: String,
    },
    /// Retry with nothing quarantined.
    #[error("nothing is quarantined in {0}: there is nothing to retry")]
    NothingQuarantined(String),
    /// Retry without a commit while several are quarantined, or of one that is not.
    #[error("{problem}; the quarantined commits of {rollout} are:\n{known}")]
    ChooseQuarantined {
        /// What went wrong.
        problem: String,
        /// namespace/name.
        rollout: String,
        /// The quarantined commits, one per line.
        known: String,
    },
}

/// Commits that were stable here, the current stable first, each with a note for the list.
pub(crate) fn known_good(status: &ProxyRolloutStatus) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    if let Some(s) = &status.stable {
        out.push((s.commit.clone(), "stable now".to_string()));
    }
    for h in &status.history {
        if is_good_outcome(&h.outcome) && !out.iter().any(|(c, _)| *c == h.commit) {
            out.push((h.commit.clone(), format!("{} at {}", h.outcome, h.at)));
        }
    }
    out
}

fn lines(items: &[(String, String)]) -> String {
    if items.is_empty() {
        return "  (none)".to_string();
    }
    items
        .iter()
        .map(|(c, note)| format!("  {}  {note}", short(c)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The commits in `candidates` that `given` abbreviates (case-insensitive prefix).
fn matching<'a>(given: &str, candidates: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let given = given.to_ascii_lowercase();
    let mut out: Vec<&str> = candidates
        .filter(|c| c.to_ascii_lowercase().starts_with(&given))
        .collect();
    out.dedup();
    out
}

fn one<'a>(given: &str, found: Vec<&'a str>) -> Result<Option<&'a str>, ResolveError> {
    match found.as_slice() {
        [] => Ok(None),
        [c] => Ok(Some(c)),
        many => Err(ResolveError::Ambiguous {
            given: given.to_string(),
            matches: many.iter().map(|c| short(c).to_string()).collect(),
        }),
    }
}

/// The full SHA for `rollback NAME <given>`.
pub(crate) fn rollback(
    status: &ProxyRolloutStatus,
    rollout: &str,
    name: &str,
    given: &str,
) -> Result<String, ResolveError> {
    if given.len() < 4 {
        return Err(ResolveError::TooShort(given.to_string()));
    }
    let good = known_good(status);
    if let Some(q) = one(
        given,
        matching(given, status.quarantined.iter().map(|q| q.commit.as_str())),
    )? {
        let reason = status
            .quarantined
            .iter()
            .find(|x| x.commit == q)
            .map(|x| x.reason.clone())
            .unwrap_or_default();
        return Err(ResolveError::Quarantined {
            commit: short(q).to_string(),
            reason,
            name: name.to_string(),
        });
    }
    if let Some(c) = one(given, matching(given, good.iter().map(|(c, _)| c.as_str())))? {
        return Ok(c.to_string());
    }
    let why = status
        .history
        .iter()
        .find(|h| {
            h.commit
                .to_ascii_lowercase()
                .starts_with(&given.to_ascii_lowercase())
        })
        .map(|h| format!(" (it was {} at {})", h.outcome, h.at))
        .unwrap_or_default();
    Err(ResolveError::NotKnownGood {
        given: given.to_string(),
        rollout: rollout.to_string(),
        why,
        known: lines(&good),
    })
}

/// The full SHA for `retry NAME [<given>]`: the only quarantined commit when none is given.
pub(crate) fn retry(
    status: &ProxyRolloutStatus,
    rollout: &str,
    given: Option<&str>,
) -> Result<String, ResolveError> {
    let quarantined: Vec<(String, String)> = status
        .quarantined
        .iter()
        .map(|q| (q.commit.clone(), format!("{} ({})", q.reason, q.at)))
        .collect();
    if quarantined.is_empty() {
        return Err(ResolveError::NothingQuarantined(rollout.to_string()));
    }
    let choose = |problem: String| ResolveError::ChooseQuarantined {
        problem,
        rollout: rollout.to_string(),
        known: lines(&quarantined),
    };
    let Some(given) = given else {
        return match quarantined.as_slice() {
            [(c, _)] => Ok(c.clone()),
            _ => Err(choose(
                "several commits are quarantined: name the one to retry".to_string(),
            )),
        };
    };
    if given.len() < 4 {
        return Err(ResolveError::TooShort(given.to_string()));
    }
    one(
        given,
        matching(given, quarantined.iter().map(|(c, _)| c.as_str())),
    )?
    .map(String::from)
    .ok_or_else(|| choose(format!("{given} is not quarantined")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111";
    const A2: &str = "aaaa2222aaaa2222aaaa2222aaaa2222aaaa2222";
    const B: &str = "bbbb1111bbbb1111bbbb1111bbbb1111bbbb1111";
    const C: &str = "cccc1111cccc1111cccc1111cccc1111cccc1111";
    const D: &str = "dddd1111dddd1111dddd1111dddd1111dddd1111";

    fn status() -> ProxyRolloutStatus {
        serde_json::from_value(serde_json::json!({
            "stable": {"commit": B, "digest": "sha256:b"},
            "quarantined": [{"commit": C, "digest": "sha256:c", "reason": "502 spike", "at": "2026-11-25T01:00:00Z"}],
            "history": [
                {"commit": C, "outcome": "RolledBack", "at": "2026-11-25T01:00:00Z"},
                {"commit": D, "outcome": "Superseded", "at": "2026-11-24T12:00:00Z"},
                {"commit": B, "outcome": "Promoted", "at": "2026-11-24T11:00:00Z"},
                {"commit": A2, "outcome": "Promoted", "at": "2026-11-23T11:00:00Z"},
                {"commit": A, "outcome": "Adopted", "at": "2026-11-22T11:00:00Z"}
            ]
        }))
        .expect("status")
    }

    #[test]
    fn short_shas_resolve_to_known_good_commits() {
        let s = status();
        assert_eq!(rollback(&s, "p/e", "e", "aaaa1111").expect("A"), A);
        assert_eq!(rollback(&s, "p/e", "e", "BBBB11").expect("B"), B);
        assert_eq!(rollback(&s, "p/e", "e", A2).expect("full"), A2);
    }

    #[test]
    fn unknown_quarantined_ambiguous_and_short_commits_are_refused_with_the_choices() {
        let s = status();
        let e = rollback(&s, "p/e", "e", "dddd").expect_err("superseded");
        let text = e.to_string();
        assert!(
            text.contains("dddd is not a known-good commit of p/e (it was Superseded"),
            "{text}"
        );
        assert!(text.contains("bbbb1111bbbb  stable now"), "{text}");
        assert!(
            text.contains("aaaa2222aaaa  Promoted at 2026-11-23T11:00:00Z"),
            "{text}"
        );
        assert!(text.contains("aaaa1111aaaa  Adopted"), "{text}");
        assert!(!text.contains("cccc1111cccc"), "{text}");

        let text = rollback(&s, "p/e", "e", "cccc1")
            .expect_err("q")
            .to_string();
        assert!(text.contains("quarantined (502 spike)"), "{text}");
        assert!(
            text.contains("kubectl switchback retry e cccc1111cccc"),
            "{text}"
        );

        let e = rollback(&s, "p/e", "e", "aaaa").expect_err("ambiguous");
        assert!(matches!(e, ResolveError::Ambiguous { .. }), "{e}");
        let e = rollback(&s, "p/e", "e", "aa").expect_err("short");
        assert!(matches!(e, ResolveError::TooShort(_)), "{e}");
        let e = rollback(&s, "p/e", "e", "ffff").expect_err("unknown");
        assert!(
            e.to_string()
                .contains("ffff is not a known-good commit of p/e;"),
            "{e}"
        );
    }

    #[test]
    fn retry_defaults_to_the_only_quarantined_commit() {
        let mut s = status();
        assert_eq!(retry(&s, "p/e", None).expect("only"), C);
        assert_eq!(retry(&s, "p/e", Some("CCCC1111")).expect("given"), C);
        let e = retry(&s, "p/e", Some("bbbb")).expect_err("not quarantined");
        assert!(e.to_string().contains("bbbb is not quarantined"), "{e}");
        assert!(e.to_string().contains("cccc1111cccc  502 spike"), "{e}");
        s.quarantined.push(s.quarantined[0].clone());
        s.quarantined[1].commit = D.to_string();
        let e = retry(&s, "p/e", None).expect_err("several");
        assert!(
            e.to_string().contains("several commits are quarantined"),
            "{e}"
        );
        s.quarantined.clear();
        let e = retry(&s, "p/e", None).expect_err("none");
        assert!(matches!(e, ResolveError::NothingQuarantined(_)), "{e}");
    }
}
