//! Credentials for a git remote and the libgit2 callback that hands them out.

use std::cell::RefCell;
use std::fmt;
use std::path::PathBuf;

use git2::{Cred, CredentialType, ErrorClass, ErrorCode};

use super::remote::{Remote, Transport};

/// How to authenticate to a git remote.
///
/// Kept apart from the URL so secrets never have to be written into one (where they end up in
/// process lists, config files and logs). The `Debug` form prints `***` for every secret, so a
/// `Credentials` can sit inside structs that are logged with `{:?}`.
#[derive(Clone, Default)]
pub enum Credentials {
    /// No credentials: public repositories, local paths and `file://` URLs. A remote that asks for
    /// credentials anyway gets a clear "none configured" error instead of a prompt.
    #[default]
    None,
    /// An access token for https, sent as HTTP basic auth with the user `x-access-token` and the
    /// token as password. That is what GitHub documents for app/installation tokens and what GitHub
    /// personal tokens and Gitea accept too. Forges that want a particular user name (GitLab's
    /// `oauth2` for OAuth tokens, Bitbucket's `x-token-auth`) get it from the URL: a user written in
    /// the URL (`https://oauth2@gitlab.example/group/repo.git`) is used instead of `x-access-token`.
    Token(String),
    /// HTTP basic auth with a user name and password (or a token where the forge wants a real user).
    Basic {
        /// The user name, sent as is; not a secret.
        username: String,
        /// The password or token.
        password: String,
    },
    /// An ssh private key from a file. The server's host key must already be in the controller
    /// user's `~/.ssh/known_hosts`: libgit2 checks it and we never turn that check off.
    SshKey {
        /// The ssh login (usually `git`); when empty, the user in the URL, else `git`.
        username: String,
        /// Path to the private key (OpenSSH or PEM format); the public key is derived from it.
        private_key: PathBuf,
        /// The key's passphrase, if it has one.
        passphrase: Option<String>,
    },
}

impl Credentials {
    /// The strings that must never appear in a message (the scrubber removes them).
    pub(crate) fn secrets(&self) -> Vec<&str> {
        match self {
            Credentials::None => Vec::new(),
            Credentials::Token(token) => vec![token.as_str()],
            Credentials::Basic { password, .. } => vec![password.as_str()],
            Credentials::SshKey { passphrase, .. } => {
                passphrase.iter().map(String::as_str).collect()
            }
        }
    }

    /// A short name for messages, never including a secret.
    fn kind(&self) -> &'static str {
        match self {
            Credentials::None => "no credentials",
            Credentials::Token(_) => "a token",
            Credentials::Basic { .. } => "a user name and password",
            Credentials::SshKey { .. } => "an ssh key",
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Token(_) => f.debug_tuple("Token").field(&"***").finish(),
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"***")
                .finish(),
            Credentials::SshKey {
                username,
                private_key,
                passphrase,
            } => f
                .debug_struct("SshKey")
                .field("username", username)
                .field("private_key", private_key)
                .field("passphrase", &passphrase.as_ref().map(|_| "***"))
                .finish(),
        }
    }
}

/// What the credentials callback did during one operation, read afterwards to tell an
/// authentication failure from any other failure.
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    /// Credential types already handed to libgit2 in this operation.
    tried: Vec<u32>,
    /// Set when the remote came back for a type we had already given: it rejected it.
    pub(crate) rejected: bool,
    /// Set when the remote asked and we had nothing fitting to give.
    pub(crate) refused: bool,
}

impl Attempts {
    /// Records a use of `kind`; an error if it was used before, because libgit2 calls the callback
    /// again and again while the server keeps rejecting, and would loop forever.
    fn once(&mut self, kind: CredentialType) -> Result<(), git2::Error> {
        if self.tried.contains(&kind.bits()) {
            self.rejected = true;
            return Err(auth_error("the remote rejected the credentials"));
        }
        self.tried.push(kind.bits());
        Ok(())
    }
}

fn auth_error(message: &str) -> git2::Error {
    git2::Error::new(ErrorCode::Auth, ErrorClass::Callback, message)
}

/// Where the configured credentials may be sent: the server the source URL names (`None` when
/// that URL names no host for certain, and then nowhere), read before any connection so that a
/// redirect cannot change it.
pub(crate) type Pin<'a> = Option<&'a Remote>;

