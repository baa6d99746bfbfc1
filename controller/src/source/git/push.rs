//! Pushing a prepared revert commit: one refspec, never forced, with the source's credentials.
//! A refusal (not a fast-forward, a protected branch, a ref locked by a concurrent push) is told
//! apart from an authentication failure and from an unreachable remote, because each asks a
//! person for something different.

use std::cell::RefCell;

use git2::{ErrorCode, PushOptions, RemoteCallbacks, RemoteRedirect, Repository};

use super::Inner;
use super::auth::Attempts;
use super::failure;
use super::revert::{Prepared, RevertError};

/// Pushes `prepared.commit` to `refs/heads/<prepared.branch>` of the source's remote. libgit2
/// checks the fast-forward against what the remote advertises when the push connects, so a
/// branch that moved after the fetch is refused, not overwritten.
pub(super) fn push(
    repo: &Repository,
    source: &Inner,
    prepared: &Prepared,
) -> Result<(), RevertError> {
    let attempts = RefCell::new(Attempts::default());
    let refused: RefCell<Option<String>> = RefCell::new(None);
    let mut callbacks = RemoteCallbacks::new();
    source.offer_credentials(&mut callbacks, &attempts);
    callbacks.push_update_reference(|refname, status| {
        if let Some(status) = status {
            *refused.borrow_mut() = Some(format!("{refname}: {status}"));
        }
        Ok(())
    });
    let mut options = PushOptions::new();
    options
        .remote_callbacks(callbacks)
        .follow_redirects(RemoteRedirect::None);
    let spec = format!("{}:refs/heads/{}", prepared.commit, prepared.branch);
    // Anonymous: the URL (which may hold a token) is never written into the cache's config.
    let result = repo
        .remote_anonymous(&source.raw_url)
        .and_then(|mut remote| remote.push(&[spec.as_str()], Some(&mut options)));
    drop(options);
    let url = source.redacted.clone();
    let branch = prepared.branch.clone();
    let attempts = attempts.borrow();
    match result {
        Ok(()) => match refused.into_inner() {
            None => Ok(()),
            Some(message) => Err(RevertError::Rejected {
                url,
                branch,
                message: source.scrubber.scrub(&message),
            }),
        },
        Err(e) => {
            let message = failure::describe(&e, &source.scrubber);
            if e.code() == ErrorCode::Auth || attempts.rejected || attempts.refused {
                Err(RevertError::Auth {
                    url,
                    branch,
                    message,
                })
            } else if matches!(
                e.code(),
                ErrorCode::NotFastForward | ErrorCode::Locked | ErrorCode::Modified
            ) {
                Err(RevertError::Rejected {
                    url,
                    branch,
                    message,
                })
            } else {
                Err(RevertError::Push {
                    url,
                    branch,
                    message,
                })
            }
        }
    }
}
