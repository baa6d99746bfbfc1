//! Least-privilege checks from the test server's audit: what a ServiceAccount was granted
//! against what it used in a run, with a short, explained list of grants the run cannot reach,
//! and the verb × resource table a test prints for the record.

use std::collections::{BTreeMap, BTreeSet};

use crate::kube::KubeServer;
use crate::kube::authz::AuditRecord;
use crate::kube::rbac::Grant;

/// While alive, a test that panics (say a wait that timed out because the controller was
/// refused) first prints the requests RBAC denied to `user`, so the failure shows the 403
/// behind it rather than only the timeout.
pub struct DenialsOnPanic<'a> {
    server: &'a KubeServer,
    user: String,
}

impl<'a> DenialsOnPanic<'a> {
    /// Watches `user`'s requests to `server`.
    pub fn new(server: &'a KubeServer, user: &str) -> Self {
        DenialsOnPanic {
            server,
            user: user.to_string(),
        }
    }
}

impl Drop for DenialsOnPanic<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let denied: Vec<AuditRecord> = self
            .server
            .audit()
            .into_iter()
            .filter(|r| r.user == self.user && !r.allowed)
            .collect();
        if !denied.is_empty() {
            eprintln!("requests of {} that RBAC denied (403):", self.user);
            for r in denied {
                eprintln!(
                    "  {} {} in API group {:?} namespace {:?} name {:?}",
                    r.verb,
                    r.combined_resource(),
                    r.group,
                    r.namespace,
                    r.name
                );
            }
        }
    }
}

/// A grant a test run does not exercise, with the code path that needs it and why the run does
/// not get there; every entry must be granted and unused, so the list cannot rot.
#[derive(Debug, Clone, Copy)]
pub struct Unreached {
    /// API group, `""` for the core group.
    pub group: &'static str,
    /// Resource, `resource/subresource` for a subresource.
    pub resource: &'static str,
    /// RBAC verb.
    pub verb: &'static str,
    /// The code path that uses it, and why the run does not reach it.
    pub why: &'static str,
}

impl Unreached {
    fn grant(&self) -> Grant {
        (
            self.group.to_string(),
            self.resource.to_string(),
            self.verb.to_string(),
        )
    }
}

/// Every (group, resource, verb) `user` used among `records` (resource requests only).
pub fn used(records: &[AuditRecord], user: &str) -> BTreeSet<Grant> {
    records
        .iter()
        .filter(|r| r.user == user && !r.resource.is_empty())
        .map(|r| (r.group.clone(), r.combined_resource(), r.verb.clone()))
        .collect()
}

/// What is wrong with `granted` as least privilege for what was `used`, one line each: grants
/// never used and not explained in `unreached`, uses not granted, and `unreached` entries that
/// are not granted or were used after all. Empty when the grants are exactly right.
pub fn least_privilege_problems(
    granted: &BTreeSet<Grant>,
    used: &BTreeSet<Grant>,
    unreached: &[Unreached],
) -> Vec<String> {
    let show = |(g, r, v): &Grant| {
        let g = if g.is_empty() { "core" } else { g.as_str() };
        format!("{v} {r} ({g})")
    };
    let explained: BTreeSet<Grant> = unreached.iter().map(Unreached::grant).collect();
    let mut problems = Vec::new();
    for g in granted.difference(used) {
        if !explained.contains(g) {
            problems.push(format!(
                "granted but never used: {} (drop it from the RBAC, or explain it in the unreached list)",
                show(g)
            ));
        }
    }
    for g in used.difference(granted) {
        problems.push(format!("used but not granted: {}", show(g)));
    }
    for u in unreached {
        let g = u.grant();
        if !granted.contains(&g) {
            problems.push(format!(
                "the unreached list names {}, which is not granted: remove the entry",
                show(&g)
            ));
        } else if used.contains(&g) {
            problems.push(format!(
                "the unreached list names {}, which the run used: remove the entry",
                show(&g)
            ));
        }
    }
    problems
}

/// The verbs in the order the table shows them.
const VERB_ORDER: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

