//! What a failed fetch or push says about the remote, in words that do not repeat the remote.
//!
//! libgit2 puts what an HTTP server answered into its messages (`unexpected http status code:
//! 500`, `invalid content-type: 'text/html; ...'`, the `Location` of a refused redirect). In the
//! operator those messages become Events and status that the author of a ProxyRollout reads, and
//! the author chooses the URL: echoing the answer would let anyone who may create a ProxyRollout
//! probe the controller's network (an internal service's status line, content type, the address
//! it redirects to) through it. So a failure that came from the remote's answer is reduced to one
//! of a fixed set of sentences; only a git server's own `ERR` line (the git protocol's way of
//! telling a client why) and failures of our own making are passed on, scrubbed.

use git2::ErrorClass;

use super::redact::Scrubber;

/// The remote answered HTTP, but not as a git repository (status, content type, redirect).
pub(crate) const NOT_GIT: &str = "the server did not answer as a git repository (an HTTP error \
    status, another content type or a redirect); check the URL and that the repository exists";
/// The answer was not the git protocol.
pub(crate) const NOT_PROTOCOL: &str = "the server's answer is not the git protocol";
/// The remote sent us elsewhere and libgit2 refused to follow.
pub(crate) const REDIRECTED: &str = "the server redirected to another host or scheme, which is \
    not followed; use the URL the repository lives at";
/// No name resolution.
pub(crate) const NO_RESOLVE: &str = "could not resolve the host name";
/// No connection.
pub(crate) const NO_CONNECT: &str =
    "could not connect to the server (refused, unreachable or timed out)";
/// Any other network failure.
pub(crate) const NETWORK: &str = "the connection to the server failed";
/// The server closed the connection before any answer (down, restarting, or a proxy in front
/// of it giving up): not a wrong URL, which is what [`NOT_GIT`] would send a person to check.
pub(crate) const HUNG_UP: &str =
    "the server closed the connection without answering (down or restarting?)";

/// The longest `ERR` line passed on from a git server.
const MAX_REMOTE_ERROR: usize = 200;

/// The message to show for `e`, a failure of a fetch or push against a remote.
pub(crate) fn describe(e: &git2::Error, scrubber: &Scrubber) -> String {
    let message = e.message();
    match e.class() {
        // Our own callbacks (credentials refused, ...) say exactly what we wrote.
        ErrorClass::Callback => scrubber.scrub(message),
        // libgit2's words when `recv` returned 0 before a response: carries nothing the
        // server sent.
        ErrorClass::Http if message == "unexpected EOF" => HUNG_UP.to_string(),
        ErrorClass::Http => NOT_GIT.to_string(),
        ErrorClass::Net | ErrorClass::Os => net(message, scrubber),
        // TLS and ssh failures are about certificates, keys and handshakes, which the user
        // needs to see and which do not carry what a server answered.
        _ => scrubber.scrub(message),
    }
}

fn net(message: &str, scrubber: &Scrubber) -> String {
    if let Some(line) = message.strip_prefix("remote error: ") {
        let line: String = line
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_REMOTE_ERROR)
            .collect();
        return format!("the git server said: {}", scrubber.scrub(&line));
    }
    let fixed = if message.starts_with("cannot redirect") {
        REDIRECTED
    } else if message.starts_with("failed to resolve address") {
        NO_RESOLVE
    } else if message.starts_with("failed to connect") || message.contains("timed out") {
        NO_CONNECT
    } else if message.contains("pkt-line")
        || message.contains("packet")
        || message.contains("hex digit")
        || message.contains("could not read refs")
        || message.contains("unexpected pack")
    {
        NOT_PROTOCOL
    } else {
        NETWORK
    };
    fixed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::git::Credentials;
    use git2::ErrorCode;

    fn shown(class: ErrorClass, code: ErrorCode, message: &str) -> String {
        let scrubber = Scrubber::new("https://h/x", &Credentials::Token("s3cret".into()));
        describe(&git2::Error::new(code, class, message), &scrubber)
    }

    #[test]
    fn what_a_server_answered_is_never_repeated() {
        for (class, message, want) in [
            (
                ErrorClass::Http,
                "unexpected http status code: 500",
                NOT_GIT,
            ),
            (
                ErrorClass::Http,
                "invalid content-type: 'text/html; x=SECRET'",
                NOT_GIT,
            ),
            (ErrorClass::Http, "redirect without location", NOT_GIT),
            (ErrorClass::Http, "unexpected EOF", HUNG_UP),
            (
                ErrorClass::Net,
                "cannot redirect from 'h' to 'internal.SECRET'",
                REDIRECTED,
            ),
            (
                ErrorClass::Net,
                "invalid hex digit in length: 'SECR'",
                NOT_PROTOCOL,
            ),
            (
                ErrorClass::Net,
                "could not read refs from remote repository",
                NOT_PROTOCOL,
            ),
            (
                ErrorClass::Net,
                "failed to connect to 10.0.0.SECRET: Connection refused",
                NO_CONNECT,
            ),
            (
                ErrorClass::Net,
                "failed to resolve address for SECRET: Name unknown",
                NO_RESOLVE,
            ),
            (ErrorClass::Net, "something new about SECRET", NETWORK),
        ] {
            let got = shown(class, ErrorCode::GenericError, message);
            assert_eq!(got, want, "{message}");
        }
    }

    #[test]
    fn a_git_servers_own_error_and_our_own_messages_pass_scrubbed() {
        assert_eq!(
            shown(
                ErrorClass::Net,
                ErrorCode::GenericError,
                "remote error: no s3cret repo\u{7}"
            ),
            "the git server said: no *** repo"
        );
        let long = format!("remote error: {}", "x".repeat(500));
        assert!(shown(ErrorClass::Net, ErrorCode::GenericError, &long).len() < 250);
        assert_eq!(
            shown(
                ErrorClass::Callback,
                ErrorCode::Auth,
                "the remote rejected the credentials"
            ),
            "the remote rejected the credentials"
        );
        assert_eq!(
            shown(
                ErrorClass::Ssl,
                ErrorCode::Certificate,
                "the SSL certificate is invalid"
            ),
            "the SSL certificate is invalid"
        );
    }
}
