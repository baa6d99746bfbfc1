//! Who a request comes from. The server's own token (and no token at all, which is what kubectl
//! and helm send over plain HTTP) is the cluster admin, as before; tokens issued for a
//! ServiceAccount make the request that account's, so RBAC can be checked the way a real cluster
//! checks a Pod's projected token.

use std::collections::HashMap;

use super::error::ApiError;

/// An authenticated user other than the admin: a name and the groups it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// `system:serviceaccount:<namespace>:<name>` for a ServiceAccount.
    pub name: String,
    /// `system:serviceaccounts`, `system:serviceaccounts:<namespace>`, `system:authenticated`.
    pub groups: Vec<String>,
}

impl User {
    /// The user a ServiceAccount token authenticates as, with the groups the apiserver gives it.
    pub fn service_account(namespace: &str, name: &str) -> User {
        User {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".to_string(),
            ],
        }
    }
}

/// Whom a request is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The admin token or no token: everything is allowed and nothing is audited.
    Admin,
    /// A token the server issued; RBAC decides.
    User(User),
}

/// The tokens the server accepts.
#[derive(Debug)]
pub struct Identities {
    admin: String,
    issued: HashMap<String, User>,
    next: u64,
}

impl Identities {
    /// Only the admin token, until tokens are issued.
    pub fn new(admin: String) -> Self {
        Identities {
            admin,
            issued: HashMap::new(),
            next: 0,
        }
    }

    /// The admin token.
    pub fn admin_token(&self) -> &str {
        &self.admin
    }

    /// A new token for `system:serviceaccount:<namespace>:<name>`; each call gives a fresh one,
    /// as each Pod gets its own projected token.
    pub fn issue(&mut self, namespace: &str, name: &str) -> String {
        self.next += 1;
        let token = format!("{}-sa-{}-{namespace}-{name}", self.admin, self.next);
        self.issued
            .insert(token.clone(), User::service_account(namespace, name));
        token
    }

    /// Whom the `Authorization` header value (if any) names; a token the server never issued is
    /// 401, so tests notice a mix-up of servers.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Identity, ApiError> {
        let Some(value) = authorization else {
            // kubectl 1.32 sends no Authorization header over plain HTTP (observed).
            return Ok(Identity::Admin);
        };
        let token = value
            .strip_prefix("Bearer ")
            .ok_or(ApiError::Unauthorized)?;
        if token == self.admin {
            return Ok(Identity::Admin);
        }
        self.issued
            .get(token)
            .cloned()
            .map(Identity::User)
            .ok_or(ApiError::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_token_and_no_token_are_admin_issued_tokens_are_their_account() {
        let mut ids = Identities::new("adm".into());
        assert_eq!(ids.authenticate(None).unwrap(), Identity::Admin);
        assert_eq!(
            ids.authenticate(Some("Bearer adm")).unwrap(),
            Identity::Admin
        );
        let t1 = ids.issue("switchback", "sb");
        let t2 = ids.issue("switchback", "sb");
        assert_ne!(t1, t2);
        let Identity::User(u) = ids.authenticate(Some(&format!("Bearer {t1}"))).unwrap() else {
            panic!("an issued token is a user");
        };
        assert_eq!(u.name, "system:serviceaccount:switchback:sb");
        assert!(
            u.groups
                .contains(&"system:serviceaccounts:switchback".to_string())
        );
        assert!(u.groups.contains(&"system:authenticated".to_string()));
        for wrong in ["Bearer nope", "Basic adm", "adm"] {
            assert!(matches!(
                ids.authenticate(Some(wrong)),
                Err(ApiError::Unauthorized)
            ));
        }
    }
}
