//! The gate in front of every request: who sent it ([`super::identity`]), whether RBAC allows it
//! ([`super::rbac`]), and an audit record of each ServiceAccount request, so a test can both see
//! the 403 a real cluster would give and list every permission a component actually used.

use std::collections::HashMap;

use super::error::ApiError;
use super::identity::{Identities, Identity, User};
use super::rbac::{self, Policy};
use super::request_info::{RequestInfo, ResourceAttributes, request_info};

/// What happens to a ServiceAccount request RBAC does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RbacMode {
    /// Answer 403 Forbidden, as a real cluster does.
    #[default]
    Enforce,
    /// Serve it anyway and only mark the audit record `allowed: false`, to find every missing
    /// rule in one run.
    AuditOnly,
}

/// One ServiceAccount request as RBAC saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// `system:serviceaccount:<namespace>:<name>`.
    pub user: String,
    /// RBAC verb (`get`, `list`, `watch`, `create`, ...) or, for a non-resource URL, the
    /// lower-case method.
    pub verb: String,
    /// API group, `""` for the core group and non-resource URLs.
    pub group: String,
    /// Resource plural, empty for a non-resource URL.
    pub resource: String,
    /// Subresource (`status`), empty when none.
    pub subresource: String,
    /// Namespace, empty for cluster-wide requests.
    pub namespace: String,
    /// Object name, empty for collections.
    pub name: String,
    /// The URL path of a non-resource request (`/version`), empty for resource requests.
    pub path: String,
    /// Whether RBAC allowed it.
    pub allowed: bool,
    /// Which binding allowed it, or why not (see [`rbac::Decision::reason`]).
    pub reason: String,
}

impl AuditRecord {
    /// `resource` or `resource/subresource`, as RBAC rules list it.
    pub fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    fn new(user: &str, info: &RequestInfo, decision: &rbac::Decision) -> AuditRecord {
        let mut r = AuditRecord {
            user: user.to_string(),
            verb: String::new(),
            group: String::new(),
            resource: String::new(),
            subresource: String::new(),
            namespace: String::new(),
            name: String::new(),
            path: String::new(),
            allowed: decision.allowed,
            reason: decision.reason.clone(),
        };
        match info {
            RequestInfo::Resource(a) => {
                r.verb = a.verb.clone();
                r.group = a.group.clone();
                r.resource = a.resource.clone();
                r.subresource = a.subresource.clone();
                r.namespace = a.namespace.clone();
                r.name = a.name.clone();
            }
            RequestInfo::NonResource { verb, path } => {
                r.verb = verb.clone();
                r.path = path.clone();
            }
        }
        r
    }
}

/// Tokens, the enforcement mode and the audit log.
#[derive(Debug)]
pub struct Gate {
    identities: Identities,
    mode: RbacMode,
    audit: Vec<AuditRecord>,
}

impl Gate {
    /// Only the admin token is known; RBAC is enforced for tokens issued later.
    pub fn new(admin_token: String) -> Gate {
        Gate {
            identities: Identities::new(admin_token),
            mode: RbacMode::default(),
            audit: Vec::new(),
        }
    }

    /// A fresh token for a ServiceAccount.
    pub fn issue(&mut self, namespace: &str, name: &str) -> String {
        self.identities.issue(namespace, name)
    }

    /// Sets what happens to denied requests.
    pub fn set_mode(&mut self, mode: RbacMode) {
        self.mode = mode;
    }

    /// Every ServiceAccount request so far, oldest first.
    pub fn audit(&self) -> Vec<AuditRecord> {
        self.audit.clone()
    }

    /// Authenticates and, for a ServiceAccount, authorises one request and records it; returns
    /// the account and what it asked for, so a write that turns out to create can be checked
    /// again ([`Gate::admit_create`]). `policy` is called only for ServiceAccount requests, to
    /// snapshot the stored RBAC objects (the caller takes the store lock inside it, always after
    /// this gate's lock).
    pub fn admit(
        &mut self,
        authorization: Option<&str>,
        method: &str,
        path: &str,
        query: &HashMap<String, String>,
        policy: impl FnOnce() -> Policy,
    ) -> Result<Option<(User, RequestInfo)>, ApiError> {
        let Identity::User(user) = self.identities.authenticate(authorization)? else {
            return Ok(None);
        };
        let info = request_info(method, path, query);
        let decision = rbac::authorize(&policy(), &user, &info);
        self.audit
            .push(AuditRecord::new(&user.name, &info, &decision));
        if decision.allowed || self.mode == RbacMode::AuditOnly {
            Ok(Some((user, info)))
        } else {
            Err(rbac::forbidden(&user, &info, &decision.reason))
        }
    }

    /// The second check the apiserver makes when a server-side apply (or a PUT) would create the
    /// object: the `create` verb on the same resource, recorded like any request. Denied, it is
    /// the apiserver's create-on-update 403 (`configmaps "x" is forbidden: <reason>`).
    pub fn admit_create(
        &mut self,
        user: &User,
        attrs: &ResourceAttributes,
        policy: impl FnOnce() -> Policy,
    ) -> Result<(), ApiError> {
        let info = RequestInfo::Resource(ResourceAttributes {
            verb: "create".to_string(),
            ..attrs.clone()
        });
        let decision = rbac::authorize(&policy(), user, &info);
        self.audit
            .push(AuditRecord::new(&user.name, &info, &decision));
        if decision.allowed || self.mode == RbacMode::AuditOnly {
            Ok(())
        } else {
            Err(rbac::forbidden_create_on_update(attrs, &decision.reason))
        }
    }
}