/// The answer to one call of libgit2's credentials callback: the configured credentials in the
/// form the remote allows, at most once per form, and only when [`may_offer`] allows it for
/// `url`, the URL libgit2 is authenticating to (after any redirect).
pub(crate) fn credential(
    credentials: &Credentials,
    attempts: &RefCell<Attempts>,
    pin: Pin<'_>,
    url: &str,
    username_from_url: Option<&str>,
    allowed: CredentialType,
) -> Result<Cred, git2::Error> {
    let mut attempts = attempts.borrow_mut();
    if !matches!(credentials, Credentials::None) {
        if let Err(why) = may_offer(credentials, pin, url) {
            attempts.refused = true;
            return Err(auth_error(&why));
        }
    }
    let url_user = username_from_url.filter(|u| !u.is_empty());
    let plain = CredentialType::USER_PASS_PLAINTEXT;
    match credentials {
        Credentials::None => {
            attempts.refused = true;
            Err(auth_error(
                "the remote asks for credentials and none are configured",
            ))
        }
        Credentials::Token(token) if allowed.contains(plain) => {
            attempts.once(plain)?;
            Cred::userpass_plaintext(url_user.unwrap_or("x-access-token"), token)
        }
        Credentials::Basic { username, password } if allowed.contains(plain) => {
            attempts.once(plain)?;
            Cred::userpass_plaintext(username, password)
        }
        Credentials::SshKey {
            username,
            private_key,
            passphrase,
        } if allowed.intersects(CredentialType::USERNAME | CredentialType::SSH_KEY) => {
            let user = match (username.as_str(), url_user) {
                ("", Some(from_url)) => from_url,
                ("", None) => "git",
                (configured, _) => configured,
            };
            if allowed.contains(CredentialType::USERNAME) {
                attempts.once(CredentialType::USERNAME)?;
                return Cred::username(user);
            }
            attempts.once(CredentialType::SSH_KEY)?;
            Cred::ssh_key(user, None, private_key, passphrase.as_deref())
        }
        other => {
            attempts.refused = true;
            Err(auth_error(&format!(
                "the remote wants {}, but {} is configured",
                describe(allowed),
                other.kind()
            )))
        }
    }
}

/// Whether `credentials` may be handed to `url`: a token or password only over https, an ssh
/// key only over ssh, and either only to the pinned server. The reason for a refusal never
/// names the host asked for, which after a redirect is the remote's text, not the user's.
fn may_offer(credentials: &Credentials, pin: Pin<'_>, url: &str) -> Result<(), String> {
    let Some(pin) = pin else {
        return Err(format!(
            "{} is configured, but the source URL names no host switchback can be sure of, so \
             it is sent nowhere",
            credentials.kind()
        ));
    };
    let Ok(asking) = Remote::parse(url) else {
        return Err(format!(
            "the remote asked for credentials at a URL whose host cannot be told for certain; \
             {} for {pin} were not sent",
            credentials.kind()
        ));
    };
    let wanted = match credentials {
        Credentials::SshKey { .. } => Transport::Ssh,
        _ => Transport::Https,
    };
    if asking.transport != wanted {
        return Err(match asking.transport {
            Transport::Http => format!(
                "the remote asks for credentials over plain http, and switchback never sends \
                 {} over it: use an https:// URL",
                credentials.kind()
            ),
            other => format!(
                "the remote asks for credentials over {}, and {} is only sent over {}",
                other.name(),
                credentials.kind(),
                wanted.name()
            ),
        });
    }
    if !asking.same_server(pin) {
        return Err(format!(
            "{} is for {pin} only, and the remote asking for it is another server (a \
             redirect?); nothing was sent",
            credentials.kind()
        ));
    }
    Ok(())
}