/// A verb × resource table of request counts (`-` for none), one row per `resource.group` (or
/// non-resource path), denied requests counted in a last column.
pub fn table(records: &[AuditRecord]) -> String {
    let mut counts: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut denied: BTreeMap<String, usize> = BTreeMap::new();
    for r in records {
        let row = if r.resource.is_empty() {
            r.path.clone()
        } else if r.group.is_empty() {
            r.combined_resource()
        } else if r.subresource.is_empty() {
            format!("{}.{}", r.resource, r.group)
        } else {
            format!("{}.{}/{}", r.resource, r.group, r.subresource)
        };
        *counts
            .entry(row.clone())
            .or_default()
            .entry(r.verb.clone())
            .or_default() += 1;
        if !r.allowed {
            *denied.entry(row).or_default() += 1;
        }
    }
    let mut verbs: Vec<String> = VERB_ORDER.iter().map(|v| v.to_string()).collect();
    for row in counts.values() {
        for v in row.keys() {
            if !verbs.contains(v) {
                verbs.push(v.clone());
            }
        }
    }
    verbs.retain(|v| counts.values().any(|row| row.contains_key(v)));
    let width = counts.keys().map(String::len).max().unwrap_or(0).max(8);
    let mut out = format!("{:width$}", "resource");
    for v in &verbs {
        out.push_str(&format!(" {v:>6}"));
    }
    out.push_str(" denied\n");
    for (row, by_verb) in &counts {
        out.push_str(&format!("{row:width$}"));
        for v in &verbs {
            match by_verb.get(v) {
                Some(n) => out.push_str(&format!(" {n:>w$}", w = v.len().max(6))),
                None => out.push_str(&format!(" {:>w$}", "-", w = v.len().max(6))),
            }
        }
        out.push_str(&format!(" {:>6}\n", denied.get(row).copied().unwrap_or(0)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(verb: &str, group: &str, resource: &str, sub: &str, allowed: bool) -> AuditRecord {
        AuditRecord {
            user: "u".into(),
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: "n".into(),
            name: String::new(),
            path: String::new(),
            allowed,
            reason: String::new(),
        }
    }

    fn g(group: &str, resource: &str, verb: &str) -> Grant {
        (group.into(), resource.into(), verb.into())
    }

    #[test]
    fn exact_grants_have_no_problems_and_every_mismatch_is_named() {
        let records = [
            rec("get", "", "pods", "", true),
            rec("patch", "", "pods", "status", true),
        ];
        let used = used(&records, "u");
        assert_eq!(
            used,
            BTreeSet::from([g("", "pods", "get"), g("", "pods/status", "patch")])
        );
        let secrets = Unreached {
            group: "",
            resource: "secrets",
            verb: "get",
            why: "only with a secretRef",
        };
        let mut granted = used.clone();
        granted.insert(g("", "secrets", "get"));
        assert!(least_privilege_problems(&granted, &used, &[secrets]).is_empty());

        let extra = least_privilege_problems(&granted, &used, &[]);
        assert_eq!(extra.len(), 1);
        assert!(
            extra[0].contains("never used: get secrets (core)"),
            "{extra:?}"
        );

        let stale = least_privilege_problems(&used, &used, &[secrets]);
        assert!(
            stale[0].contains("not granted: remove the entry"),
            "{stale:?}"
        );

        let reached = Unreached {
            resource: "pods",
            ..secrets
        };
        let p = least_privilege_problems(&granted, &used, &[secrets, reached]);
        assert!(p[0].contains("which the run used"), "{p:?}");

        let missing = least_privilege_problems(&BTreeSet::new(), &used, &[]);
        assert_eq!(missing.len(), 2, "{missing:?}");
    }

    #[test]
    fn the_table_counts_per_resource_and_verb_and_shows_denials() {
        let records = [
            rec("get", "", "pods", "", true),
            rec("get", "", "pods", "", true),
            rec("patch", "switchback.dev", "proxyrollouts", "status", false),
        ];
        let t = table(&records);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        let cols = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(cols(lines[0]), ["resource", "get", "patch", "denied"]);
        assert_eq!(cols(lines[1]), ["pods", "2", "-", "0"]);
        assert_eq!(
            cols(lines[2]),
            ["proxyrollouts.switchback.dev/status", "-", "1", "1"]
        );
    }
}