/// The credential forms libgit2 says the remote accepts, in words.
fn describe(allowed: CredentialType) -> String {
    let mut forms = Vec::new();
    if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
        forms.push("a user name and password or token (https)");
    }
    if allowed.intersects(
        CredentialType::SSH_KEY | CredentialType::SSH_MEMORY | CredentialType::SSH_CUSTOM,
    ) {
        forms.push("an ssh key");
    }
    if allowed.contains(CredentialType::USERNAME) {
        forms.push("an ssh user name");
    }
    if forms.is_empty() {
        forms.push("a kind of credentials switchback does not support");
    }
    forms.join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HTTPS: &str = "https://git.example/org/x.git";
    const SSH: &str = "git@git.example:org/x.git";

    fn pin() -> Remote {
        Remote::parse(HTTPS).expect("an https remote")
    }

    fn ssh_pin() -> Remote {
        Remote::parse(SSH).expect("an ssh remote")
    }

    #[test]
    fn debug_never_prints_secrets() {
        let all = [
            Credentials::Token("tok-secret".into()),
            Credentials::Basic {
                username: "alice".into(),
                password: "pw-secret".into(),
            },
            Credentials::SshKey {
                username: "git".into(),
                private_key: "/keys/id_ed25519".into(),
                passphrase: Some("pp-secret".into()),
            },
        ];
        for c in &all {
            let shown = format!("{c:?} {c:#?}");
            assert!(!shown.contains("secret"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
        assert!(format!("{:?}", all[1]).contains("alice"));
        assert_eq!(format!("{:?}", Credentials::None), "None");
    }

    #[test]
    fn token_is_given_once_then_rejected() {
        let attempts = RefCell::new(Attempts::default());
        let token = Credentials::Token("t".into());
        let plain = CredentialType::USER_PASS_PLAINTEXT;
        let first = credential(&token, &attempts, Some(&pin()), HTTPS, None, plain);
        assert!(first.is_ok_and(|c| c.credtype() == plain.bits()));
        let second = credential(&token, &attempts, Some(&pin()), HTTPS, None, plain);
        assert!(second.is_err_and(|e| e.code() == ErrorCode::Auth));
        assert!(attempts.borrow().rejected);
    }

    #[test]
    fn ssh_key_gives_username_then_key_then_stops() {
        let attempts = RefCell::new(Attempts::default());
        let key = Credentials::SshKey {
            username: String::new(),
            private_key: "/nonexistent/id_ed25519".into(),
            passphrase: None,
        };
        let user = credential(
            &key,
            &attempts,
            Some(&ssh_pin()),
            SSH,
            None,
            CredentialType::USERNAME,
        );
        assert!(user.is_ok_and(|c| c.credtype() == CredentialType::USERNAME.bits()));
        let ssh = CredentialType::SSH_KEY | CredentialType::SSH_MEMORY;
        let k = credential(&key, &attempts, Some(&ssh_pin()), SSH, Some("git"), ssh);
        assert!(k.is_ok_and(|c| c.credtype() == CredentialType::SSH_KEY.bits()));
        assert!(credential(&key, &attempts, Some(&ssh_pin()), SSH, Some("git"), ssh).is_err());
        assert!(attempts.borrow().rejected);
    }

    #[test]
    fn mismatched_or_missing_credentials_are_refused_clearly() {
        let attempts = RefCell::new(Attempts::default());
        let err = credential(
            &Credentials::Token("t".into()),
            &attempts,
            Some(&pin()),
            HTTPS,
            Some("git"),
            CredentialType::SSH_KEY,
        )
        .err()
        .map(|e| e.message().to_string());
        assert_eq!(
            err.as_deref(),
            Some("the remote wants an ssh key, but a token is configured")
        );
        let none = credential(
            &Credentials::None,
            &attempts,
            None,
            "http://h/x",
            None,
            CredentialType::USER_PASS_PLAINTEXT,
        );
        assert!(none.is_err_and(|e| e.message().contains("none are configured")));
        assert!(attempts.borrow().refused);
        assert!(!attempts.borrow().rejected);
    }

    /// The URL libgit2 asks at (after any redirect) decides, not the URL the source started with.
    #[test]
    fn credentials_go_only_over_https_or_ssh_to_the_pinned_server() {
        let token = Credentials::Token("t".into());
        let plain = CredentialType::USER_PASS_PLAINTEXT;
        let refused = |creds: &Credentials, pin: Pin<'_>, url: &str, allowed| {
            let attempts = RefCell::new(Attempts::default());
            let answer = credential(creds, &attempts, pin, url, None, allowed);
            let refused = attempts.borrow().refused;
            answer
                .err()
                .filter(|_| refused)
                .map(|e| e.message().to_string())
        };
        let ok = |creds: &Credentials, url: &str, allowed| {
            let attempts = RefCell::new(Attempts::default());
            let pinned = Remote::parse(url).expect("parse");
            credential(creds, &attempts, Some(&pinned), url, None, allowed).is_ok()
        };
        assert!(ok(&token, HTTPS, plain));
        assert!(ok(&token, "https://GIT.example:443/moved.git", plain));
        let http = refused(&token, Some(&pin()), "http://git.example/org/x.git", plain);
        assert!(
            http.as_deref().is_some_and(|m| m.contains("plain http")),
            "{http:?}"
        );
        for other in [
            "https://evil.example/org/x.git",
            "https://git.example:8443/org/x.git",
            "https://x@evil.example/",
        ] {
            let why = refused(&token, Some(&pin()), other, plain);
            assert!(
                why.as_deref()
                    .is_some_and(|m| m.contains("git.example:443 only")
                        && !m.contains("evil")
                        && !m.contains("8443")),
                "{other}: {why:?}"
            );
        }
        let odd = refused(&token, Some(&pin()), "https://a#@git.example/", plain);
        assert!(odd.is_some_and(|m| m.contains("cannot be told")));
        let nowhere = refused(&token, None, HTTPS, plain);
        assert!(nowhere.is_some_and(|m| m.contains("sent nowhere")));

        let key = Credentials::SshKey {
            username: String::new(),
            private_key: "/nonexistent/id".into(),
            passphrase: None,
        };
        assert!(ok(&key, SSH, CredentialType::USERNAME));
        let elsewhere = refused(
            &key,
            Some(&ssh_pin()),
            "git@evil.example:org/x.git",
            CredentialType::USERNAME,
        );
        assert!(
            elsewhere.is_some(),
            "an ssh key goes to the pinned host only"
        );
        let over_https = refused(&key, Some(&ssh_pin()), HTTPS, CredentialType::SSH_KEY);
        assert!(over_https.is_some_and(|m| m.contains("only sent over ssh")));
    }
}
